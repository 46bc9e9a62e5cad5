"""Broken, truncated and hostile inputs: each is refused with the right error, naming what broke."""

from __future__ import annotations

import gzip
import io
import random
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from estargz.cli.main import main
from estargz.errors import (
    ChunkDigestMismatch,
    EstargzError,
    FormatError,
    InvalidFooter,
    InvalidTar,
    InvalidTOC,
    TOCDigestMismatch,
    UnsafePath,
)
from estargz.format import (
    BlobReader,
    BuildResult,
    build,
    estargz_footer,
    extract,
    open_blob,
    parse_footer,
)
from tarbuild import convert, make_tar, member, with_toc, with_toc_json

RANDOM = random.Random(7).randbytes(20_000)  # incompressible: deflate stores it as it is


LAYER = make_tar(
    member("a/", tarfile.DIRTYPE),
    member("a/file", data=RANDOM),
    member("a/small", data=b"small"),
    member("link", tarfile.LNKTYPE, linkname="a/small"),
)


@pytest.fixture(scope="module")
def good() -> tuple[bytes, BuildResult]:
    # zlib at level 1 stores random data verbatim, so a flipped byte changes content, not syntax
    return convert(LAYER, chunk_size=8192, engine="zlib", compression_level=1)


def entry(entries: list[dict[str, Any]], name: str, kind: str | None = None) -> dict[str, Any]:
    return next(e for e in entries if e["name"] == name and kind in (None, e["type"]))


def first_chunk_of(reader: BlobReader, path: str) -> tuple[int, int]:
    chunk = reader.chunks(path)[0]
    return chunk.offset, chunk.member_end


# --- truncation and corruption of the blob ------------------------------------------------


@pytest.mark.parametrize("cut", [1, 20, 50, 51, 52, 200], ids=lambda n: f"minus{n}")
def test_cut_footer(good: tuple[bytes, BuildResult], cut: int) -> None:
    blob, _ = good
    with pytest.raises(InvalidFooter, match="no eStargz footer at the end of the blob"):
        open_blob(blob[:-cut])


def test_cut_in_the_middle(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    with pytest.raises(InvalidFooter):
        open_blob(blob[: len(blob) // 2])
    with pytest.raises(InvalidFooter, match="blob shorter than a 51-byte footer"):
        open_blob(b"")


def test_cut_in_the_middle_footer_kept(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    toc_offset = parse_footer(blob[-51:]).toc_offset
    short = blob[: len(blob) // 2] + blob[-51:]
    with pytest.raises(InvalidTOC, match=f"TOC offset {toc_offset}, outside the blob"):
        open_blob(short)


def test_footer_pointing_at_a_data_member(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    bad = blob[:-51] + estargz_footer(0)  # the first member: landmark header and payload
    with pytest.raises(InvalidTOC, match=r"TOC at offset 0: first tar entry is "
                       r"'\.no\.prefetch\.landmark', want 'stargz\.index\.json'"):
        open_blob(bad)
    small = open_blob(blob).skip_verify().chunks("a/small")[0].offset  # payload, no header
    bad = blob[:-51] + estargz_footer(small)
    with pytest.raises(InvalidTOC, match=f"TOC at offset {small}: not a tar holding the TOC"):
        open_blob(bad)


def test_footer_pointing_into_a_member(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    toc_offset = parse_footer(blob[-51:]).toc_offset
    assert toc_offset is not None
    bad = blob[:-51] + estargz_footer(toc_offset + 3)
    with pytest.raises(FormatError, match=f"TOC at offset {toc_offset + 3}: gzip member does not"):
        open_blob(bad)


def test_garbage_footer(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    with pytest.raises(InvalidFooter) as exc:
        open_blob(blob[:-51] + b"G" * 51)
    assert str(exc.value).count("not a gzip member") == 1  # three shapes, one reason: said once


class Flipped:
    """The blob with one byte changed, served as a BlobSource (no copy per position)."""

    def __init__(self, blob: bytes, pos: int) -> None:
        self.blob, self.pos = blob, pos

    @property
    def size(self) -> int:
        return len(self.blob)

    def read_at(self, offset: int, size: int) -> bytes:
        data = self.blob[offset : offset + size]
        i = self.pos - offset
        if 0 <= i < len(data):
            data = data[:i] + bytes([data[i] ^ 0x55]) + data[i + 1 :]
        return data


@pytest.fixture(scope="module")
def flips(good: tuple[bytes, BuildResult]) -> dict[int, EstargzError | None]:
    """Every byte of a/file's gzip members flipped in turn: what reading the file then does."""
    blob, result = good
    source = Flipped(blob, -1)
    # the TOC lies after these members, so one parse serves every position; no chunk cache
    unverified = open_blob(source)
    assert unverified.toc_digest == result.toc_digest
    reader = BlobReader(unverified, cache_bytes=0)
    outcomes: dict[int, EstargzError | None] = {}
    for chunk in reader.chunks("a/file"):
        want = RANDOM[chunk.chunk_offset : chunk.chunk_offset + chunk.size]
        for pos in range(chunk.offset, chunk.member_end):
            source.pos = pos
            try:
                data = reader.read("a/file", chunk.chunk_offset, chunk.size)
            except (ChunkDigestMismatch, FormatError) as exc:
                outcomes[pos] = exc
            else:
                assert data == want, f"flipped byte at {pos} served wrong content"
                outcomes[pos] = None  # the byte did not matter (gzip MTIME, unread trailer)
    return outcomes


def test_every_flipped_byte_is_caught_or_harmless(flips: dict[int, EstargzError | None]) -> None:
    """No single corrupt byte in a file's members makes the reader serve wrong content."""
    errors = [exc for exc in flips.values() if exc is not None]
    assert len(errors) > len(flips) // 2
    assert any(isinstance(exc, ChunkDigestMismatch) for exc in errors)
    for exc in errors:
        assert re.match(r"'a/file'(:| at) (chunk at )?file offset \d+ \(blob offset \d+\)",
                        str(exc)), exc


def first_digest_flip(flips: dict[int, EstargzError | None]) -> tuple[int, ChunkDigestMismatch]:
    return next((pos, exc) for pos, exc in flips.items() if isinstance(exc, ChunkDigestMismatch))


def test_flipped_byte_in_a_chunk(good: tuple[bytes, BuildResult],
                                 flips: dict[int, EstargzError | None]) -> None:
    blob, result = good
    pos, _ = first_digest_flip(flips)
    chunk = next(c for c in open_blob(blob).skip_verify().chunks("a/file")
                 if c.offset <= pos < c.member_end)
    broken = open_blob(Flipped(blob, pos)).verify_toc(result.toc_digest)
    pattern = (rf"'a/file': chunk at file offset {chunk.chunk_offset} \(blob offset "
               rf"{chunk.offset}\) has digest sha256:[0-9a-f]{{64}}, TOC says {chunk.digest}")
    with pytest.raises(ChunkDigestMismatch, match=pattern):
        broken.read("a/file")
    with pytest.raises(ChunkDigestMismatch, match=pattern):
        broken.read("a/file", chunk.chunk_offset + chunk.size - 1, 1)
    with pytest.raises(ChunkDigestMismatch, match=pattern):
        broken.verify()
    with pytest.raises(ChunkDigestMismatch, match=pattern), broken.open("a/file") as f:
        f.read()
    # the other chunks and files are still served
    others = [c for c in broken.chunks("a/file") if c != chunk]
    for c in others:
        assert broken.read("a/file", c.chunk_offset, c.size) == RANDOM[c.chunk_offset :][: c.size]
    assert broken.read("link") == b"small"


def test_flipped_byte_through_cli_verify(
    good: tuple[bytes, BuildResult], flips: dict[int, EstargzError | None], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blob, result = good
    pos, exc = first_digest_flip(flips)
    path = tmp_path / "bad.esgz"
    path.write_bytes(Flipped(blob, pos).read_at(0, len(blob)))
    for extra in ([], ["--toc-digest", result.toc_digest], ["--json"]):
        assert main(["layer", "verify", str(path), *extra]) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err == f"estargz: error: {exc}\n"
        assert "'a/file': chunk at file offset" in err


def test_zeroed_member_names_the_file(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    start, end = first_chunk_of(open_blob(blob).skip_verify(), "a/small")
    bad = blob[:start] + b"\x00" * (end - start) + blob[end:]
    reader = open_blob(bad).skip_verify()
    with pytest.raises(FormatError, match=rf"'a/small' at file offset 0 \(blob offset {start}\)"):
        reader.read("a/small")


def test_wrong_toc_digest(good: tuple[bytes, BuildResult]) -> None:
    blob, result = good
    wrong = "sha256:" + "ab" * 32
    with pytest.raises(TOCDigestMismatch) as exc:
        open_blob(blob).verify_toc(wrong)
    assert str(exc.value) == f"TOC digest is {result.toc_digest}, expected {wrong}"


def test_edited_toc_fails_the_digest(good: tuple[bytes, BuildResult]) -> None:
    blob, result = good
    edited = with_toc(blob, lambda es: entry(es, "a/small").update(mode=0o4777))
    unverified = open_blob(edited)
    assert unverified.toc_digest != result.toc_digest
    with pytest.raises(TOCDigestMismatch, match=result.toc_digest):
        unverified.verify_toc(result.toc_digest)


def test_whole_file_digest_is_checked(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    fake = "sha256:" + "0" * 64
    reader = open_blob(with_toc(blob, lambda es: entry(es, "a/file").update(digest=fake)))
    with pytest.raises(ChunkDigestMismatch, match=f"'a/file': content digest sha256:.*{fake}"):
        reader.skip_verify().verify()


def test_wrong_chunk_digest_in_toc(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    fake = "sha256:" + "1" * 64

    def mutate(es: list[dict[str, Any]]) -> None:
        [e for e in es if e["name"] == "a/file"][2]["chunkDigest"] = fake

    reader = open_blob(with_toc(blob, mutate)).skip_verify()
    assert reader.read("a/file", 0, 16384) == RANDOM[:16384]
    with pytest.raises(ChunkDigestMismatch, match=f"'a/file': chunk at file offset 16384 .*{fake}"):
        reader.read("a/file", 16384)


# --- hostile TOCs ---------------------------------------------------------------------------


def test_offset_past_the_end(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    bad = with_toc(blob, lambda es: entry(es, "a/small").update(offset=10**9))
    with pytest.raises(InvalidTOC, match=r"'a/small': chunk offset 1000000000 is past the end"):
        open_blob(bad).skip_verify()


def test_chunk_offset_past_the_end(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good

    def mutate(es: list[dict[str, Any]]) -> None:
        [e for e in es if e["name"] == "a/file"][1]["offset"] = len(blob)

    with pytest.raises(InvalidTOC, match=f"'a/file': chunk offset {len(blob)} is past the end"):
        open_blob(with_toc(blob, mutate)).skip_verify()


def test_inner_offset_past_its_member(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    reader = open_blob(with_toc(blob, lambda es: entry(es, "a/small").update(innerOffset=10**6))
                       ).skip_verify()
    with pytest.raises(FormatError) as exc:
        reader.read("a/small")
    assert type(exc.value) is FormatError
    assert re.search(r"'a/small' at file offset 0 \(blob offset \d+\): innerOffset 1000000 \+ "
                     r"size 5 is past the end of its gzip member", str(exc.value)), exc.value
    with pytest.raises(FormatError, match=r"^'a/small' at file offset 0"):
        reader.read("link")  # a hardlink reads its target's chunks


def test_chunk_above_the_size_limit(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good

    def mutate(es: list[dict[str, Any]]) -> None:
        es[:] = [e for e in es if not (e["name"] == "a/file" and e["type"] == "chunk")]
        entry(es, "a/file").update(size=2 << 30, chunkSize=0)

    with pytest.raises(InvalidTOC, match=r"'a/file': chunk of 2147483648 bytes at file offset 0 "
                       r"exceeds the 1073741824-byte limit"):
        open_blob(with_toc(blob, mutate)).skip_verify()


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (1, r"'a/file': chunks leave a gap or overlap at file offset 8192"),
        (2, r"'a/file': chunks cover 16384 bytes of a 20000-byte file"),
    ],
    ids=["middle", "last"],
)
def test_chunks_not_covering_the_file(good: tuple[bytes, BuildResult], drop: int,
                                      message: str) -> None:
    blob, _ = good

    def mutate(es: list[dict[str, Any]]) -> None:
        es.remove([e for e in es if e["name"] == "a/file"][drop])

    with pytest.raises(InvalidTOC, match=message):
        open_blob(with_toc(blob, mutate)).skip_verify()


def test_overlapping_chunks(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good

    def mutate(es: list[dict[str, Any]]) -> None:
        [e for e in es if e["name"] == "a/file"][1]["chunkOffset"] = 4096

    with pytest.raises(InvalidTOC, match="'a/file': chunks leave a gap or overlap"):
        open_blob(with_toc(blob, mutate)).skip_verify()


def test_chunk_past_the_file_size(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good

    def mutate(es: list[dict[str, Any]]) -> None:
        [e for e in es if e["name"] == "a/file"][2]["chunkOffset"] = 30_000

    with pytest.raises(InvalidTOC, match="'a/file': chunk at 30000 is past the file's size"):
        open_blob(with_toc(blob, mutate)).skip_verify()


def test_chunk_without_digest(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    bad = with_toc(blob, lambda es: entry(es, "a/small").pop("chunkDigest"))
    with pytest.raises(InvalidTOC, match="'a/small': chunk at 0 has no chunkDigest"):
        open_blob(bad).skip_verify()


def test_chunk_entry_without_a_file(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    bad = with_toc(blob, lambda es: es.insert(0, {"name": "x", "type": "chunk", "offset": 1}))
    with pytest.raises(InvalidTOC, match="chunk entry 'x' does not follow a regular file"):
        open_blob(bad).skip_verify()


def test_hardlink_to_missing_target(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    bad = with_toc(blob, lambda es: entry(es, "link").update(linkName="a/nope"))
    with pytest.raises(InvalidTOC, match="'link' is a hardlink to 'a/nope', which is not in"):
        open_blob(bad).skip_verify()


def test_file_used_as_directory(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    bad = with_toc(blob, lambda es: es.append({"name": "a/small/x", "type": "dir"}))
    with pytest.raises(InvalidTOC, match="'a/small' is used as a directory but is a reg"):
        open_blob(bad).skip_verify()


def test_toc_not_json(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    with pytest.raises(InvalidTOC, match="TOC is not valid JSON"):
        open_blob(with_toc_json(blob, b"{not json"))
    with pytest.raises(InvalidTOC, match="TOC is not a JSON object"):
        open_blob(with_toc_json(blob, b"[1, 2]"))


def test_toc_with_bad_field_types(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    bad = with_toc(blob, lambda es: entry(es, "a/small").update(size=-5))
    with pytest.raises(InvalidTOC, match=r"\('a/small'\): field 'size' out of range: -5"):
        open_blob(bad)


def test_external_toc_mismatches(good: tuple[bytes, BuildResult]) -> None:
    blob, _ = good
    ext_blob, ext = convert(LAYER, external_toc=True)
    with pytest.raises(InvalidTOC, match="keeps its TOC outside"):
        open_blob(ext_blob)
    assert ext.toc_blob is not None
    with pytest.raises(InvalidTOC, match="an external TOC was given but the blob carries its own"):
        open_blob(blob, external_toc=ext.toc_blob)
    with pytest.raises(FormatError, match="external TOC: gzip member does not inflate"):
        open_blob(ext_blob, external_toc=b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\xff\xff")
    with pytest.raises(InvalidTOC, match="external TOC: not a tar holding the TOC"):
        open_blob(ext_blob, external_toc=ext.toc_blob[: len(ext.toc_blob) // 2])
    with pytest.raises(InvalidTOC, match="external TOC: first tar entry is 'other'"):
        open_blob(ext_blob, external_toc=gzip.compress(make_tar(member("other", data=b"x"))))


# --- unsafe names at extraction -------------------------------------------------------------


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


SIMPLE = make_tar(member("f", data=b"evil"))


@pytest.mark.parametrize("name", ["../x", "a/../../x", "b/../../../etc", "/x", "/etc/x", "./../x"])
def test_unsafe_names_refused_before_writing(tmp_path: Path, name: str) -> None:
    blob, _ = convert(SIMPLE)
    bad = with_toc(blob, lambda es: entry(es, "f").update(name=name))
    reader = open_blob(bad).skip_verify()
    before = _snapshot(tmp_path)
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(UnsafePath) as exc:
        extract(reader, str(dest))
    assert repr(name) in str(exc.value)
    assert _snapshot(tmp_path) == before  # nothing written, not even the destination


def test_unsafe_hardlink_target(tmp_path: Path) -> None:
    blob, _ = convert(make_tar(member("f", data=b"x"), member("h", tarfile.LNKTYPE, linkname="f")))
    bad = with_toc(blob, lambda es: entry(es, "h").update(linkName="../f"))
    reader = open_blob(bad).skip_verify()
    with pytest.raises(UnsafePath, match=r"hardlink 'h' target '\.\./f' has a '\.\.' component"):
        extract(reader, str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_absolute_names_with_strip_leading_slash(tmp_path: Path) -> None:
    blob, _ = convert(SIMPLE)
    reader = open_blob(with_toc(blob, lambda es: entry(es, "f").update(name="/abs/f"))
                       ).skip_verify()
    with pytest.raises(UnsafePath, match="'/abs/f' is absolute"):
        extract(reader, str(tmp_path / "dest"))
    extract(reader, str(tmp_path / "dest"), strip_leading_slash=True)
    assert (tmp_path / "dest" / "abs" / "f").read_bytes() == b"evil"


def test_symlink_then_file_under_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    blob, _ = convert(SIMPLE)
    for target in (str(outside), "../outside"):

        def mutate(es: list[dict[str, Any]], target: str = target) -> None:
            f = entry(es, "f")
            es.insert(0, {"name": "evil", "type": "symlink", "linkName": target})
            f["name"] = "evil/f"

        with pytest.raises(InvalidTOC, match="'evil' is used as a directory but is a symlink"):
            open_blob(with_toc(blob, mutate)).skip_verify()
    assert list(outside.iterdir()) == []


def test_root_named_dotdot_is_refused() -> None:
    blob, _ = convert(SIMPLE)
    with pytest.raises(InvalidTOC, match=r"root entry '\.\.' is a reg"):
        open_blob(with_toc(blob, lambda es: entry(es, "f").update(name=".."))).skip_verify()


def _plant(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"precious")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "d").symlink_to(outside)
    (dest / "f").symlink_to(outside / "f")
    return outside, dest


def test_planted_symlinks_in_destination_are_replaced(tmp_path: Path) -> None:
    outside, dest = _plant(tmp_path)
    blob, _ = convert(make_tar(member("f", data=b"new"), member("d/f", data=b"evil")))
    extract(open_blob(blob).skip_verify(), str(dest))
    assert sorted(p.name for p in outside.iterdir()) == ["f"]
    assert (outside / "f").read_bytes() == b"precious"
    assert not (dest / "f").is_symlink() and (dest / "f").read_bytes() == b"new"
    assert not (dest / "d").is_symlink() and (dest / "d" / "f").read_bytes() == b"evil"


def test_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    """The directory entry comes after its child: the child's parent is opened O_NOFOLLOW."""
    outside, dest = _plant(tmp_path)
    blob, _ = convert(make_tar(member("d/f", data=b"evil"), member("d/", tarfile.DIRTYPE)))
    with pytest.raises(UnsafePath, match="'d' is not a directory"):
        extract(open_blob(blob).skip_verify(), str(dest))
    assert sorted(p.name for p in outside.iterdir()) == ["f"]
    assert (outside / "f").read_bytes() == b"precious"


# --- bad input to the builder ---------------------------------------------------------------


def test_truncated_tar_payload() -> None:
    cut = LAYER[: 2048 + 5000]
    with pytest.raises(InvalidTar, match=r"'a/file': payload of 20000 bytes at offset \d+ runs "
                       r"past the end of the tar \(7048 bytes\): truncated input"):
        convert(cut)


def _offset_of(name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(LAYER)) as tf:
        return tf.getmember(name).offset


def test_truncated_tar_header() -> None:
    start = _offset_of("a/small")
    with pytest.raises(InvalidTar, match=rf"tar header at offset {start} is cut short \(300 of "
                       r"512 bytes\): truncated input"):
        convert(LAYER[: start + 300])


def test_truncated_tar_padding() -> None:
    start = _offset_of("a/small")
    with pytest.raises(InvalidTar, match=f"malformed tar header after offset {start}: unexpected"):
        convert(LAYER[: start - 100])  # a/file's payload is whole, its padding is not


def test_corrupt_tar_header_mid_archive() -> None:
    start = _offset_of("a/small")
    bad = bytearray(LAYER)
    bad[start + 5] ^= 0x01  # inside the name field: the header checksum no longer matches
    with pytest.raises(InvalidTar, match=f"invalid tar header at offset {start} \\(bad checksum"):
        convert(bytes(bad))


def test_tar_without_end_blocks_is_accepted() -> None:
    """Like Go's archive/tar: a stream that stops cleanly between members is complete."""
    end = _offset_of("link") + 512
    _, result = convert(LAYER[:end])
    assert [e.name for e in result.entries if e.type != "chunk"] == [
        ".no.prefetch.landmark", "a/", "a/file", "a/small", "link",
    ]


def test_truncated_tar_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "cut.tar"
    path.write_bytes(LAYER[:7048])
    with pytest.raises(InvalidTar, match="'a/file': payload of 20000 bytes"):
        build(path, io.BytesIO())


def test_not_a_tar() -> None:
    with pytest.raises(InvalidTar, match="input is not a tar archive"):
        convert(b"this is not a tar archive at all" * 100)


def test_unsupported_entry_type() -> None:
    info = tarfile.TarInfo("weird")
    info.type = b"Z"
    tar = make_tar(member("ok", data=b"x"), (info, b""))
    with pytest.raises(InvalidTar, match=r"'weird': unsupported tar entry \(type b'Z'\)"):
        convert(tar)


def _corrupt_gzip() -> dict[str, bytes]:
    gz = gzip.compress(LAYER)
    flipped = bytearray(gz)
    flipped[len(gz) // 2] ^= 0xFF
    return {
        "truncated": gz[: len(gz) // 2],
        "flipped": bytes(flipped),
        "bad-crc": gz[:-8] + b"\x00" * 8,
        "header-only": gz[:10],
    }


@pytest.mark.parametrize("kind", list(_corrupt_gzip()))
@pytest.mark.parametrize("via", ["stream", "path"])
def test_corrupt_gzip_input(kind: str, via: str, tmp_path: Path) -> None:
    data = _corrupt_gzip()[kind]
    sink = io.BytesIO()
    with pytest.raises(InvalidTar, match="compressed input is corrupt or truncated"):
        if via == "path":
            path = tmp_path / "layer.tar.gz"
            path.write_bytes(data)
            build(path, sink)
        else:
            build(io.BytesIO(data), sink)
    assert sink.getvalue() == b""
