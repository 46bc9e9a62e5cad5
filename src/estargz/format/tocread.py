"""Find a blob's footer and TOC, and parse the TOC into an :class:`UnverifiedBlob`.

``open_blob`` returns an :class:`UnverifiedBlob`: the TOC is parsed but not yet trusted. Its only
ways out are :meth:`UnverifiedBlob.verify_toc` (with the digest from the manifest annotation)
and an explicit :meth:`UnverifiedBlob.skip_verify`; both give a
:class:`~estargz.format.reader.BlobReader`.
"""

from __future__ import annotations

import functools
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from estargz.errors import InvalidTOC, TOCDigestMismatch
from estargz.format.compression import inflate_member
from estargz.format.footer import Footer, parse_footer, zstd_toc_hint
from estargz.format.source import BlobSource, as_source, read_exact
from estargz.format.tarscan import clean_name
from estargz.format.toc import decode_toc, toc_digest
from estargz.format.types import (
    FOOTER_SIZE,
    MAX_TOC_SIZE,
    PREFETCH_LANDMARK,
    SKIPPABLE_HEADER_SIZE,
    TOC_TAR_NAME,
    TOCEntry,
)

if TYPE_CHECKING:
    from estargz.format.chunks import ChunkCache
    from estargz.format.reader import BlobReader

__all__ = ["RawTOC", "UnverifiedBlob", "open_blob", "parse_toc_blob", "read_toc"]

_TAIL_GUESS = 512 << 10
"""Bytes read from the end at open: footer and, usually, the whole TOC in one request (a
debian root file system's TOC of 6,780 entries is 310 KB compressed; a second round trip to a
remote registry costs more than the extra bytes)."""


_HINTED_TAIL_LIMIT = 64 << 20
"""The most an annotation may make the first read fetch (a larger TOC costs a second read)."""


def _tar_payload(tar_bytes: bytes, what: str) -> bytes:
    """The content of the single ``stargz.index.json`` entry at the start of a tar stream."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tf:
            info = tf.next()
            if info is None or info.name != TOC_TAR_NAME:
                found = None if info is None else info.name
                raise InvalidTOC(f"{what}: first tar entry is {found!r}, want {TOC_TAR_NAME!r}")
            if not info.isreg():  # (a link or directory has no content to read)
                raise InvalidTOC(f"{what}: {TOC_TAR_NAME!r} is not a regular file")
            if info.size > MAX_TOC_SIZE:
                raise InvalidTOC(f"{what}: TOC of {info.size} bytes exceeds the limit of "
                                 f"{MAX_TOC_SIZE} (ESTARGZ_MAX_TOC_SIZE)")
            f = tf.extractfile(info)
            if f is None:
                raise InvalidTOC(f"{what}: {TOC_TAR_NAME!r} has no content")
            data = f.read()
    except tarfile.TarError as exc:
        raise InvalidTOC(f"{what}: not a tar holding the TOC: {exc}") from exc
    if len(data) != info.size:
        raise InvalidTOC(f"{what}: TOC truncated ({len(data)} of {info.size} bytes)")
    return data


def parse_toc_blob(toc_blob: bytes) -> bytes:
    """The TOC JSON inside an external TOC blob (a tar.gz holding ``stargz.index.json``)."""
    raw = inflate_member(toc_blob, MAX_TOC_SIZE + 4096, "external TOC")
    return _tar_payload(raw, "external TOC")


class UnverifiedBlob:
    """A parsed TOC that nobody has vouched for yet."""

    def __init__(self, source: BlobSource, footer: Footer, toc_json: bytes, data_end: int) -> None:
        self.source = source
        self.footer = footer
        self.toc_json = toc_json
        self.toc_digest = toc_digest(toc_json)
        self.entries = decode_toc(toc_json)
        self.data_end = data_end
        self._prefetch: tuple[list[TOCEntry], int] | None = None

    @property
    def prefetch_size(self) -> int:
        """Bytes ``[0, n)`` a lazy reader fetches first: where ``.prefetch.landmark`` starts.

        Found once (callers and :class:`BlobReader` both ask), again only if ``entries`` is
        replaced.
        """
        entries = self.entries
        if self._prefetch is not None and self._prefetch[0] is entries:
            return self._prefetch[1]
        size = 0
        for e in entries:  # the substring test first: cleaning every name is what costs
            if PREFETCH_LANDMARK in e.name and e.type == "reg" \
                    and clean_name(e.name) == PREFETCH_LANDMARK:
                size = e.offset
                break
        self._prefetch = (entries, size)
        return size

    def verify_toc(
        self, expected_digest: str, *, chunk_cache: ChunkCache | None = None
    ) -> BlobReader:
        """Trust the TOC because its digest is the one the manifest promised."""
        if self.toc_digest != expected_digest:
            raise TOCDigestMismatch(
                f"TOC digest is {self.toc_digest}, expected {expected_digest}"
            )
        return self.skip_verify(chunk_cache=chunk_cache)

    def skip_verify(self, *, chunk_cache: ChunkCache | None = None) -> BlobReader:
        """Use the TOC as found (each chunk is still checked against its chunkDigest)."""
        from estargz.format.reader import BlobReader  # (it needs this module's type)

        return BlobReader(self, chunk_cache=chunk_cache)


@dataclass(frozen=True)
class RawTOC:
    """A blob's footer and TOC bytes, read but not parsed: enough to check the TOC digest
    against a manifest before anyone spends time decoding it."""

    source: BlobSource
    footer: Footer
    toc_json: bytes
    data_end: int

    @functools.cached_property
    def toc_digest(self) -> str:
        return toc_digest(self.toc_json)

    def decode(self) -> UnverifiedBlob:
        """Parse and type-check the TOC."""
        return UnverifiedBlob(self.source, self.footer, self.toc_json, self.data_end)


def read_toc(
    blob: BlobSource | bytes | str,
    *,
    external_toc: bytes | None = None,
    annotations: Mapping[str, str] | None = None,
) -> RawTOC:
    """Read the footer and the TOC bytes of an eStargz or zstd:chunked blob (usually one
    request).

    ``external_toc`` is the TOC blob of a layer built with an external TOC (46-byte footer).
    ``annotations`` (the layer descriptor's) may locate a zstd:chunked TOC: then it is read
    in the same request as the footer however large, and must be where the footer says.
    """
    source = as_source(blob)
    size = source.size
    hint = zstd_toc_hint(annotations or {})
    tail_len = min(size, _TAIL_GUESS)
    if hint and size - hint <= _HINTED_TAIL_LIMIT:
        tail_len = min(size, max(tail_len, size - hint + SKIPPABLE_HEADER_SIZE))
    tail = read_exact(source, size - tail_len, tail_len, "footer")
    footer = parse_footer(tail[-FOOTER_SIZE:])
    if hint and footer.toc_offset != hint:
        raise InvalidTOC(f"the layer's annotation puts the TOC at offset {hint}, its footer "
                         f"at {footer.toc_offset}")
    data_end = size - footer.size
    if footer.toc_offset is None:
        if external_toc is None:
            raise InvalidTOC(
                "this blob keeps its TOC outside (external TOC footer): pass the TOC blob",
                needs_external_toc=True,
            )
        return RawTOC(source, footer, parse_toc_blob(external_toc), data_end)
    if external_toc is not None:
        raise InvalidTOC("an external TOC was given but the blob carries its own TOC")
    toc_offset = footer.toc_offset
    if not 0 <= toc_offset < data_end:
        raise InvalidTOC(f"footer points at TOC offset {toc_offset}, outside the blob ({size})")
    if toc_offset >= size - tail_len:
        start = toc_offset - (size - tail_len)
        member = tail[start : tail_len - footer.size]
    else:
        member = read_exact(source, toc_offset, data_end - toc_offset, "TOC")
    if footer.kind == "zstdchunked":
        from estargz.format.zstdchunked import toc_json as zstd_toc_json

        return RawTOC(source, footer, zstd_toc_json(member, f"TOC at offset {toc_offset}"),
                      toc_offset - SKIPPABLE_HEADER_SIZE)
    raw = inflate_member(member, MAX_TOC_SIZE + 4096, f"TOC at offset {toc_offset}")
    toc_json = _tar_payload(raw, f"TOC at offset {toc_offset}")
    return RawTOC(source, footer, toc_json, toc_offset)


def open_blob(
    blob: BlobSource | bytes | str,
    *,
    external_toc: bytes | None = None,
    annotations: Mapping[str, str] | None = None,
) -> UnverifiedBlob:
    """Read the footer and the TOC of an eStargz or zstd:chunked blob, and parse the TOC.

    ``external_toc`` and ``annotations``: as for :func:`read_toc`.
    """
    return read_toc(blob, external_toc=external_toc, annotations=annotations).decode()
