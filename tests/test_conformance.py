"""Conformance corpus: every case, in every input shape and build mode, round-trips.

Each test builds a tar from a case, converts it, opens the blob with the TOC digest the build
reported, and checks the reader and an extracted tree against the input tar (see
:mod:`estargz.testing`). Shapes a format cannot carry (xattrs outside PAX, long link names in
USTAR) are left out of the matrix rather than skipped.
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import pathlib
import tarfile
from collections import Counter
from collections.abc import Callable

import pytest
from backports import zstd as backports_zstd

from estargz.errors import UnsafePath
from estargz.format import BuildOptions, build, extract, open_blob
from estargz.testing import (
    LANDMARKS,
    Member,
    assert_lossless,
    assert_matches_tar,
    assert_tree_matches,
    block,
    char,
    dir_,
    expected_entries,
    fifo,
    file_,
    gzip_bytes,
    hardlink,
    payload,
    sha256,
    symlink,
    tar_of,
)

CHUNK = 1000
LONG_DIR = "d" * 70 + "/" + "e" * 70
LONG_FILE = LONG_DIR + "/" + "f" * 80


def _empty() -> list[Member]:
    return []


def _dir_and_empty_file() -> list[Member]:
    return [dir_("a/"), file_("a/empty")]


def _nested_dirs() -> list[Member]:
    return [
        dir_("a/"),
        dir_("a/b/", mode=0o750),
        dir_("a/b/c/", mode=0o700),
        file_("a/b/c/deep.txt", b"deep\n"),
        file_("x/y/no-parent-entry.txt", b"parents are implicit\n"),
        dir_("a/b/c/d/"),
    ]


def _symlinks() -> list[Member]:
    return [
        file_("target.txt", b"pointed at\n"),
        symlink("rel", "target.txt"),
        symlink("abs", "/etc/passwd"),
        symlink("dangling", "no/such/file"),
        dir_("d/"),
        symlink("d/up", "../target.txt"),
        symlink("dirlink", "d"),
    ]


def _hardlinks() -> list[Member]:
    return [
        file_("orig", payload(2300, 1), mode=0o640),
        hardlink("same", "orig"),
        dir_("d/"),
        hardlink("d/again", "orig"),
        file_("empty"),
        hardlink("empty-link", "empty"),
    ]


def _chunked_file() -> list[Member]:
    return [file_("big.bin", payload(5 * CHUNK + 123, 2))]


def _devices() -> list[Member]:
    return [
        dir_("dev/"),
        char("dev/null", 1, 3),
        char("dev/tty", 5, 0, mode=0o620),
        block("dev/loop7", 7, 7),
        fifo("dev/pipe", mode=0o600),
    ]


def _odd_modes() -> list[Member]:
    return [
        file_("setuid", b"#!/bin/sh\n", mode=0o4755),
        file_("setgid", b"#!/bin/sh\n", mode=0o2755),
        file_("all-bits", b"x", mode=0o7777),
        file_("no-bits", b"y", mode=0o000),
        dir_("sticky/", mode=0o1777),
        dir_("setgid-dir/", mode=0o2775),
        file_("sticky/inside", b"z", mode=0o600),
    ]


def _xattrs() -> list[Member]:
    return [
        dir_("d/", xattrs={"user.dir": b"on a directory"}),
        file_("d/f", b"payload", xattrs={"user.text": b"hello", "user.bin": b"\xff\x00\x80"}),
        file_("plain", b"no xattrs"),
    ]


def _small_files() -> list[Member]:
    return [dir_("many/")] + [
        file_(f"many/f{i:02d}", payload(17 * i + 5, 100 + i)) for i in range(24)
    ]


def _spanning() -> list[Member]:
    return [
        file_("s1", payload(2 * CHUNK + 500, 3)),
        file_("s2", payload(CHUNK, 4)),
        file_("s3", payload(CHUNK + 1, 5)),
        file_("s4", payload(CHUNK - 1, 6)),
        file_("s5", payload(3, 7)),
        file_("s6", payload(3 * CHUNK, 8)),
    ]


def _long_names() -> list[Member]:
    return [
        dir_(LONG_DIR.split("/")[0] + "/"),
        dir_(LONG_DIR + "/"),
        file_(LONG_FILE, payload(1500, 9)),
        symlink("short-to-long", LONG_FILE),
        symlink(LONG_DIR + "/" + "s" * 90, "../" + "t" * 120),
        hardlink("h" * 110, LONG_FILE),
    ]


def _duplicates() -> list[Member]:
    return [
        file_("dup", b"first version", mode=0o600),
        dir_("d/"),
        file_("other", b"unchanged"),
        file_("dup", payload(1200, 10), mode=0o644),
        dir_("d/", mode=0o711),
    ]


def _root_entry() -> list[Member]:
    """An entry for the root itself ("./" or "/"), as ``tar -C dir .`` writes."""
    return [dir_("", mode=0o750), file_("f", b"in the root"), dir_("sub/")]


def _child_before_parent() -> list[Member]:
    """Directory entries after their children: the implicit parents get their metadata late."""
    return [file_("p/q/r", b"deep"), dir_("p/q/", mode=0o700), dir_("p/", mode=0o750)]


def _hardlink_to_duplicate() -> list[Member]:
    """A hardlink whose target is written again later: the link follows the last one."""
    return [file_("a", b"first"), hardlink("b", "a"), file_("a", payload(1100, 16))]


def _owners() -> list[Member]:
    return [
        file_("a", b"alice's", uid=1000, gid=2000, uname="alice", gname="staff"),
        file_("b", b"alice's too", uid=1000, gid=2000, uname="alice", gname="staff"),
        file_("c", b"bob's", uid=1001, gid=2000, uname="bob", gname="staff"),
        dir_("home/", uid=1000, gid=1000),
    ]


CASES: dict[str, Callable[[], list[Member]]] = {
    "empty": _empty,
    "dir_and_empty_file": _dir_and_empty_file,
    "nested_dirs": _nested_dirs,
    "symlinks": _symlinks,
    "hardlinks": _hardlinks,
    "chunked_file": _chunked_file,
    "devices": _devices,
    "odd_modes": _odd_modes,
    "xattrs": _xattrs,
    "small_files": _small_files,
    "spanning": _spanning,
    "long_names": _long_names,
    "duplicates": _duplicates,
    "owners": _owners,
    "root_entry": _root_entry,
    "child_before_parent": _child_before_parent,
    "hardlink_to_duplicate": _hardlink_to_duplicate,
}
FORMATS = {"ustar": tarfile.USTAR_FORMAT, "pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT}
PREFIXES = {"bare": "", "dot": "./", "root": "/"}
SOURCES = ("tar", "tar.gz")
MIN_CHUNKS = (0, 64000)
MODES = ("normal", "external", "lossless", "zstdchunked")


def _possible(case: str, fmt: str, prefix: str, min_chunk: int) -> bool:
    """Combinations that exist: the format can carry the case, and the case varies with it."""
    if case == "xattrs":
        return fmt == "pax"
    if case == "long_names":
        return fmt in ("pax", "gnu")
    if case == "small_files":
        return min_chunk > 0
    if case == "empty":
        return prefix == "bare"  # no names, nothing to prefix
    if case == "root_entry":
        return prefix != "bare"  # the root has no name without a prefix
    return True


MATRIX = [
    pytest.param(case, fmt, prefix, source, min_chunk, mode,
                 id=f"{case}-{fmt}-{prefix}-{source}-min{min_chunk}-{mode}")
    for case, fmt, prefix, source, min_chunk, mode in itertools.product(
        CASES, FORMATS, PREFIXES, SOURCES, MIN_CHUNKS, MODES
    )
    if _possible(case, fmt, prefix, min_chunk)
]


@pytest.mark.parametrize(("case", "fmt", "prefix", "source", "min_chunk", "mode"), MATRIX)
def test_round_trip(case: str, fmt: str, prefix: str, source: str, min_chunk: int, mode: str,
                    tmp_path: pathlib.Path) -> None:
    name_prefix = PREFIXES[prefix]
    tar = tar_of(*CASES[case](), format=FORMATS[fmt], prefix=name_prefix)
    src = gzip_bytes(tar) if source == "tar.gz" else tar
    external = mode in ("external", "lossless")
    zstd = mode == "zstdchunked"
    options = BuildOptions(chunk_size=CHUNK, min_chunk_size=min_chunk, external_toc=external,
                           keep_diff_id=mode == "lossless", workers=2,
                           compression="zstd" if zstd else "gzip")
    out = io.BytesIO()
    result = build(io.BytesIO(src), out, options)
    blob = out.getvalue()

    assert result.size == len(blob)
    assert result.digest == sha256(blob)
    # the zstd library on its own: every frame, the TOC and footer skipped
    unpacked = backports_zstd.decompress(blob) if zstd else gzip.decompress(blob)
    assert result.diff_id == sha256(unpacked)
    assert result.uncompressed_size == len(unpacked)
    if mode == "lossless":
        assert_lossless(blob, src, result.diff_id)
    # Any runtime can still pull it the old way: the blob is a tar.gz of the same members.
    assert expected_entries(unpacked).keys() == expected_entries(tar).keys()

    assert (result.toc_blob is not None) == external
    unverified = open_blob(blob, external_toc=result.toc_blob)
    assert unverified.footer.kind == (
        "external" if external else "zstdchunked" if zstd else "estargz")
    assert unverified.toc_json == result.toc_json
    reader = unverified.verify_toc(result.toc_digest)

    names = [e.name for e in reader.entries if e.type != "chunk"]
    if mode != "lossless":
        assert names[:1] == [".no.prefetch.landmark"]
    else:
        assert not LANDMARKS & set(names)
    assert all(n.startswith(name_prefix) for n in names if n not in LANDMARKS)

    assert_matches_tar(reader, tar, chunk_size=CHUNK)

    if case == "small_files":
        shared = Counter(e.offset for e in reader.entries if e.type == "reg" and e.size > 0)
        assert any(e.inner_offset > 0 for e in reader.entries)
        assert max(shared.values()) > 1

    dest = str(tmp_path / "tree")
    if prefix == "root" and names:
        with pytest.raises(UnsafePath):
            extract(reader, dest)
        assert not os.path.exists(dest) or not os.listdir(dest)
    report = extract(reader, dest, strip_leading_slash=prefix == "root")
    assert report.warnings == []
    assert_tree_matches(dest, tar)
