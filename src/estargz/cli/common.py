"""What the image and lazy commands share: the store, the registry client and their flags."""

from __future__ import annotations

import argparse

from estargz.store import ImageStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from estargz.reference import Reference
    from estargz.registry import RegistryClient

__all__ = ["open_store", "registry_client"]


def open_store(args: argparse.Namespace) -> ImageStore:
    """``--root``, else ``$ESTARGZ_ROOT``, else the default location."""
    root = getattr(args, "root", None)
    return ImageStore(root or ImageStore.default_root())


def registry_client(args: argparse.Namespace, ref: Reference) -> RegistryClient:
    """The client ``--plain-http``, ``--skip-verify`` and ``--user`` ask for (the HTTP stack is
    imported here, not by the store commands)."""
    from estargz.registry import RegistryClient

    return RegistryClient.for_user(
        ref.registry, plain_http=bool(getattr(args, "plain_http", False)),
        skip_verify=bool(getattr(args, "skip_verify", False)),
        user=getattr(args, "user", None) or "",
    )
