"""Extraction recreates the tree (modes, owners, times, links, devices, xattrs), also over it."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from estargz.errors import EstargzError
from estargz.format import BlobReader, BuildOptions, build, extract, open_blob
from tarbuild import make_tar

M_DIR, M_FILE, M_LINK = 1_600_000_000, 1_650_000_000, 1_550_000_000
BIG = hashlib.sha256(b"big").digest() * 1000  # 32000 bytes: several chunks below
Item = tuple[tarfile.TarInfo, bytes]


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
           mtime: int = M_FILE, **attrs: object) -> Item:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, len(data), mode, mtime
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


LAYER = make_tar(
    member("d/", tarfile.DIRTYPE, mode=0o750, mtime=M_DIR),
    member("d/setuid", data=b"#!/bin/sh\n", mode=0o4755, uid=1234, gid=5678),
    member("d/setgid", data=b"g", mode=0o2711),
    member("d/sym", tarfile.SYMTYPE, linkname="setuid", mode=0o777, mtime=M_LINK),
    member("d/dangling", tarfile.SYMTYPE, linkname="/nowhere/at/all", mode=0o777),
    member("d/hard", tarfile.LNKTYPE, linkname="d/setuid"),
    member("sticky/", tarfile.DIRTYPE, mode=0o1777, mtime=M_DIR),
    member("fifo", tarfile.FIFOTYPE, mode=0o640),
    member("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
    member("dev/loop0", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=0, gid=6),
    member("x", data=b"with xattrs",
           pax_headers={"SCHILY.xattr.user.a": "hello", "SCHILY.xattr.user.b": "\u00fc"}),
    member("empty"),
    member("big", data=BIG, mode=0o600),
    member("late/child", data=b"child"),
    member("late/", tarfile.DIRTYPE, mode=0o700, mtime=M_DIR),
    member("implicit/parent/file", data=b"deep"),
)
FILES = {
    "d/setuid": b"#!/bin/sh\n", "d/setgid": b"g", "x": b"with xattrs", "empty": b"", "big": BIG,
    "late/child": b"child", "implicit/parent/file": b"deep", ".no.prefetch.landmark": b"\x0f",
}


def open_layer(tar: bytes = LAYER, **options: object) -> BlobReader:
    out = io.BytesIO()
    result = build(io.BytesIO(tar), out, BuildOptions(**options))  # type: ignore[arg-type]
    return open_blob(out.getvalue()).verify_toc(result.toc_digest)


@pytest.fixture(scope="module", params=["normal", "min-chunk"])
def reader(request: pytest.FixtureRequest) -> BlobReader:
    if request.param == "normal":
        return open_layer(chunk_size=5000)
    return open_layer(chunk_size=5000, min_chunk_size=1 << 20)


def check_tree(root: Path) -> None:
    def lst(path: str) -> os.stat_result:
        return os.lstat(root / path)

    for path, data in FILES.items():
        assert (root / path).read_bytes() == data, path
    modes = {
        "d": (stat.S_IFDIR, 0o750), "d/setuid": (stat.S_IFREG, 0o4755),
        "d/setgid": (stat.S_IFREG, 0o2711), "sticky": (stat.S_IFDIR, 0o1777),
        "fifo": (stat.S_IFIFO, 0o640), "dev/null": (stat.S_IFCHR, 0o666),
        "dev/loop0": (stat.S_IFBLK, 0o660), "big": (stat.S_IFREG, 0o600),
        "late": (stat.S_IFDIR, 0o700), "implicit": (stat.S_IFDIR, 0o755),
        "implicit/parent": (stat.S_IFDIR, 0o755), "empty": (stat.S_IFREG, 0o644),
        "d/sym": (stat.S_IFLNK, None),
    }
    for path, (kind, mode) in modes.items():
        st = lst(path)
        assert stat.S_IFMT(st.st_mode) == kind, path
        if mode is not None:
            assert stat.S_IMODE(st.st_mode) == mode, (path, oct(st.st_mode))
    for path in ("d", "sticky", "late"):
        assert lst(path).st_mtime == M_DIR, path  # set after the children were written
    for path in ("d/setuid", "x", "big", "fifo", "dev/null", "late/child"):
        assert lst(path).st_mtime == M_FILE, path
    assert lst("d/sym").st_mtime == M_LINK
    assert os.readlink(root / "d/sym") == "setuid"
    assert os.readlink(root / "d/dangling") == "/nowhere/at/all"
    assert (lst("d/setuid").st_uid, lst("d/setuid").st_gid) == (1234, 5678)
    assert lst("dev/loop0").st_gid == 6
    hard, target = lst("d/hard"), lst("d/setuid")
    assert (hard.st_ino, hard.st_dev) == (target.st_ino, target.st_dev)
    assert target.st_nlink == 2
    dev = lst("dev/null")
    assert (os.major(dev.st_rdev), os.minor(dev.st_rdev)) == (1, 3)
    loop = lst("dev/loop0")
    assert (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 0)
    assert os.getxattr(root / "x", "user.a") == b"hello"
    assert os.getxattr(root / "x", "user.b") == "\u00fc".encode()
    assert sorted(a for a in os.listxattr(root / "x") if a.startswith("user.")) == [
        "user.a", "user.b"
    ]


def test_tree_matches(reader: BlobReader, tmp_path: Path) -> None:
    assert os.geteuid() == 0  # owners and device nodes need root; the suite runs as root
    report = extract(reader, str(tmp_path / "root"))
    check_tree(tmp_path / "root")
    assert report.warnings == []
    assert report.entries == len(list(reader.walk()))
    assert report.bytes == sum(len(v) for v in FILES.values())
    assert sorted(os.listdir(tmp_path / "root")) == [
        ".no.prefetch.landmark", "big", "d", "dev", "empty", "fifo", "implicit", "late",
        "sticky", "x",
    ]


def test_reextract_over_existing_tree(reader: BlobReader, tmp_path: Path) -> None:
    root = tmp_path / "root"
    extract(reader, str(root))
    # disturb it: changed content, modes, a file where a directory was, extra files
    (root / "big").write_bytes(b"changed")
    os.chmod(root / "d/setgid", 0o600)
    os.unlink(root / "d/hard")
    (root / "d/hard").write_bytes(b"not a link any more")
    (root / "extra").write_bytes(b"kept")
    os.unlink(root / "implicit/parent/file")
    os.rmdir(root / "implicit/parent")
    (root / "implicit/parent").write_bytes(b"a file in the way")
    os.unlink(root / "d/sym")
    os.mkfifo(root / "d/sym")
    report = extract(reader, str(root))
    check_tree(root)
    assert report.warnings == []
    assert (root / "extra").read_bytes() == b"kept"  # extraction adds, it does not clean


def test_extract_twice_is_idempotent(tmp_path: Path) -> None:
    reader = open_layer()
    root = tmp_path / "root"
    extract(reader, str(root))
    first = {p: os.lstat(p) for p in root.rglob("*")}
    extract(reader, str(root))
    second = {p: os.lstat(p) for p in root.rglob("*")}
    assert first.keys() == second.keys()
    for path, st in first.items():
        again = second[path]
        assert (st.st_mode, st.st_size, st.st_mtime, st.st_uid) == (
            again.st_mode, again.st_size, again.st_mtime, again.st_uid), path


def test_xattr_that_cannot_be_set_is_a_warning(tmp_path: Path) -> None:
    tar = make_tar(member("f", data=b"f", pax_headers={"SCHILY.xattr.bogusns.k": "v",
                                                       "SCHILY.xattr.user.ok": "1"}))
    report = extract(open_layer(tar), str(tmp_path / "root"))
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("'f': xattr 'bogusns.k' not set:")
    assert os.getxattr(tmp_path / "root/f", "user.ok") == b"1"
    assert (tmp_path / "root/f").read_bytes() == b"f"


def test_hardlink_chain_shares_one_inode(tmp_path: Path) -> None:
    tar = make_tar(
        member("a", data=b"shared"),
        member("b", tarfile.LNKTYPE, linkname="a"),
        member("sub/c", tarfile.LNKTYPE, linkname="a"),
    )
    root = tmp_path / "root"
    extract(open_layer(tar), str(root))
    inodes = {os.lstat(root / p).st_ino for p in ("a", "b", "sub/c")}
    assert len(inodes) == 1
    assert os.lstat(root / "a").st_nlink == 3
    assert (root / "sub/c").read_bytes() == b"shared"


def test_extract_into_existing_empty_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    extract(open_layer(make_tar(member("f", data=b"1"))), str(root))
    assert (root / "f").read_bytes() == b"1"


def test_a_file_that_fails_verification_leaves_no_partial_file(tmp_path: Path) -> None:
    """Each file is written under a temporary name and renamed into place once verified: a bad
    chunk fails the extraction, leaves no partial file, and over an existing tree, keeps the
    old file as it was."""
    tar = make_tar(member("a", data=b"first"), member("big", data=BIG), member("z", data=b"z"))
    out = io.BytesIO()
    result = build(io.BytesIO(tar), out, BuildOptions(chunk_size=5000))
    blob = bytearray(out.getvalue())
    good = open_blob(bytes(blob)).verify_toc(result.toc_digest)
    second = good.chunks("big")[1]
    blob[(second.offset + second.member_end) // 2] ^= 0xFF  # inside the second chunk's member
    bad = open_blob(bytes(blob)).verify_toc(result.toc_digest)

    fresh = tmp_path / "fresh"
    with pytest.raises(EstargzError, match="'big'"):
        extract(bad, str(fresh))
    assert sorted(p.name for p in fresh.iterdir()) == [".no.prefetch.landmark", "a"]  # no big

    over = tmp_path / "over"
    extract(good, str(over))
    (over / "big").write_bytes(b"old content")
    with pytest.raises(EstargzError, match="'big'"):
        extract(bad, str(over))
    assert (over / "big").read_bytes() == b"old content"
    assert sorted(p.name for p in over.iterdir()) == [".no.prefetch.landmark", "a", "big", "z"]
