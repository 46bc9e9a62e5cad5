"""zstd:chunked: the eStargz layout with zstd frames instead of gzip members.

The blob is a sequence of zstd frames, each starting where the TOC says a chunk (or a run of
headers) starts, so that ``zstd -d`` of the whole blob is the layer's tar. The TOC JSON, the
same document as eStargz's, is one zstd frame wrapped in a skippable frame; the blob ends with
a second skippable frame holding the footer (its layout is in :mod:`estargz.format.types`).
Decompressors skip skippable frames, so neither the TOC nor the footer shows in the tar (and
the TOC is no tar entry here). The same positions travel in two layer annotations, which
containers/storage reads instead of the footer.
"""

from __future__ import annotations

import io
import shutil
import struct
import sys
import threading
from dataclasses import dataclass
from typing import IO

from estargz.digest import sha256_digest
from estargz.errors import FormatError, InvalidTar, InvalidTOC
from estargz.format.footer import zstdchunked_footer
from estargz.format.types import (
    MANIFEST_TYPE_CRFS,
    MAX_TOC_SIZE,
    SKIPPABLE_HEADER_SIZE,
    SKIPPABLE_MAGIC,
    ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
)

if sys.version_info >= (3, 14):  # pragma: no cover - the standard library from 3.14 on
    from compression import zstd
else:
    from backports import zstd

__all__ = [
    "ZstdTail",
    "compress_frame",
    "copy_decompressed",
    "decompress_frame",
    "label",
    "skippable_frame",
    "toc_json",
    "toc_tail",
    "zstd_magic",
]

_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"


def label() -> str:
    """The library and its version, reported with every blob (frames differ between them)."""
    return f"zstd {zstd.zstd_version}"


def zstd_magic(head: bytes) -> bool:
    """Whether ``head`` starts a zstd frame (a compressed tar, or a zstd:chunked blob)."""
    return head[:4] == _FRAME_MAGIC


_local = threading.local()


def compress_frame(data: bytes | bytearray | memoryview, level: int) -> bytes:
    """One complete zstd frame holding ``data`` (its size in the header); releases the GIL.

    Each thread keeps one compressor per level: setting up the level's tables costs more than
    compressing a small file.
    """
    compressors: dict[int, zstd.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    comp = compressors.get(level)
    if comp is None:
        comp = compressors[level] = zstd.ZstdCompressor(level)
    comp.set_pledged_input_size(len(data))
    return comp.compress(data, zstd.ZstdCompressor.FLUSH_FRAME)


def decompress_frame(data: bytes | memoryview, limit: int, where: str) -> bytes:
    """The first ``limit`` bytes (at most) that the zstd frame at the start of ``data`` holds.

    The limit keeps a hostile frame from expanding without bound, as for gzip members.
    """
    if limit <= 0:
        return b""
    try:
        return zstd.ZstdDecompressor().decompress(data, limit)
    except zstd.ZstdError as exc:
        raise FormatError(f"{where}: zstd frame does not decompress: {exc}") from exc


def copy_decompressed(src: io.RawIOBase | IO[bytes], dst: IO[bytes]) -> None:
    """Decompress every frame of ``src`` into ``dst`` (skippable frames give nothing)."""
    try:
        with zstd.ZstdFile(src, mode="rb") as zf:
            shutil.copyfileobj(zf, dst, 1 << 20)
    except (zstd.ZstdError, EOFError) as exc:
        raise InvalidTar(f"zstd input is corrupt or truncated: {exc}") from exc


def skippable_frame(payload: bytes) -> bytes:
    return SKIPPABLE_MAGIC + struct.pack("<I", len(payload)) + payload


@dataclass(frozen=True, slots=True)
class ZstdTail:
    """The bytes that end a blob (TOC frame and footer) and the annotations that locate them."""

    data: bytes
    annotations: dict[str, str]


def toc_tail(toc_json: bytes, offset: int, level: int) -> ZstdTail:
    """The TOC in a skippable frame, then the footer, for a blob whose frames end at ``offset``."""
    compressed = compress_frame(toc_json, level)
    toc_offset = offset + SKIPPABLE_HEADER_SIZE
    footer = zstdchunked_footer(toc_offset, len(compressed), len(toc_json))
    return ZstdTail(
        skippable_frame(compressed) + footer,
        {
            ZSTD_MANIFEST_CHECKSUM_ANNOTATION: sha256_digest(compressed),
            ZSTD_MANIFEST_POSITION_ANNOTATION:
                f"{toc_offset}:{len(compressed)}:{len(toc_json)}:{MANIFEST_TYPE_CRFS}",
        },
    )


def toc_json(frame: bytes | memoryview, where: str) -> bytes:
    """The TOC JSON in the TOC's zstd frame (the footer points just past its skippable frame
    header)."""
    decompressor = zstd.ZstdDecompressor()
    try:
        data = decompressor.decompress(frame, MAX_TOC_SIZE + 1)
    except zstd.ZstdError as exc:
        raise FormatError(f"{where}: zstd frame does not decompress: {exc}") from exc
    if len(data) > MAX_TOC_SIZE:
        raise InvalidTOC(f"{where}: TOC exceeds {MAX_TOC_SIZE} bytes")
    if not decompressor.eof:
        raise InvalidTOC(f"{where}: the TOC's zstd frame is truncated")
    return data
