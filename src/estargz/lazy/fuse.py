"""The mfusepy adapter: FUSE operations mapped onto :class:`LayerFS`, and nothing else.

A missing path is ENOENT; any other failure is logged with the layer, file and reason and
becomes EIO, so a bad chunk or a vanished registry never turns into wrong bytes.

A layer never changes, so the kernel is told to keep whatever it learns: entries, attributes
and negative lookups for an hour, file pages across opens, symlink targets. A listing carries
every entry's attributes (readdirplus, on every page of it rather than the first only), so
walking a tree costs one request per page of each directory and none per entry; getattr fills
the kernel's stat buffer directly rather than through mfusepy's dictionaries.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import struct
import threading
from array import array
from collections.abc import Callable
from typing import Any, TypeVar

import mfusepy as fuse

from estargz.lazy.layerfs import LayerFS, Stat

__all__ = ["LayerOperations", "serve"]

log = logging.getLogger("estargz.lazy")
T = TypeVar("T")
_CAP_READDIRPLUS_AUTO = 1 << 14  # libfuse's FUSE_CAP_* bits (fuse_common.h)
_CAP_CACHE_SYMLINKS = 1 << 23
_FILL_DIR_PLUS = 2  # fuse_fill_dir_flags: the attributes given are the entry's
_READDIR_PLUS = 1  # fuse_readdir_flags: the kernel asked for attributes
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


class LayerOperations(fuse.Operations):  # type: ignore[misc]
    """Read-only operations; the kernel caches pages and attributes (the layer is immutable)."""

    def __init__(self, label: str, fs: LayerFS | None = None) -> None:
        self._fs = fs
        self.label = label
        self.active_reads = 0
        self.on_mounted: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self.getattrs = 0
        """Lookups and getattrs that reached this process (the kernel caches the answers)."""
        self.listing_pages = 0
        """readdir requests that reached this process (one per page of a listing)."""
        self.answered = 0
        """Attributes given out (lookups, getattrs, listed entries): their rate tells a walk
        of the tree, which background work makes way for."""
        self._handles = itertools.count(1)
        self._listings: dict[int, list[str]] = {}
        self._taking: dict[int, tuple[array[int], array[int]]] = {}
        self.given: dict[str, tuple[array[int], array[int]]] = {}
        """Directories whose every entry went to the kernel with its attributes, with the
        types and inode numbers given (12 bytes an entry): listed again, they go without
        attributes and without a lookup (the kernel keeps entries an hour; one it dropped is
        looked up)."""

    def attach(self, fs: LayerFS) -> None:
        """What to serve; before the kernel's INIT is answered, as no request comes earlier."""
        self._fs = fs

    @property
    def fs(self) -> LayerFS:
        if self._fs is None:
            raise RuntimeError(f"{self.label}: no layer attached")
        return self._fs

    def init_with_config(self, conn: Any, config: Any) -> None:
        """The kernel has set up the session: requests are answered once this returns.

        Every page of a listing comes with attributes (libfuse's default sends them with the
        first page only, unless lookups came in between), and symlink targets are cached."""
        if conn is not None:
            conn.want = (conn.want & ~_CAP_READDIRPLUS_AUTO) | (
                conn.capable & _CAP_CACHE_SYMLINKS)
        if self.on_mounted is not None:
            self.on_mounted()

    def stat(self, path: str) -> Stat:
        """For every lookup and getattr (the session fills the stat buffer from it)."""
        try:  # (what _call does, without its two extra calls: this one is the hot path)
            st = self.fs.getattr(path)
        except Exception as exc:
            log.error("%s: getattr %s failed: %s", self.label, path, exc)
            raise fuse.FuseOSError(errno.EIO) from exc
        if st is None:
            raise fuse.FuseOSError(errno.ENOENT)
        return st

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
        """mfusepy's form (it installs the callback because this exists); :class:`_Session`
        answers through :meth:`stat` instead."""
        st = self._call("getattr", path, lambda: self.fs.getattr(path))
        return st.as_dict()

    def opendir(self, path: str) -> int:
        """A handle for the listing, taken once: the kernel reads it a page at a time."""
        names = self._call("opendir", path, lambda: self.fs.readdir(path))
        fh = next(self._handles)
        self._listings[fh] = [".", "..", *names]
        return fh

    def listing(self, fh: int) -> list[str]:
        return self._listings[fh]

    def taking(self, fh: int) -> tuple[array[int], array[int]]:
        """Where the types and inode numbers given out through handle ``fh`` are kept."""
        return self._taking.setdefault(fh, (array("I"), array("Q")))

    def releasedir(self, path: str, fh: int) -> int:
        self._listings.pop(fh, None)
        self._taking.pop(fh, None)
        return 0

    def readdir(self, path: str, fh: int) -> list[str | tuple[str, dict[str, int], int]]:
        """mfusepy's form, as for :meth:`getattr`; :class:`_Session` reads :meth:`listing`."""
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


def _fill_fields(st: Any, s: Stat) -> None:
    ctypes.memset(ctypes.addressof(st), 0, ctypes.sizeof(fuse.c_stat))
    st.st_mode = s.st_mode
    st.st_ino = s.st_ino
    st.st_nlink = s.st_nlink
    st.st_uid = s.st_uid
    st.st_gid = s.st_gid
    st.st_size = s.st_size
    st.st_rdev = s.st_rdev
    st.st_blocks = s.st_blocks
    st.st_blksize = s.st_blksize
    st.st_mtimespec.tv_sec = st.st_atimespec.tv_sec = st.st_ctimespec.tv_sec = s.st_mtime


_X86_64_STAT = struct.Struct("=QQQIII4xQ9q24x")
"""struct stat of x86_64 Linux, for one pack_into instead of a dozen ctypes field writes."""


def _fill_packed(st: Any, s: Stat) -> None:
    t = s.st_mtime
    _X86_64_STAT.pack_into(st, 0, 0, s.st_ino, s.st_nlink, s.st_mode, s.st_uid, s.st_gid,
                           s.st_rdev, s.st_size, s.st_blksize, s.st_blocks, t, 0, t, 0, t, 0)


def _packs_stat() -> bool:
    """Whether mfusepy's struct stat is the x86_64 layout (then it can be packed at once)."""
    c = fuse.c_stat
    where = {name: getattr(c, name).offset for name, *_ in c._fields_}
    want = {"st_ino": 8, "st_nlink": 16, "st_mode": 24, "st_uid": 28, "st_gid": 32,
            "st_rdev": 40, "st_size": 48, "st_blksize": 56, "st_blocks": 64,
            "st_atimespec": 72, "st_mtimespec": 88, "st_ctimespec": 104}
    return (ctypes.sizeof(c) == _X86_64_STAT.size and ctypes.sizeof(fuse.c_timespec) == 16
            and all(where.get(name) == offset for name, offset in want.items()))


_fill = _fill_packed if _packs_stat() else _fill_fields


class _Session(fuse.FUSE):  # type: ignore[misc]
    """mfusepy's session with getattr and readdir answered here, from :class:`Stat`s.

    readdir works with offsets (an entry's is its index + 1 in the listing taken at opendir),
    which is what makes libfuse send the attributes with the entries (it drops them for a
    listing given whole) and lets each page start where the last one stopped.
    """

    def fgetattr(self, path: bytes | None, buf: Any, fip: Any) -> int:
        self.operations.getattrs += 1
        self.operations.answered += 1
        s = self.operations.stat("/" if path is None else path.decode(_ENCODING, _ERRORS))
        _fill(buf.contents, s)
        return 0

    def readdir_fuse_3(self, path: bytes | None, buf: Any, filler: Any, offset: int, fip: Any,
                       flags: int) -> int:
        ops = self.operations
        ops.listing_pages += 1
        fh = fip.contents.fh
        names = ops.listing(fh)
        where = "/" if path is None else path.decode(_ENCODING, _ERRORS)
        prefix = "" if where == "/" else where
        known = ops.given.get(where)
        if known is not None and len(known[0]) != len(names) - 2:
            known = None
        plus = _FILL_DIR_PLUS if flags & _READDIR_PLUS and known is None else 0
        modes, inodes = ops.taking(fh) if plus else (None, None)
        st = fuse.c_stat()
        stat = ops.stat
        ops.answered += len(names) - offset  # (at most: the page may hold fewer)
        for index in range(offset, len(names)):
            name = names[index]
            if index < 2:  # "." and "..": libfuse fills them in
                full = filler(buf, name.encode(), None, index + 1, 0)
            elif known is not None:  # without attributes: the type and inode number only
                st.st_mode, st.st_ino = known[0][index - 2], known[1][index - 2]
                full = filler(buf, name.encode(_ENCODING, _ERRORS), st, index + 1, 0)
            else:
                s = stat(f"{prefix}/{name}")
                _fill(st, s)
                full = filler(buf, name.encode(_ENCODING, _ERRORS), st, index + 1, plus)
                if not full and modes is not None and inodes is not None \
                        and len(modes) == index - 2:  # (in order: pages may be asked again)
                    modes.append(s.st_mode)
                    inodes.append(s.st_ino)
            if full:
                break  # the kernel's page is full: it asks again from this offset
        else:
            if modes is not None and inodes is not None and len(modes) == len(names) - 2:
                ops.given[where] = (modes, inodes)
        return 0


def serve(ops: LayerOperations, mountpoint: str, fsname: str) -> None:
    """Mount and serve until unmounted or signalled (blocks; call from a main thread)."""
    _Session(
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
