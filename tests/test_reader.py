"""The reader: lookups, listings, hardlinks, and verified reads at every offset of every layout."""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from estargz.errors import InvalidTOC, NotFound, TOCDigestMismatch
from estargz.format import (
    BlobReader,
    BuildResult,
    BytesSource,
    FileSource,
    Footer,
    TOCEntry,
    UnverifiedBlob,
    encode_toc,
    open_blob,
    read_toc,
)
from tarbuild import convert, make_tar, member, with_toc_json

BLOB_DATA = bytes(range(50))  # 50 bytes: with chunk size 7, 8 chunks, the last of 1 byte


LAYER = make_tar(
    member("./", tarfile.DIRTYPE),
    member("./etc/", tarfile.DIRTYPE),
    member("./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", uid=0, gid=0, uname="root",
           gname="root", pax_headers={"SCHILY.xattr.user.tag": "v1"}),
    member("./usr/lib/x/libz.so", data=b"\x7fELF" + b"z" * 100, mode=0o755),
    member("./data/", tarfile.DIRTYPE, mode=0o700),
    member("./data/blob", data=BLOB_DATA, uid=1000, gid=1000, uname="u", gname="g"),
    member("./data/hl1", tarfile.LNKTYPE, linkname="./data/blob"),
    member("./data/hl2", tarfile.LNKTYPE, linkname="data/blob"),
    member("./data/sym", tarfile.SYMTYPE, linkname="blob"),
    member("./data/small", data=b"0123456789abcdef"),
    member("./dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
    member("./run/fifo", tarfile.FIFOTYPE, mode=0o600),
    member("./late/child", data=b"child"),
    member("./late/", tarfile.DIRTYPE, mode=0o710),  # explicit dir after its child
    member("./empty", data=b""),
)
FILES = {
    "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
    "usr/lib/x/libz.so": b"\x7fELF" + b"z" * 100,
    "data/blob": BLOB_DATA,
    "data/small": b"0123456789abcdef",
    "late/child": b"child",
    "empty": b"",
    ".no.prefetch.landmark": b"\x0f",
}
LAYOUTS = {
    "normal": {"chunk_size": 7},
    "min-chunk": {"chunk_size": 7, "min_chunk_size": 1 << 16},
    "min-chunk-small": {"chunk_size": 7, "min_chunk_size": 1000},
    "one-chunk": {},
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def built(request: pytest.FixtureRequest) -> tuple[bytes, BuildResult]:
    return convert(LAYER, **LAYOUTS[request.param])


@pytest.fixture
def reader(built: tuple[bytes, BuildResult]) -> BlobReader:
    blob, result = built
    return open_blob(blob).verify_toc(result.toc_digest)


# --- metadata -------------------------------------------------------------------------------


def test_lookup_cleans_names(reader: BlobReader) -> None:
    for path in ("etc/passwd", "/etc/passwd", "./etc/passwd", "etc//passwd", "etc/passwd/"):
        info = reader.lookup(path)
        assert info is not None and info.name == "etc/passwd", path
    assert reader.lookup("etc/nope") is None
    assert reader.lookup("") is not None and reader.stat("/").type == "dir"


def test_stat_missing_raises_not_found(reader: BlobReader) -> None:
    with pytest.raises(NotFound, match="'etc/shadow': no such entry"):
        reader.stat("etc/shadow")
    with pytest.raises(KeyError):  # NotFound is a KeyError too
        reader.stat("missing")


def test_file_info_fields(reader: BlobReader) -> None:
    passwd = reader.stat("etc/passwd")
    assert (passwd.type, passwd.size, passwd.mode) == ("reg", len(FILES["etc/passwd"]), 0o644)
    assert passwd.modtime == "2023-11-14T22:13:20Z"
    assert passwd.xattrs == {"user.tag": b"v1"}
    assert (passwd.user_name, passwd.group_name) == ("root", "root")
    assert passwd.digest == "sha256:" + hashlib.sha256(FILES["etc/passwd"]).hexdigest()
    assert passwd.hardlink_to is None
    blob = reader.stat("data/blob")
    assert (blob.uid, blob.gid, blob.user_name, blob.group_name) == (1000, 1000, "u", "g")
    dev = reader.stat("dev/null")
    assert (dev.type, dev.dev_major, dev.dev_minor, dev.mode) == ("char", 1, 3, 0o666)
    fifo = reader.stat("run/fifo")
    assert (fifo.type, fifo.mode) == ("fifo", 0o600)
    sym = reader.stat("data/sym")
    assert (sym.type, sym.link_name) == ("symlink", "blob")


def test_listdir(reader: BlobReader) -> None:
    assert reader.listdir() == [
        ".no.prefetch.landmark", "data", "dev", "empty", "etc", "late", "run", "usr",
    ]
    assert reader.listdir("data") == ["blob", "hl1", "hl2", "small", "sym"]
    assert reader.listdir("/usr/lib") == ["x"]
    assert reader.listdir("late") == ["child"]
    with pytest.raises(NotFound, match="not a directory"):
        reader.listdir("etc/passwd")
    with pytest.raises(NotFound):
        reader.listdir("nope")


def test_implicit_parent_directories(reader: BlobReader) -> None:
    for path in ("usr", "usr/lib", "usr/lib/x", "dev", "run"):
        info = reader.stat(path)
        assert (info.type, info.mode, info.modtime) == ("dir", 0o755, ""), path
    late = reader.stat("late")  # explicit entry after its child: metadata from the entry
    assert (late.type, late.mode) == ("dir", 0o710)
    assert reader.stat("data").mode == 0o700


def test_walk_lists_implicit_dirs_first_then_toc_order(reader: BlobReader) -> None:
    names = [info.name for info in reader.walk()]
    implicit = ["usr", "usr/lib", "usr/lib/x", "dev", "run"]
    assert names[: len(implicit)] == implicit
    assert names[len(implicit) :] == [
        ".no.prefetch.landmark", "", "etc", "etc/passwd", "usr/lib/x/libz.so", "data",
        "data/blob", "data/hl1", "data/hl2", "data/sym", "data/small", "dev/null", "run/fifo",
        "late/child", "late", "empty",
    ]
    assert len(names) == len(set(names))


def test_hardlinks_resolve_to_their_target(reader: BlobReader) -> None:
    for path in ("data/hl1", "data/hl2"):
        info = reader.stat(path)
        assert info.type == "reg" and info.hardlink_to == "data/blob"
        assert info.size == len(BLOB_DATA)
        assert info.digest == reader.stat("data/blob").digest
        assert reader.read(path) == BLOB_DATA
        assert reader.chunks(path) == reader.chunks("data/blob")
    assert reader.stat("data/blob").nlink == 3
    assert reader.stat("data/hl1").nlink == 3
    assert reader.stat("etc/passwd").nlink == 1


def test_directory_nlink(reader: BlobReader) -> None:
    assert reader.stat("data").nlink == 2
    assert reader.stat("usr").nlink == 3
    assert reader.stat("").nlink == 2 + 6  # data dev etc late run usr


# --- content --------------------------------------------------------------------------------


def test_read_every_offset_and_size(reader: BlobReader) -> None:
    n = len(BLOB_DATA)
    for path in ("data/blob", "data/hl1"):
        for offset in range(n + 2):
            for size in (-1, 0, 1, 2, 6, 7, 8, 13, 14, 15, 21, n, n + 5):
                want = BLOB_DATA[offset:] if size < 0 else BLOB_DATA[offset : offset + size]
                assert reader.read(path, offset, size) == want, (path, offset, size)


def test_read_all_files(reader: BlobReader) -> None:
    for path, data in FILES.items():
        assert reader.read(path) == data
        assert reader.read_file(path) == data


def test_chunks_describe_the_file(reader: BlobReader, built: tuple[bytes, BuildResult]) -> None:
    blob, result = built
    chunks = reader.chunks("data/blob")
    chunked = any(e.chunk_size for e in result.entries)
    assert [c.chunk_offset for c in chunks] == (list(range(0, 50, 7)) if chunked else [0])
    assert sum(c.size for c in chunks) == len(BLOB_DATA)
    for c in chunks:
        piece = BLOB_DATA[c.chunk_offset : c.chunk_offset + c.size]
        assert c.digest == "sha256:" + hashlib.sha256(piece).hexdigest()
        assert 0 < c.offset < c.member_end <= len(blob) - 51
        assert reader.read_chunk("data/blob", c) == piece


def test_min_chunk_size_layout_uses_inner_offsets(reader: BlobReader,
                                                  built: tuple[bytes, BuildResult]) -> None:
    _, result = built
    chunks = reader.chunks("data/blob")
    if any(e.inner_offset for e in result.entries):
        assert len({c.offset for c in chunks}) < len(chunks)  # chunks share gzip members
        assert any(c.inner_offset > 0 for c in chunks)
    else:
        assert all(c.inner_offset == 0 for c in chunks)
    assert reader.read("data/blob", 5, 40) == BLOB_DATA[5:45]


def test_not_regular_files_are_not_read(reader: BlobReader) -> None:
    for path in ("data", "data/sym", "run/fifo", "dev/null"):
        with pytest.raises(NotFound, match="not a regular file"):
            reader.read(path)
        with pytest.raises(NotFound):
            reader.open(path)
    with pytest.raises(ValueError, match="negative offset"):
        reader.read("data/blob", -1)
    assert reader.chunks("empty") == []


def test_open_seek_read(reader: BlobReader) -> None:
    with reader.open("data/blob") as f:
        assert f.seekable() and f.readable()
        assert f.read(3) == BLOB_DATA[:3]
        assert f.tell() == 3
        assert f.seek(20) == 20
        assert f.read(10) == BLOB_DATA[20:30]
        assert f.seek(-4, io.SEEK_CUR) == 26
        assert f.read(1) == BLOB_DATA[26:27]
        assert f.seek(-5, io.SEEK_END) == 45
        assert f.read() == BLOB_DATA[45:]
        assert f.read() == b""
        assert f.seek(100) == 100
        assert f.read(5) == b""
        f.seek(0)
        buf = bytearray(60)
        assert f.readinto(buf) == 50
        assert bytes(buf[:50]) == BLOB_DATA
    with reader.open("/data/hl2") as f:
        assert f.read() == BLOB_DATA
    with reader.open("empty") as f:
        assert f.read() == b""


def test_verify_returns_file_digests(reader: BlobReader) -> None:
    assert reader.verify() == {
        name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in FILES.items()
    }


def test_concurrent_reads(reader: BlobReader) -> None:
    jobs = [(path, off) for path in FILES for off in range(0, 20, 3)] * 4
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: reader.read(job[0], job[1], 9), jobs))
    assert got == [FILES[path][off : off + 9] for path, off in jobs]


def test_reader_exposes_toc(reader: BlobReader, built: tuple[bytes, BuildResult]) -> None:
    _, result = built
    assert reader.toc_json == result.toc_json
    assert reader.toc_digest == result.toc_digest
    assert reader.entries == result.entries
    assert reader.prefetch_size == 0
    assert reader.footer.kind == "estargz"


# --- ways to open ---------------------------------------------------------------------------


def test_open_from_path_bytes_and_sources(tmp_path: Path) -> None:
    blob, result = convert(LAYER, chunk_size=7)
    path = tmp_path / "layer.esgz"
    path.write_bytes(blob)
    with FileSource(path) as fsrc:
        sources: list[object] = [str(path), blob, BytesSource(blob), fsrc]
        for src in sources:
            unverified = open_blob(src)  # type: ignore[arg-type]
            assert unverified.toc_digest == result.toc_digest
            assert unverified.toc_json == result.toc_json
            assert unverified.entries == result.entries
            assert unverified.verify_toc(result.toc_digest).read("data/blob") == BLOB_DATA


def test_skip_verify_still_checks_chunks() -> None:
    blob, _ = convert(LAYER)
    reader = open_blob(blob).skip_verify()
    assert reader.read("etc/passwd") == FILES["etc/passwd"]
    with pytest.raises(TOCDigestMismatch):
        open_blob(blob).verify_toc("sha256:" + "0" * 64)


def test_prefetch_size_with_prioritized_files() -> None:
    blob, result = convert(LAYER, prioritized_files=("data/small",))
    reader = open_blob(blob).verify_toc(result.toc_digest)
    landmark = next(e for e in result.entries if e.name == ".prefetch.landmark")
    assert reader.prefetch_size == landmark.offset > 0
    assert reader.read("data/small") == FILES["data/small"]


def legacy_footer(toc_offset: int) -> bytes:
    extra = b"%016x" % toc_offset + b"STARGZ"
    head = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff" + struct.pack("<H", len(extra))
    return head + extra + b"\x01\x00\x00\xff\xff" + b"\x00" * 8


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_legacy_footer_blob_reads(layout: str) -> None:
    blob, result = convert(LAYER, **LAYOUTS[layout])
    toc_offset = open_blob(blob).footer.toc_offset
    assert toc_offset is not None
    legacy = blob[:-51] + legacy_footer(toc_offset)
    unverified = open_blob(legacy)
    assert (unverified.footer.kind, unverified.footer.size) == ("legacy", 47)
    assert unverified.footer.toc_offset == toc_offset
    reader = unverified.verify_toc(result.toc_digest)
    assert reader.verify() == open_blob(blob).verify_toc(result.toc_digest).verify()
    assert reader.read("data/blob", 6, 9) == BLOB_DATA[6:15]


def test_external_toc_blob_reads() -> None:
    blob, result = convert(LAYER, chunk_size=7, external_toc=True)
    unverified = open_blob(blob, external_toc=result.toc_blob)
    assert (unverified.footer.kind, unverified.footer.size) == ("external", 46)
    reader = unverified.verify_toc(result.toc_digest)
    assert reader.read("data/blob") == BLOB_DATA
    assert reader.read("usr/lib/x/libz.so") == FILES["usr/lib/x/libz.so"]


def test_names_as_stored_without_dot_slash() -> None:
    tar = make_tar(member("/abs/file", data=b"abs"), member("plain/dir/", tarfile.DIRTYPE))
    blob, result = convert(tar)
    assert [e.name for e in result.entries][1:] == ["/abs/file", "plain/dir/"]
    reader = open_blob(blob).verify_toc(result.toc_digest)
    assert reader.stat("abs/file").name == "abs/file"
    assert reader.read("/abs/file") == b"abs"
    assert reader.stat("plain/dir").name == "plain/dir"


# --- the index, from TOCs written by hand ---------------------------------------------------


def index(entries: list[TOCEntry], data_end: int = 1000) -> BlobReader:
    """A reader over a TOC alone: indexing reads no content."""
    footer = Footer("estargz", 51, data_end)
    blob = UnverifiedBlob(BytesSource(bytes(data_end)), footer, encode_toc(entries), data_end)
    return blob.skip_verify()


def test_names_and_hardlinks_without_file_infos(reader: BlobReader) -> None:
    infos = list(reader.walk())
    assert reader.names() == [info.name for info in infos]
    assert sorted(reader.hardlinks()) == ["data/hl1", "data/hl2"]


def test_a_path_given_twice_keeps_its_last_entry_in_its_place() -> None:
    r = index([
        TOCEntry(name="a/", type="dir"),
        TOCEntry(name="a/b/", type="dir"),
        TOCEntry(name="f", type="reg"),
        TOCEntry(name="a/b", type="reg"),  # a directory becomes a file
        TOCEntry(name="c/d", type="symlink", link_name="x"),
        TOCEntry(name="f", type="dir"),  # a file becomes a directory
        TOCEntry(name="f/g", type="hardlink", link_name="a/b"),
    ])
    assert r.names() == ["c", "a", "a/b", "c/d", "f", "f/g"]
    assert {i.name: (i.type, i.nlink, i.hardlink_to) for i in r.walk()} == {
        "c": ("dir", 2, None), "a": ("dir", 2, None), "a/b": ("reg", 2, None),
        "c/d": ("symlink", 1, None), "f": ("dir", 2, None), "f/g": ("reg", 2, "a/b"),
    }
    assert r.stat("").nlink == 2 + 3
    assert r.listdir("") == ["a", "c", "f"] and r.listdir("a") == ["b"]


def test_all_chunks_come_in_blob_order_whatever_the_toc_order() -> None:
    r = index([
        TOCEntry(name="b", type="reg", size=3, offset=200, chunk_digest="sha256:b"),
        TOCEntry(name="a", type="reg", size=3, offset=100, chunk_digest="sha256:a"),
    ], data_end=300)
    assert [(n, c.offset, c.member_end) for n, c in r.all_chunks()] == [
        ("a", 100, 200), ("b", 200, 300)]
    r = index([  # and in TOC order, members shared through inner offsets
        TOCEntry(name="a", type="reg", size=3, offset=100, chunk_digest="sha256:a"),
        TOCEntry(name="b", type="reg", size=3, offset=100, inner_offset=3, chunk_digest="sha256:b"),
        TOCEntry(name="c", type="reg", size=3, offset=200, chunk_digest="sha256:c"),
    ], data_end=300)
    assert [(n, c.offset, c.inner_offset, c.member_end) for n, c in r.all_chunks()] == [
        ("a", 100, 0, 200), ("b", 100, 3, 200), ("c", 200, 0, 300)]


def test_chunks_given_out_of_file_order_are_put_in_order() -> None:
    r = index([
        TOCEntry(name="f", type="reg", size=10, offset=100, chunk_offset=5, chunk_size=5,
                 chunk_digest="sha256:2"),
        TOCEntry(name="f", type="chunk", offset=200, chunk_size=5, chunk_digest="sha256:1"),
    ], data_end=300)
    assert [(c.chunk_offset, c.offset, c.digest) for c in r.chunks("f")] == [
        (0, 200, "sha256:1"), (5, 100, "sha256:2")]


def test_prefetch_size_is_looked_up_once_per_entries_list() -> None:
    entries = [TOCEntry(name="a", type="reg", size=1, offset=10, chunk_digest="sha256:a"),
               TOCEntry(name="./.prefetch.landmark", type="reg", size=1, offset=50,
                        chunk_digest="sha256:l")]
    blob = UnverifiedBlob(BytesSource(bytes(100)), Footer("estargz", 51, 100),
                          encode_toc(entries), 100)
    assert blob.prefetch_size == 50
    assert blob.skip_verify().prefetch_size == 50
    blob.entries = blob.entries[:1]
    assert blob.prefetch_size == 0


def test_read_toc_checks_nothing_but_the_framing() -> None:
    """read_toc gives the TOC bytes and their digest without parsing them (rpull compares the
    digest with the manifest and leaves parsing to the layer server); decode() parses."""
    blob, result = convert(make_tar(member("a", data=b"x" * 100)))
    raw = read_toc(blob)
    assert raw.toc_digest == result.toc_digest == open_blob(blob).toc_digest
    assert raw.toc_json == open_blob(blob).toc_json
    assert raw.decode().verify_toc(result.toc_digest).read("a") == b"x" * 100

    broken = with_toc_json(blob, b'{"version": 1, "entries": [{"name": 7}]}')
    raw = read_toc(broken)  # framing is fine: the bytes and their digest are there
    assert raw.toc_digest == "sha256:" + hashlib.sha256(raw.toc_json).hexdigest()
    with pytest.raises(InvalidTOC, match="name"):
        raw.decode()
    with pytest.raises(InvalidTOC, match="name"):
        open_blob(broken)
