"""The builder: blob layout, ordering rules, inputs and outputs of every kind, large files."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from estargz.errors import BuildError, FormatError
from estargz.format import (
    BuildOptions,
    BuildResult,
    BytesSource,
    FileSource,
    build,
    external_footer,
    open_blob,
    parse_toc_blob,
)
from estargz.format.compression import INFLATERS, available_engines, inflate_member
from tarbuild import MTIME, Item, convert, make_tar


def reg(name: str, data: bytes = b"", mode: int = 0o644, **attrs: object) -> Item:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, MTIME
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def dirent(name: str, mode: int = 0o755) -> Item:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, MTIME
    return info, b""


def link(name: str, target: str, kind: bytes = tarfile.LNKTYPE) -> Item:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = kind, target, MTIME
    return info, b""


def tar_files(tar: bytes) -> dict[str, tuple[str, bytes | str]]:
    """name -> (kind, content or link target) of every member, as tarfile sees the stream."""
    out: dict[str, tuple[str, bytes | str]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for info in tf:
            if info.isreg():
                f = tf.extractfile(info)
                assert f is not None
                out[info.name] = ("reg", f.read())
            elif info.isdir():
                out[info.name] = ("dir", "")
            else:
                out[info.name] = (info.type.decode(), info.linkname)
    return out


def toc_names(result: BuildResult) -> list[str]:
    return [e.name for e in result.entries if e.type != "chunk"]


def pattern(size: int, seed: int = 0) -> bytes:
    """Compressible but not trivially repetitive content."""
    block = hashlib.sha256(str(seed).encode()).digest() * 64
    return (block * (size // len(block) + 1))[:size]


SAMPLE = make_tar(
    dirent("etc/"),
    reg("etc/hosts", b"127.0.0.1 localhost\n"),
    reg("etc/empty"),
    dirent("usr/"),
    dirent("usr/bin/"),
    reg("usr/bin/tool", pattern(300_000, 1), mode=0o755),
    reg("usr/bin/small", b"x" * 10),
    link("usr/bin/alias", "tool", tarfile.SYMTYPE),
    link("etc/hosts.bak", "etc/hosts"),
    reg("var/log/deep.log", pattern(70_000, 2)),
)


# --- determinism and chunking -------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"chunk_size": 50_000},
        {"chunk_size": 50_000, "min_chunk_size": 100_000},
        {"chunk_size": 50_000, "external_toc": True},
        {"prioritized_files": ("usr/bin/tool",)},
    ],
    ids=["normal", "min-chunk", "external", "prioritized"],
)
def test_same_bytes_for_any_worker_count(options: dict[str, object]) -> None:
    blobs = {w: convert(SAMPLE, workers=w, **options) for w in (1, 2, 4)}
    first_blob, first = blobs[1]
    assert len(first.entries) > 5
    for blob, result in blobs.values():
        assert blob == first_blob
        assert result.toc_json == first.toc_json
        assert result.toc_blob == first.toc_blob
    assert convert(SAMPLE, **options)[0] == first_blob  # and again, with the default workers


def test_default_chunk_size_splits_large_file() -> None:
    data = pattern((9 << 20) + 123, 3)
    blob, result = convert(make_tar(reg("big", data)), compression_level=1)
    chunks = [e for e in result.entries if e.name == "big"]
    assert [e.type for e in chunks] == ["reg", "chunk", "chunk"]
    assert [e.chunk_offset for e in chunks] == [0, 4 << 20, 8 << 20]
    assert [e.chunk_size for e in chunks] == [4 << 20, 4 << 20, 0]  # last one: omitted
    offsets = [e.offset for e in chunks]
    assert offsets == sorted(set(offsets))  # each chunk starts its own gzip member
    assert chunks[0].digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert chunks[2].chunk_digest == "sha256:" + hashlib.sha256(data[8 << 20 :]).hexdigest()
    reader = open_blob(blob).verify_toc(result.toc_digest)
    assert reader.read("big") == data


def test_chunk_exactly_at_chunk_size_keeps_its_size() -> None:
    _, result = convert(make_tar(reg("f", b"a" * 200)), chunk_size=100)
    chunks = [e for e in result.entries if e.name == "f"]
    assert [(e.chunk_offset, e.chunk_size) for e in chunks] == [(0, 100), (100, 100)]


# --- ordering -------------------------------------------------------------------------------


def test_prioritized_files_come_first_with_parents_and_link_targets() -> None:
    tar = make_tar(
        reg("z", b"z"),
        dirent("a/"),
        dirent("a/b/"),
        reg("a/b/c", b"c"),
        dirent("t/"),
        reg("t/target", b"target"),
        link("h", "t/target"),
        reg("other", b"o"),
    )
    blob, result = convert(tar, prioritized_files=("a/b/c", "h"))
    assert toc_names(result) == [
        "a/", "a/b/", "a/b/c", "t/", "t/target", "h", ".prefetch.landmark", "z", "other",
    ]
    landmark = next(e for e in result.entries if e.name == ".prefetch.landmark")
    reader = open_blob(blob).verify_toc(result.toc_digest)
    assert reader.prefetch_size == landmark.offset > 0
    assert reader.read(".prefetch.landmark") == b"\x0f"
    assert list(tar_files(gzip.decompress(blob))) == [
        "a", "a/b", "a/b/c", "t", "t/target", "h", ".prefetch.landmark", "z", "other",
        "stargz.index.json",
    ]


def test_prioritized_names_are_cleaned_and_order_given_is_kept() -> None:
    tar = make_tar(reg("./one", b"1"), reg("./two", b"2"), reg("./three", b"3"))
    _, result = convert(tar, prioritized_files=("/three", "two"))
    assert toc_names(result) == ["./three", "./two", ".prefetch.landmark", "./one"]


def test_no_prioritized_files_puts_no_prefetch_landmark_first() -> None:
    blob, result = convert(make_tar(reg("a", b"aaa"), reg("b", b"bbb")))
    first, second = result.entries[0], result.entries[1]
    assert (first.name, first.type, first.size) == (".no.prefetch.landmark", "reg", 1)
    assert first.digest == "sha256:" + hashlib.sha256(b"\x0f").hexdigest()
    assert 0 < first.offset < second.offset  # the landmark payload opens its own member
    reader = open_blob(blob).verify_toc(result.toc_digest)
    assert reader.prefetch_size == 0
    assert reader.read(".no.prefetch.landmark") == b"\x0f"


def test_missing_prioritized_file_is_an_error() -> None:
    with pytest.raises(BuildError, match="prioritized file 'nope' is not in the input tar"):
        convert(make_tar(reg("a", b"a")), prioritized_files=("nope",))


def test_missing_prioritized_file_allowed_is_reported() -> None:
    blob, result = convert(
        make_tar(reg("a", b"a"), reg("b", b"b")),
        prioritized_files=("nope", "b"),
        allow_missing_prioritized=True,
    )
    assert result.missed_prioritized == ["nope"]
    assert result.summary()["missed_prioritized"] == ["nope"]
    assert toc_names(result) == ["b", ".prefetch.landmark", "a"]
    assert open_blob(blob).verify_toc(result.toc_digest).read("b") == b"b"


def test_prioritized_file_without_parent_entries() -> None:
    """Tars often omit directory entries; the file and the layer still convert."""
    tar = make_tar(reg("x", b"x"), reg("deep/dir/file", b"content"))
    blob, result = convert(tar, prioritized_files=("deep/dir/file",))
    assert toc_names(result) == ["deep/dir/file", ".prefetch.landmark", "x"]
    reader = open_blob(blob).verify_toc(result.toc_digest)
    assert reader.listdir("deep") == ["dir"]
    info = reader.stat("deep/dir")
    assert info.type == "dir"
    assert reader.read("deep/dir/file") == b"content"


def test_duplicate_names_last_wins_at_last_position() -> None:
    tar = make_tar(reg("a", b"first"), reg("b", b"b"), reg("./a", b"second"), reg("c", b"c"))
    blob, result = convert(tar)
    assert toc_names(result) == [".no.prefetch.landmark", "b", "./a", "c"]
    assert open_blob(blob).verify_toc(result.toc_digest).read("a") == b"second"
    assert tar_files(gzip.decompress(blob))["./a"] == ("reg", b"second")
    assert "a" not in tar_files(gzip.decompress(blob))


def test_landmarks_and_toc_in_input_are_replaced() -> None:
    tar = make_tar(
        reg(".no.prefetch.landmark", b"\x0f"),
        reg("a", b"a"),
        reg(".prefetch.landmark", b"\x0f"),
        reg("stargz.index.json", b'{"version": 1, "entries": []}'),
        reg("b", b"b"),
    )
    _, result = convert(tar)
    assert toc_names(result) == [".no.prefetch.landmark", "a", "b"]
    _, result = convert(tar, prioritized_files=("b",))
    assert toc_names(result) == ["b", ".prefetch.landmark", "a"]


def test_converting_an_estargz_blob_again() -> None:
    blob, first = convert(SAMPLE, chunk_size=50_000)
    again_blob, again = convert(blob, chunk_size=50_000)
    assert toc_names(again) == toc_names(first)
    assert again.toc_json == first.toc_json  # same input tar content, same layout
    reader = open_blob(again_blob).verify_toc(again.toc_digest)
    original = open_blob(blob).verify_toc(first.toc_digest)
    assert reader.verify() == original.verify()
    assert tar_files(gzip.decompress(again_blob)) == tar_files(gzip.decompress(blob))
    # with a different layout the files stay the same
    third_blob, third = convert(blob, prioritized_files=("etc/hosts",), min_chunk_size=1 << 20)
    names = toc_names(third)
    assert names.count(".prefetch.landmark") == 1 and ".no.prefetch.landmark" not in names
    assert open_blob(third_blob).verify_toc(third.toc_digest).read("usr/bin/tool") == (
        original.read("usr/bin/tool")
    )


# --- content and inputs ---------------------------------------------------------------------


def test_empty_files() -> None:
    blob, result = convert(make_tar(reg("e1"), dirent("d/"), reg("d/e2"), reg("f", b"f")))
    empty = [e for e in result.entries if e.name in ("e1", "d/e2")]
    for e in empty:
        assert (e.size, e.offset, e.chunk_digest) == (0, 0, "")
        assert e.digest == "sha256:" + hashlib.sha256(b"").hexdigest()
    reader = open_blob(blob).verify_toc(result.toc_digest)
    assert reader.read("e1") == b""
    assert reader.chunks("d/e2") == []
    assert reader.verify()["d/e2"] == "sha256:" + hashlib.sha256(b"").hexdigest()
    assert tar_files(gzip.decompress(blob))["d/e2"] == ("reg", b"")


@pytest.mark.parametrize("data", [b"", b"\x00" * 1024, b"\x00" * 10240], ids=["0", "1k", "10k"])
def test_empty_tar(data: bytes) -> None:
    blob, result = convert(data)
    assert toc_names(result) == [".no.prefetch.landmark"]
    assert open_blob(blob).verify_toc(result.toc_digest).listdir() == [".no.prefetch.landmark"]


class PipeReader:
    """Only ``read``: no fileno, no seek, like a pipe wrapper."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(min(n, 1000) if n > 0 else 1000)


class PipeWriter:
    """Only ``write``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)


@pytest.mark.parametrize("compressed", [False, True], ids=["tar", "tar.gz"])
def test_stream_input_and_stream_output(compressed: bool) -> None:
    reference, expected = convert(SAMPLE)
    src = gzip.compress(SAMPLE) if compressed else SAMPLE
    sink = PipeWriter()
    result = build(PipeReader(src), sink, BuildOptions())  # type: ignore[arg-type]
    assert b"".join(sink.parts) == reference
    assert result.digest == expected.digest
    assert len(sink.parts) > 3


def test_real_pipe_input(tmp_path: Path) -> None:
    reference, _ = convert(SAMPLE)
    layer = tmp_path / "layer.tar"
    layer.write_bytes(SAMPLE)
    proc = subprocess.Popen(["cat", str(layer)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = io.BytesIO()
    build(cast(BinaryIO, proc.stdout), out, BuildOptions(tmpdir=str(tmp_path)))
    assert proc.wait() == 0
    assert out.getvalue() == reference


def test_path_filesource_and_bytessource_inputs(tmp_path: Path) -> None:
    reference, _ = convert(SAMPLE)
    plain, zipped = tmp_path / "layer.tar", tmp_path / "layer.tar.gz"
    plain.write_bytes(SAMPLE)
    zipped.write_bytes(gzip.compress(SAMPLE))
    sources: list[object] = [
        plain, str(plain), zipped, str(zipped), BytesSource(SAMPLE),
        BytesSource(gzip.compress(SAMPLE)),
    ]
    for src in sources:
        out = io.BytesIO()
        build(src, out)  # type: ignore[arg-type]
        assert out.getvalue() == reference, src
    for path in (plain, zipped):
        with FileSource(path) as source:
            out = io.BytesIO()
            build(source, out)
        assert out.getvalue() == reference, path


def test_open_file_object_at_an_offset(tmp_path: Path) -> None:
    """A seekable file positioned after some prefix converts the tar from that point on."""
    reference, _ = convert(SAMPLE)
    path = tmp_path / "prefixed"
    path.write_bytes(b"P" * 700 + SAMPLE)
    with open(path, "rb") as f:
        f.seek(700)
        out = io.BytesIO()
        build(f, out)
    assert out.getvalue() == reference


def test_levels_1_and_9_both_valid() -> None:
    blobs = {level: convert(SAMPLE, compression_level=level) for level in (1, 9)}
    for level, (blob, result) in blobs.items():
        assert result.compression_level == level
        reader = open_blob(blob).verify_toc(result.toc_digest)
        assert reader.read("usr/bin/tool") == pattern(300_000, 1)
    assert blobs[9][1].size < blobs[1][1].size
    assert blobs[9][1].diff_id != blobs[1][1].diff_id  # offsets in the TOC differ


@pytest.mark.parametrize("engine", available_engines())
def test_engines(engine: str) -> None:
    blob, result = convert(SAMPLE, engine=engine)
    assert result.engine.split()[0] == engine
    assert result.summary()["engine"] == result.engine
    reader = open_blob(blob).verify_toc(result.toc_digest)
    assert reader.verify()["usr/bin/tool"] == "sha256:" + hashlib.sha256(
        pattern(300_000, 1)
    ).hexdigest()


def test_engine_choice() -> None:
    assert {"zlib", "zlib-ng"} <= set(available_engines())
    preferred = "libdeflate" if "libdeflate" in available_engines() else "zlib-ng"
    assert convert(SAMPLE)[1].engine.split()[0] == preferred


@pytest.mark.parametrize(
    "options",
    [{}, {"external_toc": True}, {"min_chunk_size": 1 << 20}, {"chunk_size": 1000}],
    ids=["normal", "external", "min-chunk", "small-chunks"],
)
def test_digests_and_sizes(options: dict[str, object]) -> None:
    blob, result = convert(SAMPLE, **options)
    raw = gzip.decompress(blob)
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert result.uncompressed_size == len(raw)
    assert result.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert result.size == len(blob)
    assert result.toc_digest == "sha256:" + hashlib.sha256(result.toc_json).hexdigest()
    assert result.summary() == {
        "toc_digest": result.toc_digest,
        "diff_id": result.diff_id,
        "digest": result.digest,
        "size": len(blob),
        "uncompressed_size": len(raw),
        "engine": result.engine,
        "compression": "gzip",
        "compression_level": 9,
        "missed_prioritized": [],
    }


@pytest.mark.parametrize(
    "options",
    [{}, {"external_toc": True}, {"min_chunk_size": 1 << 20}, {"min_chunk_size": 1000}],
    ids=["normal", "external", "min-chunk", "min-chunk-small"],
)
def test_uncompressed_stream_is_the_same_tar(options: dict[str, object]) -> None:
    blob, result = convert(SAMPLE, chunk_size=60_000, **options)
    got = tar_files(gzip.decompress(blob))
    want = tar_files(SAMPLE)
    landmark = got.pop(".no.prefetch.landmark")
    assert landmark == ("reg", b"\x0f")
    if options.get("external_toc"):
        assert "stargz.index.json" not in got
    else:
        assert got.pop("stargz.index.json") == ("reg", result.toc_json)
    assert got == want
    # and tarfile reads it straight from the gzip stream too
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tf:
        assert "usr/bin/tool" in tf.getnames()


def test_min_chunk_size_shares_members_with_inner_offsets() -> None:
    tar = make_tar(*(reg(f"f{i}", pattern(300, i)) for i in range(20)))
    blob, result = convert(tar, min_chunk_size=2000)
    files = [e for e in result.entries if e.name.startswith("f")]
    assert len({e.offset for e in files}) < len(files)
    assert any(e.inner_offset > 0 for e in files)
    reader = open_blob(blob).verify_toc(result.toc_digest)
    for i in range(20):
        assert reader.read(f"f{i}") == pattern(300, i)


def test_external_toc() -> None:
    blob, result = convert(SAMPLE, external_toc=True)
    assert blob.endswith(external_footer())
    assert result.toc_blob is not None
    assert parse_toc_blob(result.toc_blob) == result.toc_json
    with tarfile.open(fileobj=io.BytesIO(result.toc_blob), mode="r:gz") as tf:
        assert tf.getnames() == ["stargz.index.json"]
    reader = open_blob(blob, external_toc=result.toc_blob).verify_toc(result.toc_digest)
    assert reader.read("etc/hosts") == b"127.0.0.1 localhost\n"


def test_keep_diff_id_is_lossless() -> None:
    tar = SAMPLE + b"\x00" * 4096  # extra zero blocks survive too
    blob, result = convert(tar, external_toc=True, keep_diff_id=True, chunk_size=50_000)
    assert gzip.decompress(blob) == tar
    assert result.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert ".no.prefetch.landmark" not in toc_names(result)
    reader = open_blob(blob, external_toc=result.toc_blob).verify_toc(result.toc_digest)
    assert reader.read("var/log/deep.log") == pattern(70_000, 2)


def test_keep_diff_id_refuses_an_input_holding_a_toc() -> None:
    tar = make_tar(reg("a", b"a"), reg("stargz.index.json", b"{}"))
    with pytest.raises(BuildError, match=r"already holds stargz\.index\.json"):
        convert(tar, external_toc=True, keep_diff_id=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keep_diff_id": True}, "keep-diff-id needs an external TOC"),
        ({"keep_diff_id": True, "external_toc": True, "prioritized_files": ("a",)},
         "keep-diff-id cannot reorder files"),
        ({"compression_level": 0}, "compression level must be 1-9, got 0"),
        ({"compression_level": 10}, "compression level must be 1-9, got 10"),
        ({"chunk_size": 0}, "chunk size must be between 1 and"),
        ({"chunk_size": -5}, "chunk size must be between 1 and"),
        ({"chunk_size": (1 << 30) + 1}, "chunk size must be between 1 and"),
        ({"min_chunk_size": -1}, "min chunk size must not be negative"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"engine": "gzip9000"}, "unknown compression engine 'gzip9000'"),
    ],
)
def test_bad_option_combinations(options: dict[str, object], message: str) -> None:
    opts = BuildOptions(**options)  # type: ignore[arg-type]
    with pytest.raises(BuildError, match=message):
        opts.check()
    sink = PipeWriter()
    with pytest.raises(BuildError, match=message):
        build(io.BytesIO(SAMPLE), sink, opts)  # type: ignore[arg-type]
    assert sink.parts == []  # refused before a byte is written


def test_metadata_in_toc() -> None:
    uid_attrs: dict[str, Any] = {"uid": 1000, "gid": 100, "uname": "alice", "gname": "users"}
    tar = make_tar(
        reg("a", b"a", mode=0o4755, **uid_attrs),
        reg("b", b"b", **uid_attrs),
        reg("c", b"c", uid=1000, gid=100, uname="alice2", gname="users"),
        reg("x", b"x", pax_headers={"SCHILY.xattr.user.note": "hi", "comment": "kept"}),
    )
    blob, result = convert(tar)
    by_name = {e.name: e for e in result.entries}
    a, b, c = by_name["a"], by_name["b"], by_name["c"]
    assert (a.mode, a.uid, a.gid, a.user_name, a.group_name) == (0o4755, 1000, 100, "alice",
                                                                 "users")
    assert (b.user_name, b.group_name) == ("", "")  # unchanged for this uid/gid: omitted
    assert (c.user_name, c.group_name) == ("alice2", "")
    assert a.modtime == "2023-11-14T22:13:20Z"
    assert by_name["x"].xattrs == {"user.note": b"hi"}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tf:
        x = tf.getmember("x")
        assert x.pax_headers["comment"] == "kept"  # headers are copied as they are


def test_long_names_survive() -> None:
    name = "d/" + "n" * 150 + "/" + "f" * 120
    blob, result = convert(make_tar(reg(name, b"long")))
    assert toc_names(result)[-1] == name
    assert tar_files(gzip.decompress(blob))[name] == ("reg", b"long")
    assert open_blob(blob).verify_toc(result.toc_digest).read(name) == b"long"


# --- large inputs ---------------------------------------------------------------------------


def _sparse_tar(path: Path, size: int, marks: dict[int, bytes]) -> None:
    """A tar holding one file ``big`` of ``size`` bytes, all holes except ``marks``."""
    info = tarfile.TarInfo("big")
    info.size, info.mtime = size, MTIME
    header = info.tobuf(tarfile.PAX_FORMAT)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + size + (-size % 512) + 1024)
        for offset, data in marks.items():
            os.pwrite(f.fileno(), data, len(header) + offset)


def test_file_larger_than_4_gib(tmp_path: Path) -> None:
    size = (4 << 30) + 12_345
    boundary = 4 << 30
    marks = {0: b"START", boundary - 3: b"ABCDEF", size - 3: b"END"}
    tar = tmp_path / "big.tar"
    _sparse_tar(tar, size, marks)
    blob = tmp_path / "big.esgz"
    with open(blob, "wb") as out:
        result = build(tar, out, BuildOptions(chunk_size=64 << 20, compression_level=1))
    assert result.uncompressed_size > size
    entries = [e for e in result.entries if e.name == "big"]
    assert entries[0].size == size
    assert len(entries) == -(-size // (64 << 20))
    assert entries[-1].chunk_offset == boundary
    reader = open_blob(str(blob)).verify_toc(result.toc_digest)
    assert reader.stat("big").size == size
    assert reader.read("big", 0, 5) == b"START"
    assert reader.read("big", boundary - 3, 6) == b"ABCDEF"  # across the 4 GiB chunk boundary
    assert reader.read("big", boundary - 10, 7) == b"\x00" * 7
    assert reader.read("big", size - 5, 100) == b"\x00\x00END"
    assert reader.read("big", size, 10) == b""
    with reader.open("big") as f:
        assert f.seek(-3, io.SEEK_END) == size - 3
        assert f.read() == b"END"


_CHILD = """
import sys
from estargz.format import BuildOptions, build
with open(sys.argv[2], "wb") as out:
    result = build(sys.argv[1], out, BuildOptions(compression_level=1))
print(result.uncompressed_size)
"""
_LAUNCHER = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_memory_stays_bounded(tmp_path: Path) -> None:
    """Converting a 1 GiB layer keeps a few members in memory, never the layer."""
    size = 1 << 30
    tar, out = tmp_path / "mem.tar", tmp_path / "mem.esgz"
    _sparse_tar(tar, size, {size - 4: b"tail"})
    # The launcher isolates RUSAGE_CHILDREN from other children of this test process.
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _CHILD, str(tar), str(out)],
        capture_output=True, text=True, check=True, timeout=120,
    )
    uncompressed, max_rss_kib = (int(line) for line in proc.stdout.split())
    assert uncompressed > size
    assert 10_000 < max_rss_kib < 256 * 1024, f"child peak RSS {max_rss_kib} KiB"
    reader = open_blob(str(out)).skip_verify()
    assert reader.read("big", size - 8, 8) == b"\x00" * 4 + b"tail"


@pytest.mark.parametrize("name", sorted(INFLATERS))
def test_every_inflater_reads_the_same_and_refuses_the_same(name: str) -> None:
    """The fastest installed inflater is used: each must behave as zlib does."""
    inflater = INFLATERS[name]
    first, second = gzip.compress(b"first " * 5000, mtime=0), gzip.compress(b"second", mtime=0)
    assert inflate_member(first + second, 1 << 20, "x", inflater) == b"first " * 5000
    assert inflate_member(first, 10, "x", inflater) == b"first firs"  # the limit holds
    bad_crc = bytearray(first)
    bad_crc[-6] ^= 0xFF
    garbage = first[:10] + b"\xff" * 40
    for broken in (bytes(bad_crc), garbage):
        with pytest.raises(FormatError, match="where: gzip member does not inflate"):
            inflate_member(broken, 1 << 20, "where", inflater)
