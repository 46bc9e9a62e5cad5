"""The eStargz format: build, open, verify and read blobs. Pure: no network, no store, no FUSE.

This package imports only the standard library, ``orjson`` and the deflate engines; a test pins
that, so the format stays usable on its own.
"""

from estargz.format.extract import extract
from estargz.format.footer import Footer, estargz_footer, external_footer, parse_footer
from estargz.format.reader import (
    BlobReader,
    Chunk,
    FileInfo,
    RawTOC,
    UnverifiedBlob,
    open_blob,
    parse_toc_blob,
    read_toc,
)
from estargz.format.source import BlobSource, BytesSource, FileSource
from estargz.format.toc import decode_toc, encode_toc, toc_digest
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
