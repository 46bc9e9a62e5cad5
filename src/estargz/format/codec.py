"""The two ways a blob's chunks are compressed: gzip members (eStargz) or zstd frames
(zstd:chunked). The writer and the reader only ever ask a :class:`Codec`, so neither knows
which one it is handling; the zstd library is imported only when zstd is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from estargz.errors import BuildError
from estargz.format.compression import get_engine, inflate_member

__all__ = [
    "COMPRESSIONS",
    "Codec",
    "Decompress",
    "decompressor",
    "default_level",
    "get_codec",
    "level_range",
]

Buffer = bytes | bytearray | memoryview
Decompress = Callable[[bytes | memoryview, int, str], bytes]
"""``(data, limit, where)``: at most ``limit`` bytes of the member or frame ``data`` starts
with; ``where`` names it in errors."""

COMPRESSIONS = ("gzip", "zstd")
_DEFAULT_LEVEL = {"gzip": 9, "zstd": 3}  # as upstream: gzip.BestCompression, zstd's default
_LEVELS = {"gzip": range(1, 10), "zstd": range(1, 23)}


@dataclass(frozen=True, slots=True)
class Codec:
    """Compresses one member or frame at a fixed level; ``label`` says how to reproduce it."""

    name: str
    label: str
    level: int
    compress: Callable[[Buffer], bytes]


def default_level(compression: str) -> int:
    return _DEFAULT_LEVEL[compression]


def level_range(compression: str) -> range:
    return _LEVELS[compression]


def get_codec(compression: str, level: int | None = None, engine: str | None = None) -> Codec:
    """The codec for ``compression`` ("gzip" or "zstd") at ``level`` (default: its default).

    ``engine`` picks the deflate engine for gzip; zstd has one library.
    """
    if compression not in _LEVELS:
        raise BuildError(f"unknown compression {compression!r}; want one of "
                         f"{', '.join(COMPRESSIONS)}")
    lvl = _DEFAULT_LEVEL[compression] if level is None else level
    levels = _LEVELS[compression]
    if lvl not in levels:
        raise BuildError(f"{compression} compression level must be {levels.start}-"
                         f"{levels.stop - 1}, got {lvl}")
    if compression == "zstd":
        if engine is not None:
            raise BuildError("a deflate engine applies to gzip only, not to zstd:chunked")
        from estargz.format import zstdchunked

        def zstd_frame(data: Buffer) -> bytes:
            return zstdchunked.compress_frame(data, lvl)

        return Codec("zstd", zstdchunked.label(), lvl, zstd_frame)
    try:
        deflate = get_engine(engine)
    except ValueError as exc:
        raise BuildError(str(exc)) from None

    def gzip_member(data: Buffer) -> bytes:
        return deflate.gzip_member(data, lvl)

    return Codec("gzip", deflate.label, lvl, gzip_member)


def decompressor(footer_kind: str) -> Decompress:
    """How the chunks of a blob with this kind of footer are decompressed."""
    if footer_kind == "zstdchunked":
        from estargz.format.zstdchunked import decompress_frame

        return decompress_frame
    return _inflate


def _inflate(data: bytes | memoryview, limit: int, where: str) -> bytes:
    return inflate_member(data, limit, where)
