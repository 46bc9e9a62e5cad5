"""keep-diff-id: gunzip of the blob is the input tar byte for byte, whoever made the tar.

Tars come from GNU tar in its three formats, from Python's ``tarfile``, and with the oddities
real layers have (trailing zero blocks past the end-of-archive marker, no marker at all).
"""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import tarfile

import pytest

from estargz.errors import BuildError
from estargz.format import BuildOptions, BuildResult, build, extract, open_blob
from estargz.testing import (
    assert_lossless,
    assert_matches_tar,
    assert_tree_matches,
    dir_,
    file_,
    gzip_bytes,
    hardlink,
    payload,
    sha256,
    symlink,
    tar_of,
)

CHUNK = 1000
MTIME = 1_650_000_000
LONG_NAME = "l" * 60 + "/" + "m" * 80 + ".txt"


def _convert(src: bytes, min_chunk: int = 0) -> tuple[bytes, BuildResult]:
    options = BuildOptions(chunk_size=CHUNK, min_chunk_size=min_chunk, external_toc=True,
                           keep_diff_id=True, workers=2)
    out = io.BytesIO()
    result = build(io.BytesIO(src), out, options)
    return out.getvalue(), result


def _check(src: bytes, tar: bytes, min_chunk: int = 0) -> tuple[bytes, BuildResult]:
    """Convert ``src`` (``tar``, maybe gzipped) losslessly and check the blob every way."""
    blob, result = _convert(src, min_chunk)
    assert_lossless(blob, tar, result.diff_id)
    assert result.diff_id == sha256(tar)
    assert result.uncompressed_size == len(tar)
    assert result.toc_blob is not None
    unverified = open_blob(blob, external_toc=result.toc_blob)
    assert unverified.footer.kind == "external"
    reader = unverified.verify_toc(result.toc_digest)
    assert_matches_tar(reader, tar, chunk_size=CHUNK)
    if min_chunk:
        assert any(e.inner_offset > 0 for e in reader.entries)
    return blob, result


def _make_tree(root: pathlib.Path, long_link: bool) -> None:
    """Files, links, an empty file, a long name and a file larger than the chunk size."""
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "file.txt").write_bytes(b"hello, layer\n")
    (root / "dir" / "big.bin").write_bytes(payload(3 * CHUNK + 517, 11))
    (root / "empty").write_bytes(b"")
    (root / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "setuid", 0o4755)
    (root / LONG_NAME).parent.mkdir()
    (root / LONG_NAME).write_bytes(payload(700, 12))
    os.symlink("dir/file.txt", root / "link")
    os.symlink("nowhere", root / "dangling")
    os.link(root / "dir" / "file.txt", root / "hard")
    os.mkfifo(root / "fifo")
    if long_link:
        os.symlink("t" * 150, root / "longlink")
    for path in [*sorted(root.rglob("*"), reverse=True), root]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    # sub-second time: PAX keeps the fraction (the TOC rounds it), the others truncate it
    stamp = MTIME * 10**9 + 600_000_000
    os.utime(root / "dir" / "file.txt", ns=(stamp, stamp))


GNU_FORMATS = {"ustar": "ustar", "gnu": "gnu", "pax": "posix"}


@pytest.mark.parametrize("style", ["dot", "names"])
@pytest.mark.parametrize("source", ["tar", "tar.gz"])
@pytest.mark.parametrize("min_chunk", [0, 64000])
@pytest.mark.parametrize("fmt", list(GNU_FORMATS))
def test_gnu_tar(fmt: str, min_chunk: int, source: str, style: str,
                 tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    _make_tree(root, long_link=fmt != "ustar")
    if fmt == "pax":
        os.setxattr(root / "dir" / "file.txt", "user.origin", b"gnu tar \xff")
    members = ["."] if style == "dot" else sorted(os.listdir(root))
    extra = ["--xattrs"] if fmt == "pax" else []
    tar_path = tmp_path / "layer.tar"
    subprocess.run(["tar", f"--format={GNU_FORMATS[fmt]}", *extra, "-C", str(root), "-cf",
                    str(tar_path), *members], check=True)
    tar = tar_path.read_bytes()
    assert len(tar) % 10240 == 0  # GNU tar pads to whole records: the blob must keep them
    blob, result = _check(gzip_bytes(tar) if source == "tar.gz" else tar, tar, min_chunk)

    reader = open_blob(blob, external_toc=result.toc_blob).verify_toc(result.toc_digest)
    dest = tmp_path / "out"
    assert extract(reader, str(dest)).warnings == []
    assert_tree_matches(dest, tar)


@pytest.mark.parametrize("min_chunk", [0, 64000])
@pytest.mark.parametrize("fmt", ["ustar", "pax", "gnu"])
def test_python_tarfile(fmt: str, min_chunk: int) -> None:
    formats = {"ustar": tarfile.USTAR_FORMAT, "pax": tarfile.PAX_FORMAT,
               "gnu": tarfile.GNU_FORMAT}
    long_name = "p" * 90 + "/" + "q" * 90
    tar = tar_of(
        dir_("etc/"),
        file_("etc/conf", b"k=v\n", mode=0o600, uid=1000, gid=1000, uname="u", gname="g"),
        file_("big", payload(4 * CHUNK + 1, 13)),
        file_("empty"),
        symlink("link", "etc/conf"),
        hardlink("hard", "big"),
        file_(long_name if fmt != "ustar" else "p" * 90 + "/short", payload(10, 14)),
        file_("etc/conf", b"k=overridden\n"),  # a duplicate: copied as is, last one wins
        format=formats[fmt],
        prefix="./",
    )
    _check(tar, tar, min_chunk)
    _check(gzip_bytes(tar), tar, min_chunk)


def _small_tar() -> bytes:
    return tar_of(dir_("a/"), file_("a/x", payload(2500, 15)), file_("a/y", b"y"),
                  symlink("a/z", "x"), format=tarfile.GNU_FORMAT)


@pytest.mark.parametrize("min_chunk", [0, 64000])
def test_trailing_zero_blocks(min_chunk: int) -> None:
    """Zeros past the end-of-archive marker are part of the diffID and must survive."""
    tar = _small_tar() + b"\x00" * (10 << 10)
    _check(tar, tar, min_chunk)
    _check(gzip_bytes(tar), tar, min_chunk)


def test_no_end_of_archive_marker() -> None:
    """A tar cut right after its last member (no zero blocks) still round-trips exactly."""
    full = _small_tar()
    with tarfile.open(fileobj=io.BytesIO(full)) as tf:
        last = tf.getmembers()[-1]
        end = last.offset_data + -(-last.size // 512) * 512
    tar = full[:end]
    assert tar.strip(b"\x00") == full.strip(b"\x00") and len(tar) < len(full)
    _check(tar, tar)


def test_empty_tar() -> None:
    tar = tar_of()
    blob, result = _check(tar, tar)
    assert open_blob(blob, external_toc=result.toc_blob).entries == []


@pytest.mark.parametrize("name", ["stargz.index.json", "./stargz.index.json"])
def test_refuses_tar_holding_a_toc(name: str) -> None:
    tar = tar_of(file_("a", b"a"), file_(name, b'{"version":1,"entries":[]}'))
    with pytest.raises(BuildError, match=r"stargz\.index\.json"):
        _convert(tar)
    with pytest.raises(BuildError, match=r"stargz\.index\.json"):
        _convert(gzip_bytes(tar))
