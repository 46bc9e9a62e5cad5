"""The footers a reader must recognise (three of eStargz, one of zstd:chunked), built byte by
byte.

Python's ``gzip`` module cannot write the FEXTRA field, so the bytes are assembled here; the
layouts are spelled out in :mod:`estargz.format.types`. The zstd:chunked footer is a skippable
frame of fixed fields, so it needs no zstd library.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from estargz.errors import InvalidFooter
from estargz.format.types import (
    EXTERNAL_FOOTER_SIZE,
    FOOTER_SIZE,
    LEGACY_FOOTER_SIZE,
    MANIFEST_TYPE_CRFS,
    SKIPPABLE_HEADER_SIZE,
    SKIPPABLE_MAGIC,
    ZSTD_CHUNKED_FOOTER_SIZE,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
)

__all__ = ["Footer", "external_footer", "estargz_footer", "parse_footer", "zstd_toc_hint",
           "zstdchunked_footer"]

_GZIP_HEAD = b"\x1f\x8b\x08\x04" + b"\x00\x00\x00\x00" + b"\x00\xff"  # FEXTRA, MTIME 0, OS 255
_EMPTY_TAIL = b"\x01\x00\x00\xff\xff" + b"\x00" * 8  # stored empty final block, CRC 0, ISIZE 0
_MAGIC = b"STARGZ"
_EXTERNAL_MAGIC = b"STARGZEXTERNALTOC"
_ZSTD_FOOTER = struct.Struct("<4sIQQQQ8s")
_ZSTD_MAGIC = b"GnUlInUx"


@dataclass(frozen=True, slots=True)
class Footer:
    """What a footer says: its kind, its size, and where the TOC member starts (if inside)."""

    kind: str  # "estargz" | "external" | "legacy" | "zstdchunked"
    size: int
    toc_offset: int | None

    @property
    def data_end(self) -> int | None:
        """Where the chunks end, for a footer that locates its TOC: the TOC's member, or the
        skippable frame that holds the TOC's zstd frame."""
        if self.toc_offset is None:
            return None
        return self.toc_offset - (SKIPPABLE_HEADER_SIZE if self.kind == "zstdchunked" else 0)


def _member(extra: bytes) -> bytes:
    return _GZIP_HEAD + struct.pack("<H", len(extra)) + extra + _EMPTY_TAIL


def estargz_footer(toc_offset: int) -> bytes:
    """The 51-byte footer pointing at the gzip member that holds the TOC's tar header."""
    payload = b"%016x" % toc_offset + _MAGIC
    out = _member(b"SG" + struct.pack("<H", len(payload)) + payload)
    assert len(out) == FOOTER_SIZE
    return out


def external_footer() -> bytes:
    """The 46-byte footer of a blob whose TOC is kept outside it."""
    out = _member(b"SG" + struct.pack("<H", len(_EXTERNAL_MAGIC)) + _EXTERNAL_MAGIC)
    assert len(out) == EXTERNAL_FOOTER_SIZE
    return out


def zstdchunked_footer(toc_offset: int, toc_size: int, toc_raw_size: int) -> bytes:
    """The 48-byte zstd:chunked footer: a skippable frame locating the TOC's zstd frame."""
    return _ZSTD_FOOTER.pack(SKIPPABLE_MAGIC, ZSTD_CHUNKED_FOOTER_SIZE - SKIPPABLE_HEADER_SIZE,
                             toc_offset, toc_size, toc_raw_size, MANIFEST_TYPE_CRFS, _ZSTD_MAGIC)


def _extra_field(member: bytes) -> bytes:
    """The FEXTRA bytes of a gzip member that must otherwise be empty; raise if it is not one."""
    if len(member) < 12 or member[:3] != b"\x1f\x8b\x08":
        raise InvalidFooter("not a gzip member")
    if member[3] != 0x04:
        raise InvalidFooter(f"gzip flags {member[3]:#04x}, want FEXTRA only")
    (xlen,) = struct.unpack_from("<H", member, 10)
    extra = member[12 : 12 + xlen]
    if len(extra) != xlen:
        raise InvalidFooter("extra field runs past the footer")
    rest = member[12 + xlen :]
    if len(rest) < 8:
        raise InvalidFooter("footer has no gzip trailer")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        content = inflater.decompress(rest[:-8])
    except zlib.error as exc:
        raise InvalidFooter(f"footer body does not inflate: {exc}") from exc
    if content or not inflater.eof or inflater.unused_data or rest[-8:] != b"\x00" * 8:
        raise InvalidFooter("footer is not an empty gzip member")
    return extra


def _parse_offset(payload: bytes, what: str) -> int:
    digits = payload[:16]
    try:
        text = digits.decode("ascii")
        if any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(text)
        return int(text, 16)
    except ValueError as exc:
        raise InvalidFooter(f"{what}: TOC offset {digits!r} is not 16 hex digits") from exc


def _try_estargz(tail: bytes) -> Footer:
    extra = _extra_field(tail[-FOOTER_SIZE:])
    if len(extra) != 26 or extra[:2] != b"SG" or struct.unpack_from("<H", extra, 2)[0] != 22:
        raise InvalidFooter("eStargz: no 'SG' subfield of 22 bytes")
    if extra[20:] != _MAGIC:
        raise InvalidFooter("eStargz: magic STARGZ missing")
    return Footer("estargz", FOOTER_SIZE, _parse_offset(extra[4:20], "eStargz"))


def _try_external(tail: bytes) -> Footer:
    extra = _extra_field(tail[-EXTERNAL_FOOTER_SIZE:])
    if extra != b"SG" + struct.pack("<H", len(_EXTERNAL_MAGIC)) + _EXTERNAL_MAGIC:
        raise InvalidFooter("external: no STARGZEXTERNALTOC subfield")
    return Footer("external", EXTERNAL_FOOTER_SIZE, None)


def _try_legacy(tail: bytes) -> Footer:
    extra = _extra_field(tail[-LEGACY_FOOTER_SIZE:])
    if len(extra) != 22 or extra[16:] != _MAGIC:
        raise InvalidFooter("legacy: extra field is not 16 hex digits + STARGZ")
    return Footer("legacy", LEGACY_FOOTER_SIZE, _parse_offset(extra[:16], "legacy"))


def _try_zstdchunked(tail: bytes) -> Footer:
    magic, length, offset, _size, _raw, kind, footer_magic = _ZSTD_FOOTER.unpack(
        tail[-ZSTD_CHUNKED_FOOTER_SIZE:])
    if magic != SKIPPABLE_MAGIC or length != _ZSTD_FOOTER.size - SKIPPABLE_HEADER_SIZE:
        raise InvalidFooter("zstd:chunked: no skippable frame of 40 bytes")
    if footer_magic != _ZSTD_MAGIC:
        raise InvalidFooter("zstd:chunked: magic GnUlInUx missing")
    if kind != MANIFEST_TYPE_CRFS:
        raise InvalidFooter(f"zstd:chunked: manifest type {kind}, want {MANIFEST_TYPE_CRFS}")
    if offset < SKIPPABLE_HEADER_SIZE:
        raise InvalidFooter(f"zstd:chunked: TOC offset {offset} leaves no room for its frame")
    return Footer("zstdchunked", ZSTD_CHUNKED_FOOTER_SIZE, offset)


def zstd_toc_hint(annotations: Mapping[str, str]) -> int:
    """Where a layer's zstd:chunked manifest-position annotation puts the TOC frame (0: no
    usable annotation; the footer is then the only guide, as for the Go snapshotter)."""
    parts = annotations.get(ZSTD_MANIFEST_POSITION_ANNOTATION, "").split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return 0
    return int(parts[0])


def parse_footer(tail: bytes) -> Footer:
    """Recognise the footer at the end of ``tail`` (the last 51 bytes of a blob, or fewer).

    Every shape is tried; when none fits, the error lists why (each reason once).
    """
    causes: list[str] = []
    for size, attempt in (
        (FOOTER_SIZE, _try_estargz),
        (EXTERNAL_FOOTER_SIZE, _try_external),
        (LEGACY_FOOTER_SIZE, _try_legacy),
        (ZSTD_CHUNKED_FOOTER_SIZE, _try_zstdchunked),
    ):
        if len(tail) < size:
            causes.append(f"blob shorter than a {size}-byte footer")
            continue
        try:
            return attempt(tail)
        except InvalidFooter as exc:
            causes.append(str(exc))
    unique = dict.fromkeys(causes)  # three shapes often fail for one reason: say it once
    raise InvalidFooter("no eStargz footer at the end of the blob (" + "; ".join(unique) + ")")
