"""Build small tars in memory from a declarative list of members.

Conformance cases are easier to read as data than as ``tarfile`` calls, and one list can be
rendered in every header format and with every name prefix a real layer may use::

    tar_of(dir_("a/"), file_("a/b.txt", b"hi", mode=0o4755), symlink("l", "a/b.txt"),
           format=tarfile.GNU_FORMAT, prefix="./")
"""

from __future__ import annotations

import gzip
import io
import random
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_MTIME",
    "Member",
    "block",
    "char",
    "dir_",
    "fifo",
    "file_",
    "gzip_bytes",
    "hardlink",
    "payload",
    "symlink",
    "tar_of",
]

DEFAULT_MTIME = 1_600_000_000
"""A fixed, non-zero time: zero would be omitted from the TOC and hide modtime bugs."""

_TYPES = {
    "dir": tarfile.DIRTYPE,
    "reg": tarfile.REGTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


@dataclass(frozen=True, slots=True)
class Member:
    """One tar member to write; ``name`` (and a hardlink's target) get the tar's prefix."""

    kind: str
    name: str
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    mtime: int = DEFAULT_MTIME
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    pax: Mapping[str, str] = field(default_factory=dict)


def dir_(name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0,
         mtime: int = DEFAULT_MTIME, xattrs: Mapping[str, bytes] | None = None) -> Member:
    return Member("dir", name, mode=mode, uid=uid, gid=gid, mtime=mtime,
                  xattrs=dict(xattrs or {}))


def file_(name: str, data: bytes = b"", *, mode: int = 0o644, uid: int = 0, gid: int = 0,
          uname: str = "", gname: str = "", mtime: int = DEFAULT_MTIME,
          xattrs: Mapping[str, bytes] | None = None) -> Member:
    return Member("reg", name, data, mode=mode, uid=uid, gid=gid, uname=uname, gname=gname,
                  mtime=mtime, xattrs=dict(xattrs or {}))


def symlink(name: str, target: str, *, mtime: int = DEFAULT_MTIME) -> Member:
    """A symlink; ``target`` is a filesystem path and is written as given (no prefix)."""
    return Member("symlink", name, mode=0o777, linkname=target, mtime=mtime)


def hardlink(name: str, target: str, *, mtime: int = DEFAULT_MTIME) -> Member:
    """A hardlink; ``target`` is a member name, so it gets the same prefix as names."""
    return Member("hardlink", name, linkname=target, mtime=mtime)


def char(name: str, major: int, minor: int, *, mode: int = 0o666) -> Member:
    return Member("char", name, mode=mode, devmajor=major, devminor=minor)


def block(name: str, major: int, minor: int, *, mode: int = 0o660) -> Member:
    return Member("block", name, mode=mode, devmajor=major, devminor=minor)


def fifo(name: str, *, mode: int = 0o644) -> Member:
    return Member("fifo", name, mode=mode)


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes, so chunk boundaries cannot hide in runs."""
    return random.Random(seed).randbytes(size)


def _tarinfo(m: Member, prefix: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(prefix + m.name)
    info.type = _TYPES[m.kind]
    info.mode = m.mode
    info.uid, info.gid = m.uid, m.gid
    info.uname, info.gname = m.uname, m.gname
    info.mtime = m.mtime
    if m.kind == "reg":
        info.size = len(m.data)
    if m.kind == "symlink":
        info.linkname = m.linkname
    elif m.kind == "hardlink":
        info.linkname = prefix + m.linkname
    info.devmajor, info.devminor = m.devmajor, m.devminor
    headers = dict(m.pax)
    for key, value in m.xattrs.items():
        headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    info.pax_headers = headers
    return info


def tar_of(*members: Member, format: int = tarfile.PAX_FORMAT, prefix: str = "") -> bytes:
    """The bytes of an uncompressed tar holding ``members`` in order (duplicates allowed).

    ``prefix`` ("", "./" or "/") is put in front of every name, as different tools do.
    Formats that cannot carry a member (xattrs outside PAX, long link names in USTAR) raise.
    """
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tf:
        for m in members:
            if m.xattrs and format != tarfile.PAX_FORMAT:
                raise ValueError(f"{m.name!r}: xattrs need the PAX format")
            info = _tarinfo(m, prefix)
            tf.addfile(info, io.BytesIO(m.data) if m.kind == "reg" else None)
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """gzip ``data`` reproducibly (no timestamp), as a ``tar.gz`` layer would be."""
    return gzip.compress(data, compresslevel=6, mtime=0)
