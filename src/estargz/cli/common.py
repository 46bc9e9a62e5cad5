"""What the image and lazy commands share: the store, the registry client and their flags."""

from __future__ import annotations

import argparse

from estargz.reference import Reference
from estargz.registry import RegistryClient
from estargz.store import ImageStore

__all__ = ["add_registry_flags", "open_store", "registry_client"]


def open_store(args: argparse.Namespace) -> ImageStore:
    """``--root``, else ``$ESTARGZ_ROOT``, else the default location."""
    root = getattr(args, "root", None)
    return ImageStore(root or ImageStore.default_root())


def registry_client(args: argparse.Namespace, ref: Reference) -> RegistryClient:
    return RegistryClient.for_user(
        ref.registry, plain_http=bool(getattr(args, "plain_http", False)),
        skip_verify=bool(getattr(args, "skip_verify", False)),
        user=getattr(args, "user", None) or "",
    )


def add_registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true",
                   help="talk HTTP instead of HTTPS (automatic for 127.0.0.1 and localhost)")
    p.add_argument("--skip-verify", "-k", "--insecure-skip-verify", dest="skip_verify",
                   action="store_true", help="do not verify the registry's TLS certificate")
    p.add_argument("--user", "-u", metavar="USER[:PASSWORD]",
                   help="registry credentials (default: ~/.docker/config.json)")

