"""The vocabulary of the format: names, sizes, annotation keys and the TOC entry model."""

from __future__ import annotations

import os
from typing import Annotated

import msgspec

__all__ = [
    "CHUNK_SIZE_DEFAULT",
    "ENTRY_TYPES",
    "EXTERNAL_FOOTER_SIZE",
    "FOOTER_SIZE",
    "LANDMARK_CONTENTS",
    "LANDMARK_NAMES",
    "LEGACY_FOOTER_SIZE",
    "MANIFEST_TYPE_CRFS",
    "MAX_CHUNK_SIZE",
    "MAX_DEVICE",
    "MAX_ID",
    "MAX_TOC_SIZE",
    "NO_PREFETCH_LANDMARK",
    "PREFETCH_LANDMARK",
    "SKIPPABLE_HEADER_SIZE",
    "SKIPPABLE_MAGIC",
    "STORE_UNCOMPRESSED_SIZE_ANNOTATION",
    "TOC_JSON_DIGEST_ANNOTATION",
    "TOC_LAYER_DIGEST_ANNOTATION",
    "TOC_TAR_NAME",
    "TOCEntry",
    "ZSTD_CHUNKED_FOOTER_SIZE",
    "ZSTD_MANIFEST_CHECKSUM_ANNOTATION",
    "ZSTD_MANIFEST_POSITION_ANNOTATION",
]

TOC_TAR_NAME = "stargz.index.json"
"""Name of the tar entry holding the TOC JSON (last entry of the blob, or the external TOC)."""

# Footer of an eStargz blob: an empty gzip member whose header carries the TOC offset.
#   10  gzip header: 1f 8b 08 (deflate) 04 (FEXTRA) 00000000 (MTIME) 00 (XFL) ff (OS)
#    2  XLEN = 26
#    4  subfield: 'S' 'G' LE16(22)
#   22  "%016x" % toc_offset + "STARGZ"
#    5  stored empty final block: 01 00 00 ff ff
#    8  CRC32 = 0, ISIZE = 0
#   --
#   51
FOOTER_SIZE = 51
# Same shape, subfield payload "STARGZEXTERNALTOC" (17 bytes) and no offset: 10+2+4+17+5+8.
EXTERNAL_FOOTER_SIZE = 46
# CRFS stargz: the 22 payload bytes are the whole extra field, no subfield header: 10+2+22+5+8.
LEGACY_FOOTER_SIZE = 47



def _limit(variable: str, default: int) -> int:
    """A memory bound a deployment may lower (or raise) through the environment."""
    text = os.environ.get(variable, "")
    return int(text) if text.isdigit() and int(text) > 0 else default


# Footer of a zstd:chunked blob: a zstd skippable frame.
#    8  skippable frame header: LE32 0x184D2A50, LE32 40 (payload size)
#    8  LE64 offset of the TOC's zstd frame (just past its own skippable frame header)
#    8  LE64 compressed TOC length
#    8  LE64 uncompressed TOC length
#    8  LE64 manifest type: 1, the CRFS TOC
#    8  magic "GnUlInUx"
#   --
#   48
ZSTD_CHUNKED_FOOTER_SIZE = 48
SKIPPABLE_HEADER_SIZE = 8
SKIPPABLE_MAGIC = b"\x50\x2a\x4d\x18"
MANIFEST_TYPE_CRFS = 1

CHUNK_SIZE_DEFAULT = 4 << 20
MAX_CHUNK_SIZE = _limit("ESTARGZ_MAX_CHUNK_SIZE", 1 << 30)
"""Largest chunk a reader inflates into memory; a TOC asking for more is refused (bytes;
``ESTARGZ_MAX_CHUNK_SIZE`` sets it)."""
MAX_TOC_SIZE = _limit("ESTARGZ_MAX_TOC_SIZE", 1 << 30)
"""Largest TOC JSON a reader accepts: decompression bombs and TOCs that would take gigabytes
of memory stop here (bytes; ``ESTARGZ_MAX_TOC_SIZE`` sets it)."""

PREFETCH_LANDMARK = ".prefetch.landmark"
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
LANDMARK_NAMES = frozenset({PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK})
LANDMARK_CONTENTS = b"\x0f"

TOC_JSON_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
STORE_UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size"
TOC_LAYER_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/layer.digest"
ZSTD_MANIFEST_CHECKSUM_ANNOTATION = "io.containers.zstd-chunked.manifest-checksum"
"""zstd:chunked: sha256 of the compressed TOC frame (the TOC digest is that of the JSON)."""
ZSTD_MANIFEST_POSITION_ANNOTATION = "io.containers.zstd-chunked.manifest-position"
"""zstd:chunked: ``offset:compressed length:uncompressed length:1`` of the TOC frame."""

ENTRY_TYPES = frozenset({"dir", "reg", "symlink", "hardlink", "char", "block", "fifo", "chunk"})


_Count = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
"""A TOC integer: JSON decoding refuses negatives and what Go's int64 cannot hold."""
MAX_ID = (1 << 32) - 2
"""Largest uid or gid (all ones means "no change" to chown)."""
MAX_DEVICE = (1 << 31) - 1
"""Largest device major or minor number a system call takes."""
_Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
_Device = Annotated[int, msgspec.Meta(ge=0, le=MAX_DEVICE)]


class TOCEntry(msgspec.Struct, rename="camel", gc=False):
    """One element of the TOC's ``entries`` array.

    Field names follow Python, JSON names are the Go struct's (camelCase). Zero values mean
    "absent", exactly as the Go encoder's ``omitempty`` writes them. A ``msgspec`` struct, so
    that a TOC decodes straight into entries, type-checked in C (``toc.decode_toc``); never in
    a reference cycle, so the collector need not track the thousands of them.
    """

    name: str
    type: str
    size: _Count = 0
    modtime: str = ""
    link_name: str = ""
    mode: _Count = 0
    uid: _Id = 0
    gid: _Id = 0
    user_name: str = ""
    group_name: str = ""
    dev_major: _Device = 0
    dev_minor: _Device = 0
    xattrs: dict[str, bytes] = {}  # (msgspec gives each entry its own empty dict)
    digest: str = ""
    offset: _Count = 0
    inner_offset: _Count = 0
    chunk_offset: _Count = 0
    chunk_size: _Count = 0
    chunk_digest: str = ""
