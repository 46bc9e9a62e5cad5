"""Check a blob (through a :class:`BlobReader`) or an extracted tree against its input tar.

The expectation is derived from the input tar alone, read with Python's ``tarfile`` and not
with the code under test, so the two can disagree. Rules applied to the input, as the format
asks: a name seen twice keeps its last member; names are compared cleaned (no leading ``/`` or
``./``); landmarks and ``stargz.index.json`` found in the input are not compared, because a
normal build writes its own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import stat
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime

from estargz.format import BlobReader, FileInfo

__all__ = [
    "LANDMARKS",
    "Expected",
    "assert_lossless",
    "assert_matches_tar",
    "assert_tree_matches",
    "clean",
    "expected_entries",
    "sha256",
    "uncompressed",
]

LANDMARKS = frozenset({".prefetch.landmark", ".no.prefetch.landmark"})
_TOC_NAME = "stargz.index.json"
_LANDMARK_CONTENT = b"\x0f"
_KINDS = {
    tarfile.REGTYPE: "reg",
    tarfile.AREGTYPE: "reg",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
_S_IFMT = {
    "reg": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


@dataclass(frozen=True, slots=True)
class Expected:
    """One member of the input tar, as the blob must reproduce it."""

    name: str
    kind: str
    info: tarfile.TarInfo
    data: bytes = b""
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @property
    def mode(self) -> int:
        return self.info.mode


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def clean(name: str) -> str:
    """A tar name without leading ``/``, ``./``, trailing ``/`` or empty components."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def uncompressed(tar_bytes: bytes) -> bytes:
    """The tar itself, whether given plain or gzip-compressed."""
    return gzip.decompress(tar_bytes) if tar_bytes[:2] == b"\x1f\x8b" else tar_bytes


def _xattrs(info: tarfile.TarInfo) -> dict[str, bytes]:
    prefix = "SCHILY.xattr."
    return {
        k[len(prefix):]: v.encode("utf-8", "surrogateescape")
        for k, v in info.pax_headers.items()
        if k.startswith(prefix)
    }


def expected_entries(tar_bytes: bytes) -> dict[str, Expected]:
    """Clean name -> last member of that name, in the order of those last members."""
    out: dict[str, Expected] = {}
    with tarfile.open(fileobj=io.BytesIO(uncompressed(tar_bytes)), mode="r:") as tf:
        for info in tf:
            name = clean(info.name)
            if name in LANDMARKS or name == _TOC_NAME:
                continue
            kind = _KINDS.get(info.type)
            if kind is None:
                raise AssertionError(f"{info.name!r}: unsupported member type {info.type!r}")
            data = b""
            if kind == "reg":
                f = tf.extractfile(info)
                assert f is not None
                data = f.read()
            out.pop(name, None)
            out[name] = Expected(name, kind, info, data, _xattrs(info))
    return out


def _resolve(want: dict[str, Expected], e: Expected) -> Expected:
    """The member whose content a hardlink shares (following hardlink chains)."""
    seen = 0
    while e.kind == "hardlink":
        target = want.get(clean(e.info.linkname))
        if target is None:
            raise AssertionError(f"{e.name!r}: hardlink target {e.info.linkname!r} not in tar")
        e = target
        seen += 1
        if seen > 40:
            raise AssertionError(f"{e.name!r}: hardlink loop")
    return e


def _modtime(mtime: float) -> str:
    seconds = math.floor(mtime + 0.5)  # whole seconds, half up, as the TOC writes them
    if seconds == 0:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ancestors(name: str) -> set[str]:
    parts = name.split("/")
    return {"/".join(parts[:i]) for i in range(len(parts))}


def _eq(what: str, got: object, want: object) -> None:
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def _check_metadata(info: FileInfo, e: Expected, target: Expected) -> None:
    what = f"{e.name!r}"
    _eq(f"{what} type", info.type, target.kind)
    _eq(f"{what} hardlink_to", info.hardlink_to,
        target.name if e.kind == "hardlink" else None)
    _eq(f"{what} mode", info.mode, target.mode)
    _eq(f"{what} uid", info.uid, target.info.uid)
    _eq(f"{what} gid", info.gid, target.info.gid)
    _eq(f"{what} modtime", info.modtime, _modtime(target.info.mtime))
    _eq(f"{what} xattrs", info.xattrs, target.xattrs)
    if target.kind == "symlink":
        _eq(f"{what} link target", info.link_name, target.info.linkname)
    if target.kind in ("char", "block"):
        _eq(f"{what} device", (info.dev_major, info.dev_minor),
            (target.info.devmajor, target.info.devminor))
    if target.kind == "reg":
        _eq(f"{what} size", info.size, len(target.data))
        _eq(f"{what} digest", info.digest, sha256(target.data))


def _check_content(reader: BlobReader, name: str, data: bytes, chunk_size: int | None) -> None:
    """Whole reads, reads across every chunk boundary, odd offsets and the file object."""
    n = len(data)
    _eq(f"{name!r} content", reader.read(name), data)
    _eq(f"{name!r} read(1, size)", reader.read(name, 1, n), data[1:])
    _eq(f"{name!r} read at end", reader.read(name, n, 5), b"")
    if n:
        _eq(f"{name!r} read last byte", reader.read(name, n - 1, 10), data[n - 1:])
    chunks = reader.chunks(name)
    _eq(f"{name!r} chunks cover the file", sum(c.size for c in chunks), n)
    boundaries = [c.chunk_offset for c in chunks[1:]]
    if chunk_size is not None:
        for c in chunks[:-1]:
            _eq(f"{name!r} chunk at {c.chunk_offset} size", c.size, chunk_size)
        if chunks:
            _eq(f"{name!r} last chunk size", 0 < chunks[-1].size <= chunk_size, True)
        boundaries += list(range(chunk_size, n, chunk_size))
    for b in boundaries:
        lo = max(0, b - 3)
        _eq(f"{name!r} read({lo}, 7)", reader.read(name, lo, 7), data[lo:lo + 7])
    with reader.open(name) as f:
        f.seek(n // 2)
        _eq(f"{name!r} open().read() from {n // 2}", f.read(), data[n // 2:])


def assert_matches_tar(reader: BlobReader, tar_bytes: bytes, *,
                       chunk_size: int | None = None) -> None:
    """The reader shows exactly the input tar's members, with their metadata and content.

    ``chunk_size``, when given, is the build's chunk size: every chunk but the last of a file
    must have exactly that size, and reads across each multiple of it are checked too.
    """
    want = expected_entries(tar_bytes)
    nlinks: dict[str, int] = {}
    for e in want.values():
        target = _resolve(want, e)
        nlinks[target.name] = nlinks.get(target.name, 1) + (e.kind == "hardlink")
    for name, e in want.items():
        info = reader.lookup(name)
        if info is None:
            raise AssertionError(f"{name!r} is in the tar but not in the blob")
        target = _resolve(want, e)
        _check_metadata(info, e, target)
        if target.kind == "reg":
            _eq(f"{name!r} nlink", info.nlink, nlinks[target.name])
            _check_content(reader, name, target.data, chunk_size)
        if name:
            parent, _, base = name.rpartition("/")
            if base not in reader.listdir(parent):
                raise AssertionError(f"{name!r} missing from listdir({parent!r})")

    implied = set().union(*(_ancestors(n) for n in want)) if want else {""}
    for info in reader.walk():
        if info.name in want:
            continue
        if info.name in LANDMARKS:
            _eq(f"{info.name!r} content", reader.read(info.name), _LANDMARK_CONTENT)
        elif info.name in implied:
            _eq(f"implicit parent {info.name!r} type", info.type, "dir")
        else:
            raise AssertionError(f"{info.name!r} is in the blob but not in the tar")

    digests = reader.verify()
    expect_digests = {n: sha256(e.data) for n, e in want.items() if e.kind == "reg"}
    for landmark in LANDMARKS & digests.keys():
        _eq(f"{landmark!r} digest", digests.pop(landmark), sha256(_LANDMARK_CONTENT))
    _eq("verify() digests", digests, expect_digests)


def _path(root: str, name: str) -> str:
    return os.path.join(root, name) if name else root


def assert_tree_matches(root: str | os.PathLike[str], tar_bytes: bytes, *,
                        owners: bool | None = None) -> None:
    """An extracted tree holds the input tar's members: types, modes, links, content, times.

    Owners are compared when ``owners`` is true (default: when running as root); xattrs are
    compared always, so the tree must be on a filesystem that keeps ``user.*`` xattrs.
    """
    top = os.fspath(root)
    if owners is None:
        owners = os.geteuid() == 0
    want = expected_entries(tar_bytes)
    for name, e in want.items():
        path = _path(top, name)
        target = _resolve(want, e)
        st = os.lstat(path)
        what = f"extracted {name!r}"
        _eq(f"{what} file type", stat.S_IFMT(st.st_mode), _S_IFMT[target.kind])
        if e.kind == "hardlink":
            _eq(f"{what} inode (hardlink to {target.name!r})", st.st_ino,
                os.lstat(_path(top, target.name)).st_ino)
        if target.kind != "symlink":
            _eq(f"{what} mode", stat.S_IMODE(st.st_mode), target.mode & 0o7777)
            for key, value in target.xattrs.items():
                _eq(f"{what} xattr {key!r}", os.getxattr(path, key, follow_symlinks=False),
                    value)
            extra = {k for k in os.listxattr(path, follow_symlinks=False)
                     if k.startswith("user.")} - target.xattrs.keys()
            _eq(f"{what} unexpected xattrs", extra, set())
        if owners:
            _eq(f"{what} owner", (st.st_uid, st.st_gid), (target.info.uid, target.info.gid))
        _eq(f"{what} mtime", int(st.st_mtime), math.floor(target.info.mtime + 0.5))
        if target.kind == "reg":
            with open(path, "rb") as f:
                _eq(f"{what} content", f.read(), target.data)
        elif target.kind == "symlink":
            _eq(f"{what} link target", os.readlink(path), target.info.linkname)
        elif target.kind in ("char", "block"):
            _eq(f"{what} device", (os.major(st.st_rdev), os.minor(st.st_rdev)),
                (target.info.devmajor, target.info.devminor))

    implied = set().union(*(_ancestors(n) for n in want)) if want else set()
    for dirpath, dirnames, filenames in os.walk(top):
        for base in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, base), top)
            if rel not in want and rel not in implied and rel not in LANDMARKS:
                raise AssertionError(f"extracted {rel!r} is not in the tar")


def assert_lossless(blob: bytes, tar_bytes: bytes, diff_id: str) -> None:
    """gunzip(blob) is the input tar byte for byte, and ``diff_id`` is its sha256."""
    tar = uncompressed(tar_bytes)
    got = gzip.decompress(blob)
    if got != tar:
        at = next((i for i, (a, b) in enumerate(zip(got, tar, strict=False)) if a != b),
                  min(len(got), len(tar)))
        raise AssertionError(
            f"gunzip(blob) differs from the input tar at byte {at} "
            f"({len(got)} vs {len(tar)} bytes)"
        )
    _eq("diff_id", diff_id, sha256(tar))
