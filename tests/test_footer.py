"""The three footers: exact bytes, round trips, and refusals that say why each shape failed."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile

import pytest

from estargz.errors import InvalidFooter
from estargz.format import (
    BuildOptions,
    Footer,
    build,
    estargz_footer,
    external_footer,
    open_blob,
    parse_footer,
)

GZIP_HEAD = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff"  # FEXTRA, MTIME 0, XFL 0, OS 255
EMPTY_TAIL = b"\x01\x00\x00\xff\xff" + b"\x00" * 8
OFFSETS = [0, 1, 51, 0xDEADBEEF, 1 << 32, (1 << 40) + 7, (1 << 64) - 1]


def legacy_footer(toc_offset: int) -> bytes:
    """A CRFS stargz footer: the 22 payload bytes are the whole extra field."""
    extra = b"%016x" % toc_offset + b"STARGZ"
    return GZIP_HEAD + struct.pack("<H", len(extra)) + extra + EMPTY_TAIL


def test_estargz_footer_exact_bytes() -> None:
    got = estargz_footer(0x1234ABCD)
    want = (
        b"\x1f\x8b\x08\x04"  # magic, deflate, FLG.FEXTRA
        + b"\x00\x00\x00\x00"  # MTIME
        + b"\x00\xff"  # XFL, OS
        + b"\x1a\x00"  # XLEN = 26
        + b"SG\x16\x00"  # subfield 'SG', LE16 22
        + b"000000001234abcdSTARGZ"
        + b"\x01\x00\x00\xff\xff"  # stored, final, empty
        + b"\x00" * 8  # CRC32, ISIZE
    )
    assert got == want
    assert len(got) == 51


def test_external_footer_exact_bytes() -> None:
    got = external_footer()
    assert got == GZIP_HEAD + b"\x15\x00" + b"SG\x11\x00STARGZEXTERNALTOC" + EMPTY_TAIL
    assert len(got) == 46


@pytest.mark.parametrize("offset", OFFSETS)
def test_estargz_footer_round_trip(offset: int) -> None:
    footer = estargz_footer(offset)
    assert len(footer) == 51
    assert parse_footer(footer) == Footer("estargz", 51, offset)


def test_external_footer_round_trip_with_leading_bytes() -> None:
    """A reader passes the last 51 bytes; the 46-byte footer sits at their end."""
    tail = b"\x00" * 5 + external_footer()
    assert parse_footer(tail) == Footer("external", 46, None)
    assert parse_footer(external_footer()) == Footer("external", 46, None)


@pytest.mark.parametrize("offset", OFFSETS)
def test_legacy_footer_round_trip(offset: int) -> None:
    footer = legacy_footer(offset)
    assert len(footer) == 47
    assert parse_footer(b"\xaa" * 4 + footer) == Footer("legacy", 47, offset)
    assert parse_footer(footer) == Footer("legacy", 47, offset)


@pytest.mark.parametrize(
    "footer", [estargz_footer(99), external_footer(), legacy_footer(99)], ids=["51", "46", "47"]
)
def test_footers_are_empty_gzip_members(footer: bytes) -> None:
    assert gzip.decompress(footer) == b""
    # and a footer appended to any gzip stream keeps it a valid gzip stream
    assert gzip.decompress(gzip.compress(b"payload") + footer) == b"payload"


def test_estargz_footer_uppercase_hex_is_read() -> None:
    footer = bytearray(estargz_footer(0xABCDEF))
    footer[16:32] = b"0000000000ABCDEF"
    assert parse_footer(bytes(footer)).toc_offset == 0xABCDEF


def _causes(exc: pytest.ExceptionInfo[InvalidFooter]) -> list[str]:
    text = str(exc.value)
    assert text.startswith("no eStargz footer at the end of the blob (")
    return text[text.index("(") + 1 : -1].split("; ")


def test_garbage_says_the_one_cause_of_every_shape_once() -> None:
    with pytest.raises(InvalidFooter) as exc:
        parse_footer(b"\x00" * 51)
    assert _causes(exc) == ["not a gzip member", "zstd:chunked: no skippable frame of 40 bytes"]


@pytest.mark.parametrize("length", [0, 1, 30, 45])
def test_short_tail_lists_every_size(length: int) -> None:
    with pytest.raises(InvalidFooter) as exc:
        parse_footer(b"\x1f" * length)
    assert _causes(exc) == [
        "blob shorter than a 51-byte footer",
        "blob shorter than a 46-byte footer",
        "blob shorter than a 47-byte footer",
        "blob shorter than a 48-byte footer",
    ]


def test_tail_of_46_bytes_tries_only_the_shapes_that_fit() -> None:
    with pytest.raises(InvalidFooter) as exc:
        parse_footer(b"\x00" * 46)
    assert _causes(exc) == [
        "blob shorter than a 51-byte footer",
        "not a gzip member",
        "blob shorter than a 47-byte footer",
        "blob shorter than a 48-byte footer",
    ]


def _mutate(footer: bytes, index: int, value: bytes) -> bytes:
    out = bytearray(footer)
    out[index : index + len(value)] = value
    return bytes(out)


@pytest.mark.parametrize(
    ("tail", "cause"),
    [
        (_mutate(estargz_footer(5), 3, b"\x0c"), "gzip flags 0x0c, want FEXTRA only"),
        (_mutate(estargz_footer(5), 32, b"STARGX"), "eStargz: magic STARGZ missing"),
        (_mutate(estargz_footer(5), 12, b"SX"), "eStargz: no 'SG' subfield of 22 bytes"),
        (_mutate(estargz_footer(5), 14, b"\x15"), "eStargz: no 'SG' subfield of 22 bytes"),
        (_mutate(estargz_footer(5), 16, b"zz"), "eStargz: TOC offset"),
        (_mutate(estargz_footer(5), 10, b"\xff\x00"), "extra field runs past the footer"),
        (_mutate(estargz_footer(5), 43, b"\x01"), "footer is not an empty gzip member"),
        (_mutate(estargz_footer(5), 38, b"\x07"), "footer body does not inflate"),
        (_mutate(external_footer(), 16, b"STARGZEXTERNALTOX"), "external: no STARGZEXTERNALTOC"),
        (b"\x00" * 4 + _mutate(legacy_footer(5), 28, b"STARGX"), "legacy: extra field is not"),
        (b"\x00" * 4 + _mutate(legacy_footer(5), 12, b"-"), "legacy: TOC offset"),
    ],
    ids=[
        "flags", "magic", "subfield-id", "subfield-len", "hex", "xlen", "crc", "deflate",
        "external-magic", "legacy-magic", "legacy-hex",
    ],
)
def test_each_broken_field_is_named(tail: bytes, cause: str) -> None:
    with pytest.raises(InvalidFooter) as exc:
        parse_footer(tail)
    causes = _causes(exc)
    assert 2 <= len(causes) <= 4 and len(set(causes)) == len(causes)  # each reason once
    assert any(c.startswith(cause) for c in causes), causes


def test_built_blob_footer_points_at_the_toc_member() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("f")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    out = io.BytesIO()
    result = build(io.BytesIO(buf.getvalue()), out, BuildOptions(compression_level=1))
    blob = out.getvalue()
    footer = parse_footer(blob[-51:])
    assert footer.kind == "estargz"
    assert open_blob(blob).footer == footer
    assert footer.toc_offset is not None
    toc_tar = gzip.decompress(blob[footer.toc_offset : -51])
    with tarfile.open(fileobj=io.BytesIO(toc_tar)) as tf:
        first = tf.next()
        assert first is not None and first.name == "stargz.index.json"
        member = tf.extractfile(first)
        assert member is not None
        assert member.read() == result.toc_json


def test_external_toc_blob_ends_with_external_footer() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("empty"))
    out = io.BytesIO()
    build(io.BytesIO(buf.getvalue()), out, BuildOptions(external_toc=True, compression_level=1))
    assert out.getvalue().endswith(external_footer())
    assert parse_footer(out.getvalue()[-51:]) == Footer("external", 46, None)
