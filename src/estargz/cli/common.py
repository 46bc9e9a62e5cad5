"""What the image and lazy commands share: the store, the registry client and their flags."""

from __future__ import annotations

import argparse
import sys

from estargz.store import ImageStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from estargz.reference import Reference
    from estargz.registry import RegistryClient

__all__ = ["open_store", "registry_client", "tls_files"]


def open_store(args: argparse.Namespace) -> ImageStore:
    """``--root``, else ``$ESTARGZ_ROOT``, else the default location."""
    root = getattr(args, "root", None)
    return ImageStore(root or ImageStore.default_root())


def registry_client(args: argparse.Namespace, ref: Reference) -> RegistryClient:
    """The client the registry flags ask for (``--plain-http``, ``--skip-verify``, ``--user``,
    ``--refresh``, the TLS files, ``--http-dump``); the HTTP stack is imported here, not by
    the store commands."""
    from estargz.registry import RegistryClient

    return RegistryClient.for_user(
        ref.registry, plain_http=bool(getattr(args, "plain_http", False)),
        skip_verify=bool(getattr(args, "skip_verify", False)),
        user=getattr(args, "user", None) or "", refresh=getattr(args, "refresh", None) or "",
        tls_files=tls_files(args),
        dump=(lambda text: print(text, file=sys.stderr)) if getattr(args, "http_dump", False)
        else None,
    )


def tls_files(args: argparse.Namespace) -> tuple[str, str, str]:
    """``--tlscacert``, ``--tlscert``, ``--tlskey`` ("" where not given)."""
    return tuple(getattr(args, name, None) or "" for name in  # type: ignore[return-value]
                 ("tlscacert", "tlscert", "tlskey"))
