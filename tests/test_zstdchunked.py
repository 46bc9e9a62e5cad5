"""zstd:chunked blobs: what ours hold, how they are read, and interop with Go's zstdchunked
package both ways (the Go harness, stargz-snapshotter v0.12).

The checks that do not go through our reader use the ``zstd`` command and the zstd library
directly: the whole blob decompresses to the layer's tar, the footer's fields locate the TOC.
"""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import struct
import subprocess

import pytest

from clikit import assert_clear_error
from estargz.errors import (
    BuildError,
    ChunkDigestMismatch,
    FormatError,
    InvalidTOC,
    TOCDigestMismatch,
)
from estargz.format import BuildOptions, BytesSource, build, open_blob
from estargz.format.types import (
    TOC_JSON_DIGEST_ANNOTATION,
    ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
)
from test_go_harness import EXPECTED_FILES, make_tar, run_harness
from test_go_interop import _go_entries, _make_input, _our_entries

LANDMARKS = {".no.prefetch.landmark", ".prefetch.landmark"}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _zstd_d(blob: bytes) -> bytes:
    """``zstd -d`` of a whole blob: the tool, not our code."""
    proc = subprocess.run(["zstd", "-d", "-c", "-q"], input=blob, capture_output=True,
                          check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def rich_tar(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("zstd") / "in.tar"
    make_tar(path)
    return path.read_bytes()


def _build(tar: bytes, **kw: object) -> tuple[bytes, object]:
    out = io.BytesIO()
    result = build(io.BytesIO(tar), out, BuildOptions(compression="zstd", **kw))  # type: ignore[arg-type]
    return out.getvalue(), result


def test_blob_is_the_tar_in_zstd_frames_with_toc_and_footer_skippable(rich_tar: bytes) -> None:
    blob, result = _build(rich_tar, chunk_size=4096)
    raw = _zstd_d(blob)
    assert result.diff_id == _sha(raw)  # type: ignore[attr-defined]
    assert result.uncompressed_size == len(raw)  # type: ignore[attr-defined]
    assert result.digest == _sha(blob) and result.size == len(blob)  # type: ignore[attr-defined]
    assert raw.endswith(b"\0" * 1024)  # a well-formed tar, though its TOC is no tar entry
    assert b"stargz.index.json" not in raw

    # the footer, field by field, and the TOC frame it points at
    magic, length, toc_off, toc_len, toc_raw, kind, tag = struct.unpack("<IIQQQQ8s", blob[-48:])
    assert (magic, length, kind, tag) == (0x184D2A50, 40, 1, b"GnUlInUx")
    assert toc_off + toc_len == len(blob) - 48
    assert struct.unpack("<II", blob[toc_off - 8 : toc_off]) == (0x184D2A50, toc_len)
    toc_json = _zstd_d(blob[toc_off : toc_off + toc_len])
    assert len(toc_json) == toc_raw
    assert result.toc_digest == _sha(toc_json)  # type: ignore[attr-defined]
    assert result.annotations == {  # type: ignore[attr-defined]
        ZSTD_MANIFEST_CHECKSUM_ANNOTATION: _sha(blob[toc_off : toc_off + toc_len]),
        ZSTD_MANIFEST_POSITION_ANNOTATION: f"{toc_off}:{toc_len}:{toc_raw}:1",
    }

    # every chunk is a zstd frame of its own, starting where the TOC says
    toc = json.loads(toc_json)
    size = 0
    checked = 0
    for e in toc["entries"]:
        if e["type"] == "reg":
            size = e.get("size", 0)
        if e.get("chunkDigest"):
            frame = _zstd_d(blob[e["offset"] : toc_off - 8])  # decodes through to the end
            start = e.get("innerOffset", 0)
            length = e.get("chunkSize") or size - e.get("chunkOffset", 0)
            assert _sha(frame[start : start + length]) == e["chunkDigest"]
            checked += 1
    assert checked > len(EXPECTED_FILES)  # big.bin spans several chunks


def test_output_does_not_depend_on_threads(rich_tar: bytes) -> None:
    one, _ = _build(rich_tar, chunk_size=1000, workers=1)
    four, _ = _build(rich_tar, chunk_size=1000, workers=4)
    assert one == four


def test_levels_change_the_frames_not_the_content(rich_tar: bytes) -> None:
    fast, r1 = _build(rich_tar, compression_level=1)
    best, r19 = _build(rich_tar, compression_level=19)
    assert fast != best
    assert r1.diff_id == r19.diff_id and r1.toc_digest != r19.toc_digest  # type: ignore[attr-defined]
    assert r19.compression_level == 19 and r19.engine.startswith("zstd ")  # type: ignore[attr-defined]


def test_reader_verifies_and_reads_every_file(rich_tar: bytes) -> None:
    blob, result = _build(rich_tar, chunk_size=4096)
    unverified = open_blob(blob)
    assert unverified.footer.kind == "zstdchunked"
    reader = unverified.verify_toc(result.toc_digest)  # type: ignore[attr-defined]
    assert {k: v for k, v in reader.verify().items() if k not in LANDMARKS} == EXPECTED_FILES
    with pytest.raises(TOCDigestMismatch):
        unverified.verify_toc("sha256:" + "0" * 64)


def test_annotations_locate_the_toc_and_must_agree_with_the_footer(rich_tar: bytes) -> None:
    blob, result = _build(rich_tar)
    notes = result.annotations  # type: ignore[attr-defined]
    assert open_blob(blob, annotations=notes).toc_digest == result.toc_digest  # type: ignore[attr-defined]
    off, rest = notes[ZSTD_MANIFEST_POSITION_ANNOTATION].split(":", 1)
    wrong = {ZSTD_MANIFEST_POSITION_ANNOTATION: f"{int(off) + 1}:{rest}"}
    with pytest.raises(InvalidTOC, match="annotation puts the TOC at offset"):
        open_blob(blob, annotations=wrong)


def test_a_changed_byte_in_a_chunk_is_never_served(rich_tar: bytes) -> None:
    from backports import zstd

    blob, result = _build(rich_tar, chunk_size=4096)
    entries = result.entries  # type: ignore[attr-defined]
    entry = next(e for e in entries if e.name == "small.txt")
    end = min(e.offset for e in entries if e.offset > entry.offset)
    # a valid frame with one byte of the file changed, padded to the frame's length (a
    # decompressor ignores what follows a frame): same offsets, other content
    content = bytearray(zstd.decompress(blob[entry.offset : end]))
    content[entry.inner_offset] ^= 0x01
    forged = zstd.compress(bytes(content), 19)
    assert len(forged) <= end - entry.offset
    bad = blob[: entry.offset] + forged.ljust(end - entry.offset, b"\0") + blob[end:]
    reader = open_blob(BytesSource(bad)).verify_toc(result.toc_digest)  # type: ignore[attr-defined]
    assert reader.read("owned.txt")  # the other files still read
    with pytest.raises(ChunkDigestMismatch):
        reader.read("small.txt")
    garbage = blob[: entry.offset] + b"\x28\xb5\x2f\xfd" + b"\xff" * 8 + blob[entry.offset + 12:]
    reader = open_blob(BytesSource(garbage)).verify_toc(result.toc_digest)  # type: ignore[attr-defined]
    with pytest.raises(FormatError, match="zstd frame does not decompress"):
        reader.read("small.txt")


def test_options_that_zstdchunked_cannot_have_are_refused() -> None:
    for kw in ({"external_toc": True}, {"external_toc": True, "keep_diff_id": True},
               {"compression_level": 23}, {"engine": "zlib"}):
        with pytest.raises(BuildError):
            BuildOptions(compression="zstd", **kw).check()  # type: ignore[arg-type]
    with pytest.raises(BuildError, match="gzip compression level must be 1-9"):
        BuildOptions(compression_level=19).check()


def test_zstdchunked_and_tar_zst_inputs_convert_to_the_same_layer(rich_tar: bytes) -> None:
    blob, result = _build(rich_tar, chunk_size=4096)
    again, result2 = _build(blob, chunk_size=4096)  # its tar, the TOC skipped
    assert again == blob and result2.toc_digest == result.toc_digest  # type: ignore[attr-defined]
    out = io.BytesIO()
    gz = build(io.BytesIO(blob), out, BuildOptions(chunk_size=4096))
    plain = io.BytesIO()
    ref = build(io.BytesIO(rich_tar), plain, BuildOptions(chunk_size=4096))
    assert gz.toc_digest == ref.toc_digest and out.getvalue() == plain.getvalue()


# -- Go, both ways -----------------------------------------------------------------------------


CASES = [
    pytest.param("rich", "", 4096, False, 3, id="rich-chunk4k"),
    pytest.param("stdlib", "", 4 << 20, False, 3, id="stdlib-default"),
    pytest.param("stdlib", "", 16384, True, 19, id="stdlib-chunk16k-prioritized-level19"),
]


@pytest.mark.parametrize(("kind", "prefix", "chunk", "prioritize", "level"), CASES)
def test_go_reads_our_zstdchunked_blobs(go_harness: pathlib.Path, tmp_path: pathlib.Path,
                                        kind: str, prefix: str, chunk: int, prioritize: bool,
                                        level: int) -> None:
    tar = tmp_path / "in.tar"
    files, prio = _make_input(kind, prefix, tar, parents=False)
    blob = tmp_path / "ours.zst"
    options = BuildOptions(chunk_size=chunk, prioritized_files=tuple(prio) if prioritize else (),
                           compression="zstd", compression_level=level)
    with open(blob, "wb") as f:
        result = build(tar, f, options)

    go = run_harness(go_harness, "read", blob, result.toc_digest)  # verified with our digest

    assert go["toc_digest"] == result.toc_digest
    assert {k: v for k, v in go["files"].items() if k not in LANDMARKS} == files
    ours = open_blob(str(blob)).verify_toc(result.toc_digest)
    assert _go_entries(go) == _our_entries(ours)
    assert _sha(_zstd_d(blob.read_bytes())) == result.diff_id


@pytest.mark.parametrize(("kind", "prefix", "chunk", "prioritize", "level"), CASES)
def test_we_read_go_zstdchunked_blobs(go_harness: pathlib.Path, tmp_path: pathlib.Path,
                                      kind: str, prefix: str, chunk: int, prioritize: bool,
                                      level: int) -> None:
    tar = tmp_path / "in.tar"
    files, prio = _make_input(kind, prefix, tar)
    blob = tmp_path / "go.zst"
    args: list[str | pathlib.Path] = ["build", tar, blob, "-zstdchunked", "-level", str(level),
                                      "-chunk-size", str(chunk)]
    if prioritize:
        prio_file = tmp_path / "prio.txt"
        prio_file.write_text("\n".join(prio) + "\n")
        args += ["-prioritized", prio_file]
    built = run_harness(go_harness, *args)

    data = blob.read_bytes()
    unverified = open_blob(str(blob), annotations=built["annotations"])
    assert unverified.footer.kind == "zstdchunked"
    reader = unverified.verify_toc(built["toc_digest"])  # our TOC digest is Go's
    assert {k: v for k, v in reader.verify().items() if k not in LANDMARKS} == files
    for name, want in files.items():
        content = reader.read(name)
        assert _sha(content) == want
        if len(content) > 10:
            mid = len(content) // 2
            assert reader.read(name, mid - 5, 10) == content[mid - 5 : mid + 5]
    assert _sha(_zstd_d(data)) == built["diff_id"]
    go = run_harness(go_harness, "read", blob, built["toc_digest"])
    assert _go_entries(go) == _our_entries(reader)

    # the annotations Go wrote are the ones ours would write for the same TOC frame
    off, size, raw, kind_ = map(int, built["annotations"][ZSTD_MANIFEST_POSITION_ANNOTATION]
                                .split(":"))
    assert kind_ == 1 and off + size == len(data) - 48 and off == unverified.footer.toc_offset
    assert raw == len(reader.toc_json)
    assert built["annotations"][ZSTD_MANIFEST_CHECKSUM_ANNOTATION] == _sha(data[off:off + size])
    assert TOC_JSON_DIGEST_ANNOTATION not in built["annotations"]

    # and a Go blob converted again by us reads the same files
    again = io.BytesIO()
    result = build(io.BytesIO(data), again, BuildOptions(chunk_size=chunk, compression="zstd"))
    reread = open_blob(again.getvalue()).verify_toc(result.toc_digest).verify()
    assert {k: v for k, v in reread.items() if k not in LANDMARKS} == files


# -- the layer commands and the footer ---------------------------------------------------------


def test_layer_commands(rich_tar: bytes, tmp_path: pathlib.Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    from estargz.cli.main import main

    src, out = tmp_path / "in.tar", tmp_path / "out.zst"
    src.write_bytes(rich_tar)
    assert main(["layer", "convert", "--zstdchunked", "--compression-level", "12", "--json",
                 str(src), str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["compression"], summary["compression_level"]) == ("zstd", 12)
    assert set(summary["annotations"]) == {ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
                                           ZSTD_MANIFEST_POSITION_ANNOTATION}
    assert summary["diff_id"] == _sha(_zstd_d(out.read_bytes()))
    assert main(["layer", "verify", "--toc-digest", summary["toc_digest"], "--json",
                 str(out)]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert {k: v for k, v in files.items() if k not in LANDMARKS} == EXPECTED_FILES
    assert main(["layer", "toc", str(out)]) == 0
    assert _sha(capsys.readouterr().out.encode()[:-1]) == summary["toc_digest"]
    assert main(["layer", "extract", str(out), str(tmp_path / "tree")]) == 0
    assert _sha((tmp_path / "tree" / "small.txt").read_bytes()) == EXPECTED_FILES["small.txt"]
    # gzip levels stop at 9: refused with one line, and nothing written
    assert main(["layer", "convert", "--compression-level", "12", str(src),
                 str(tmp_path / "x")]) == 1
    assert "gzip compression level must be 1-9" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_footer_fields_are_checked() -> None:
    from estargz.errors import InvalidFooter
    from estargz.format.footer import parse_footer, zstdchunked_footer

    good = zstdchunked_footer(1000, 200, 900)
    assert len(good) == 48
    footer = parse_footer(good)
    assert (footer.kind, footer.size, footer.toc_offset, footer.data_end) == (
        "zstdchunked", 48, 1000, 992)
    for at, value, cause in ((40, b"GnUlInUX", "magic GnUlInUx missing"),
                             (32, b"\x02", "manifest type 2"),
                             (4, b"\x29", "no skippable frame of 40 bytes"),
                             (8, b"\x04" + b"\0" * 7, "leaves no room for its frame")):
        bad = bytearray(good)
        bad[at : at + len(value)] = value
        with pytest.raises(InvalidFooter, match=cause):
            parse_footer(bytes(bad))


def _retail(blob: bytes, frame: bytes) -> bytes:
    """``blob`` with its TOC frame replaced by ``frame`` (skippable header and footer made to
    fit), so that only the frame itself is wrong."""
    from estargz.format.footer import zstdchunked_footer

    off, _size, raw = struct.unpack("<QQQ", blob[-40:-16])
    return (blob[: off - 8] + struct.pack("<II", 0x184D2A50, len(frame)) + frame
            + zstdchunked_footer(off, len(frame), raw))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1], "zstd:chunked: no skippable frame of 40 bytes"),
        (lambda b: b[:300], "no eStargz footer"),
        (lambda b: _retail(b, b[struct.unpack("<Q", b[-40:-32])[0]:-48][:-10]),
         "the TOC's zstd frame is truncated"),
        (lambda b: _retail(b, b"\x28\xb5\x2f\xfd" + b"\xff" * 40),
         "zstd frame does not decompress"),
        (lambda b: _retail(b, __import__("backports.zstd").zstd.compress(b"{not json", 3)),
         "TOC is not valid JSON"),
    ],
    ids=["footer-cut", "blob-cut", "toc-frame-cut", "toc-frame-garbage", "toc-not-json"],
)
def test_damaged_blobs_are_refused_in_one_line(rich_tar: bytes, tmp_path: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str],
                                               damage: object, message: str) -> None:
    from estargz.cli.main import main

    blob, _ = _build(rich_tar)
    path = tmp_path / "bad.zst"
    path.write_bytes(damage(blob))  # type: ignore[operator]
    assert main(["layer", "verify", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in assert_clear_error(err), err
