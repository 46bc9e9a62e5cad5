"""Where the store lives by default: kept free of imports so the thin CLI client can ask too."""

from __future__ import annotations

import os

__all__ = ["default_store_root", "service_socket"]


def default_store_root() -> str:
    """``$ESTARGZ_ROOT``, else ``/var/lib/estargz`` for root, else the XDG data dir."""
    env = os.environ.get("ESTARGZ_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/estargz"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "estargz")


def service_socket(store_root: str) -> str:
    """The unix socket of the store's resident service (``estargz service start``)."""
    return os.path.join(store_root, "state", "service.sock")
