"""The mfusepy adapter: FUSE operations mapped onto :class:`LayerFS`, and nothing else.

A missing path is ENOENT; any other failure is logged with the layer, file and reason and
becomes EIO, so a bad chunk or a vanished registry never turns into wrong bytes.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import mfusepy as fuse

from estargz.lazy.layerfs import LayerFS

__all__ = ["LayerOperations", "serve"]

log = logging.getLogger("estargz.lazy")
T = TypeVar("T")


class LayerOperations(fuse.Operations):  # type: ignore[misc]
    """Read-only operations; the kernel caches pages and attributes (the layer is immutable)."""

    def __init__(self, label: str, fs: LayerFS | None = None) -> None:
        self._fs = fs
        self.label = label
        self.active_reads = 0
        self.on_mounted: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def attach(self, fs: LayerFS) -> None:
        """What to serve; before the kernel's INIT is answered, as no request comes earlier."""
        self._fs = fs

    @property
    def fs(self) -> LayerFS:
        if self._fs is None:
            raise RuntimeError(f"{self.label}: no layer attached")
        return self._fs

    def init(self, path: str) -> None:
        """The kernel has set up the session: requests are answered once this returns."""
        if self.on_mounted is not None:
            self.on_mounted()

    def _call(self, what: str, path: str, fn: Callable[[], T | None]) -> T:
        try:
            result = fn()
        except fuse.FuseOSError:
            raise
        except Exception as exc:
            log.error("%s: %s %s failed: %s", self.label, what, path, exc)
            raise fuse.FuseOSError(errno.EIO) from exc
        if result is None:
            raise fuse.FuseOSError(errno.ENOENT)
        return result

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        st = self._call("getattr", path, lambda: self.fs.getattr(path))
        return st.as_dict()

    def readdir(self, path: str, fh: int) -> list[str | tuple[str, dict[str, int], int]]:
        entries = self._call("readdir", path, lambda: self.fs.readdir_typed(path))
        typed = [(n, {"st_mode": mode, "st_ino": ino}, 0) for n, mode, ino in entries]
        return [".", "..", *typed]

    def readlink(self, path: str) -> str:
        return self._call("readlink", path, lambda: self.fs.readlink(path))

    def listxattr(self, path: str) -> list[str]:
        return self._call("listxattr", path, lambda: self.fs.listxattr(path))

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        self._call("getxattr", path, lambda: self.fs.getattr(path))  # ENOENT first
        data = self.fs.getxattr(path, name)
        if data is None:
            raise fuse.FuseOSError(errno.ENODATA)
        return data

    def open(self, path: str, flags: int) -> int:
        self._call("open", path, lambda: self.fs.lookup(path))
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            self.active_reads += 1
        try:
            return self._call("read", f"{path} at {offset}+{size}",
                              lambda: self.fs.read(path, size, offset))
        finally:
            with self._lock:
                self.active_reads -= 1

    def statfs(self, path: str) -> dict[str, Any]:
        return self.fs.statfs()


def serve(ops: LayerOperations, mountpoint: str, fsname: str) -> None:
    """Mount and serve until unmounted or signalled (blocks; call from a main thread)."""
    fuse.FUSE(
        ops,
        mountpoint,
        foreground=True,
        ro=True,
        allow_other=True,
        default_permissions=True,
        use_ino=True,  # our inode numbers: hardlinks must share one
        kernel_cache=True,
        attr_timeout=3600.0,
        entry_timeout=3600.0,
        negative_timeout=3600.0,
        fsname=fsname,
        subtype="estargz",
    )
