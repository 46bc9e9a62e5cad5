"""One layer as a filesystem: attributes, listings, links, xattrs and reads over a BlobReader.

OCI whiteouts are turned into what overlayfs understands, so a layer mount can sit directly in
an overlay's ``lowerdir``: ``.wh.NAME`` becomes a character device 0/0 called ``NAME``, and a
directory holding ``.wh..wh..opq`` gets the ``trusted.overlay.opaque`` xattr. Nothing here
knows about FUSE: the adapter in :mod:`estargz.lazy.fuse` maps ``None`` to ENOENT.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from estargz.errors import FormatError, VerificationError
from estargz.format import BlobReader, FileInfo
from estargz.format.types import LANDMARK_NAMES

__all__ = ["OPAQUE_XATTR", "LayerFS", "Stat"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_TYPE_BITS = {
    "dir": stat.S_IFDIR,
    "reg": stat.S_IFREG,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}
BLOCK_SIZE = 256 << 10
"""Reported as st_blksize: large reads mean fewer round trips through FUSE."""


class Stat(msgspec.Struct, frozen=True, gc=False):
    """What ``getattr`` returns, in ``os.stat_result`` field names (a ``msgspec`` struct: one
    is made for every lookup and every listed entry, and these are built in C)."""

    st_mode: int
    st_ino: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_rdev: int
    st_mtime: int
    st_blocks: int
    st_blksize: int = BLOCK_SIZE

    def as_dict(self) -> dict[str, int]:
        out = {name: getattr(self, name) for name in self.__struct_fields__}
        out["st_atime"] = out["st_ctime"] = self.st_mtime
        return out


def _mtime(modtime: str) -> int:
    if not modtime:
        return 0
    try:
        return int(datetime.fromisoformat(modtime.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


class LayerFS:
    """Read-only view of one layer, addressed by absolute paths (``/etc/passwd``).

    ``on_bad_data`` is called when a read finds bytes that do not match the TOC, so the source
    can drop what it buffered and the next read fetches them again. In the ``bottom`` layer
    whiteouts have nothing to hide and are left out altogether: a one-layer image is mounted
    without an overlay, which would otherwise show them as character devices.
    """

    def __init__(self, reader: BlobReader,
                 on_bad_data: Callable[[], None] | None = None, *, bottom: bool = False) -> None:
        self.reader = reader
        self.on_bad_data = on_bad_data
        self.whiteouts: dict[str, set[str]] = {}
        self.opaque: set[str] = set()
        names = reader.names()
        links = set(reader.hardlinks())
        special = links.union(name for name in names if WHITEOUT_PREFIX in name)
        if special:  # most layers have neither: their names are numbered as they come
            names = self._sort_out(names, special, links, bottom)
        # numbered once, here: FUSE calls arrive on many threads, and two files that got the
        # same number would look like hardlinks to tar, cp -a and du
        self._inodes = dict(zip(dict.fromkeys(["", *names]), itertools.count(1)))
        self._statfs: dict[str, Any] | None = None
        self._mtimes: dict[str, int] = {}

    def _sort_out(self, names: list[str], special: set[str], links: set[str],
                  bottom: bool) -> list[str]:
        """The names that get an inode: whiteout markers give way to the names they hide (or
        to nothing in the bottom layer), opaque markers mark their directory, hardlinks share
        their target's number."""
        kept = []
        for name in names:
            if name not in special:
                kept.append(name)
                continue
            parent, _, base = name.rpartition("/")
            if base.startswith(WHITEOUT_PREFIX) and bottom:
                continue
            if base == OPAQUE_MARKER:
                self.opaque.add(parent)
            elif base.startswith(WHITEOUT_PREFIX):
                self.whiteouts.setdefault(parent, set()).add(base[len(WHITEOUT_PREFIX):])
                kept.append(f"{parent}/{base[len(WHITEOUT_PREFIX):]}".lstrip("/"))
            elif name not in links:
                kept.append(name)
        return kept

    @staticmethod
    def _name(path: str) -> str:
        return path.strip("/")

    def _ino(self, info: FileInfo) -> int:
        return self._inodes[info.hardlink_to or info.name]

    def _whiteout(self, name: str) -> bool:
        parent, _, base = name.rpartition("/")
        return base in self.whiteouts.get(parent, ())

    def lookup(self, path: str) -> FileInfo | None:
        name = self._name(path)
        if self._hidden(name):
            return None
        return self.reader.lookup(name)

    @staticmethod
    def _hidden(name: str) -> bool:
        """Whiteout markers and landmarks are not part of the tree."""
        return name[name.rfind("/") + 1:].startswith(WHITEOUT_PREFIX) or name in LANDMARK_NAMES

    def getattr(self, path: str) -> Stat | None:
        """Straight from the TOC entry: the kernel asks this for every lookup."""
        name = self._name(path)
        found = None if self._hidden(name) else self.reader.entry(name)
        if found is None:
            if self._whiteout(name):
                return Stat(stat.S_IFCHR, self._inodes[name], 1, 0, 0, 0, os.makedev(0, 0), 0, 0)
            return None
        e, nlink, target = found
        kind = e.type
        if kind == "reg":
            size = e.size
        elif kind == "dir":
            size = 4096
        elif kind == "symlink":
            size = len(e.link_name.encode("utf-8", "surrogateescape"))
        else:
            size = 0
        mtime = self._mtimes.get(e.modtime)
        if mtime is None:  # a few distinct stamps per layer: parsed once each
            mtime = self._mtimes[e.modtime] = _mtime(e.modtime)
        return Stat(
            _TYPE_BITS.get(kind, stat.S_IFREG) | (e.mode & 0o7777),
            self._inodes[target or name],
            max(nlink, 1),
            e.uid,
            e.gid,
            size,
            os.makedev(e.dev_major, e.dev_minor) if e.dev_major or e.dev_minor else 0,
            mtime,
            (size + 511) // 512,
        )

    def readdir(self, path: str) -> list[str] | None:
        name = self._name(path)
        children = self.reader.children(name)
        if children is None:
            return None
        names = sorted(n for n in children if not n.startswith(WHITEOUT_PREFIX))
        if not name:
            names = [n for n in names if n not in LANDMARK_NAMES]
        hidden = self.whiteouts.get(name)
        if hidden:
            names += sorted(hidden - set(names))
        return names

    def readdir_typed(self, path: str) -> list[tuple[str, int, int]] | None:
        """``(name, st_mode, st_ino)`` per entry: overlayfs needs the types to see whiteouts."""
        names = self.readdir(path)
        if names is None:
            return None
        prefix = self._name(path)
        out = []
        for n in names:
            st = self.getattr(f"{prefix}/{n}" if prefix else n)
            if st is not None:
                out.append((n, st.st_mode, st.st_ino))
        return out

    def readlink(self, path: str) -> str | None:
        info = self.lookup(path)
        return info.link_name if info is not None and info.type == "symlink" else None

    def listxattr(self, path: str) -> list[str] | None:
        name = self._name(path)
        info = self.lookup(name)
        if info is None:
            return [] if self._whiteout(name) else None
        keys = list(info.xattrs)
        if info.type == "dir" and name in self.opaque:
            keys.append(OPAQUE_XATTR)
        return keys

    def getxattr(self, path: str, key: str) -> bytes | None:
        name = self._name(path)
        info = self.lookup(name)
        if info is None:
            return None
        if key == OPAQUE_XATTR and info.type == "dir" and name in self.opaque:
            return b"y"
        return info.xattrs.get(key)

    def read(self, path: str, size: int, offset: int) -> bytes:
        try:
            return self.reader.read(self._name(path), offset, size)
        except (FormatError, VerificationError):
            if self.on_bad_data is not None:
                self.on_bad_data()
            raise

    def statfs(self) -> dict[str, Any]:
        if self._statfs is None:  # the layer never changes: count once
            # from the raw entries: a walk makes an object per path, seconds for a million
            total = sum(e.size for e in self.reader.entries if e.type == "reg")
            blocks = (total + BLOCK_SIZE - 1) // BLOCK_SIZE
            self._statfs = {"f_bsize": BLOCK_SIZE, "f_frsize": BLOCK_SIZE, "f_blocks": blocks,
                            "f_bfree": 0, "f_bavail": 0, "f_files": len(self._inodes),
                            "f_ffree": 0, "f_namemax": 255}
        return self._statfs
