"""The eStargz format: build, open, verify and read blobs. Pure: no network, no store, no FUSE.

This package imports only the standard library, ``orjson`` and the deflate engines; a test pins
that, so the format stays usable on its own.
"""

from __future__ import annotations

from estargz._exports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from estargz.format.chunks import Chunk
    from estargz.format.extract import extract
    from estargz.format.footer import Footer, estargz_footer, external_footer, parse_footer
    from estargz.format.index import FileInfo
    from estargz.format.reader import BlobReader
    from estargz.format.source import BlobSource, BytesSource, FileSource
    from estargz.format.toc import decode_toc, encode_toc, toc_digest
    from estargz.format.tocread import (
        RawTOC,
        UnverifiedBlob,
        open_blob,
        parse_toc_blob,
        read_toc,
    )
    from estargz.format.types import TOCEntry
    from estargz.format.writer import BuildOptions, BuildResult, build, build_toc_blob

__all__ = [
    "BlobReader",
    "BlobSource",
    "BuildOptions",
    "BuildResult",
    "BytesSource",
    "Chunk",
    "FileInfo",
    "FileSource",
    "Footer",
    "RawTOC",
    "TOCEntry",
    "UnverifiedBlob",
    "build",
    "build_toc_blob",
    "decode_toc",
    "encode_toc",
    "estargz_footer",
    "external_footer",
    "extract",
    "open_blob",
    "parse_footer",
    "parse_toc_blob",
    "read_toc",
    "toc_digest",
]

__getattr__ = lazy_exports(__name__, globals(), {
    "estargz.format.extract": ("extract",),
    "estargz.format.footer": ("Footer", "estargz_footer", "external_footer", "parse_footer"),
    "estargz.format.chunks": ("Chunk",),
    "estargz.format.index": ("FileInfo",),
    "estargz.format.reader": ("BlobReader",),
    "estargz.format.tocread": (
        "RawTOC", "UnverifiedBlob", "open_blob", "parse_toc_blob", "read_toc",
    ),
    "estargz.format.source": ("BlobSource", "BytesSource", "FileSource"),
    "estargz.format.toc": ("decode_toc", "encode_toc", "toc_digest"),
    "estargz.format.types": ("TOCEntry",),
    "estargz.format.writer": ("BuildOptions", "BuildResult", "build", "build_toc_blob"),
})
