"""Read files from an eStargz or zstd:chunked blob, every chunk verified.

The :class:`BlobReader` that :meth:`~estargz.format.tocread.UnverifiedBlob.verify_toc` and
:meth:`~estargz.format.tocread.UnverifiedBlob.skip_verify` return checks every chunk against
its ``chunkDigest`` before a byte of it is returned, whichever way out was taken: unverified
bytes are never served.
"""

from __future__ import annotations

import bisect
import hashlib
import io
from typing import TYPE_CHECKING

from estargz.errors import ChunkDigestMismatch, FormatError, NotFound
from estargz.format.chunks import (
    Chunk,
    ChunkCache,
    InFlight,
    MemoryCache,
    blob_order,
    by_file_offset,
)
from estargz.format.codec import decompressor
from estargz.format.index import TOCIndex
from estargz.format.source import SourceFile, read_exact
from estargz.format.toc import paused_gc

if TYPE_CHECKING:
    from estargz.format.tocread import UnverifiedBlob

__all__ = ["BlobReader"]


class BlobReader(TOCIndex):
    """Verified reads over a blob whose TOC has been accepted (lookups and listings come from
    the index it is): every chunk is checked against its digest before a byte is returned."""

    def __init__(
        self,
        blob: UnverifiedBlob,
        cache_bytes: int = 64 << 20,
        chunk_cache: ChunkCache | None = None,
    ) -> None:
        self.source = blob.source
        self.toc_digest = blob.toc_digest
        self.toc_json = blob.toc_json
        self.footer = blob.footer
        self._cache = MemoryCache(cache_bytes)
        self._chunk_cache = chunk_cache
        self._in_flight = InFlight()
        self._decompress = decompressor(blob.footer.kind)  # gzip members or zstd frames
        self.prefetch_size = blob.prefetch_size
        super().__init__(blob.entries, blob.data_end)

    def drop_toc_json(self) -> None:
        """Forget the TOC's bytes (``toc_json`` becomes empty): a reader that lives long and
        never hands its TOC out keeps only the index, which is parsed from them."""
        self.toc_json = b""

    # --- content ---------------------------------------------------------------------------

    def _member_bytes(self, name: str, chunk: Chunk) -> bytes:
        what = f"{name!r} at file offset {chunk.chunk_offset} (blob offset {chunk.offset})"
        compressed = read_exact(
            self.source, chunk.offset, chunk.member_end - chunk.offset, what
        )
        need = chunk.inner_offset + chunk.size
        raw = self._decompress(compressed, need, what)
        if len(raw) < need:
            raise FormatError(
                f"{what}: innerOffset {chunk.inner_offset} + size {chunk.size} is past the end "
                f"of its gzip member ({len(raw)} bytes)"
            )
        return raw

    @staticmethod
    def _check(name: str, chunk: Chunk, data: bytes) -> None:
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != chunk.digest:
            raise ChunkDigestMismatch(
                f"{name!r}: chunk at file offset {chunk.chunk_offset} (blob offset "
                f"{chunk.offset}) has digest {got}, TOC says {chunk.digest}"
            )

    def _cached(self, name: str, chunk: Chunk) -> bytes | None:
        key = (chunk.offset, chunk.inner_offset)
        data = self._cache.get(key)
        if data is not None or self._chunk_cache is None:
            return data
        data = self._chunk_cache.get(chunk.key)
        if data is None:
            return None
        try:
            self._check(name, chunk, data)
        except ChunkDigestMismatch:
            return None  # a damaged cache entry: fetch again
        self._cache.put(key, data)
        return data

    def _keep(self, chunk: Chunk, data: bytes) -> None:
        self._cache.put((chunk.offset, chunk.inner_offset), data)
        if self._chunk_cache is not None:
            self._chunk_cache.put(chunk.key, data)

    def read_chunk(self, name: str, chunk: Chunk) -> bytes:
        """The verified bytes of one chunk. If another thread is fetching it, its result is
        awaited (and, should that fetch fail, the chunk is fetched here)."""
        cached = self._cached(name, chunk)
        if cached is not None:
            return cached
        key = (chunk.offset, chunk.inner_offset)
        other = self._in_flight.claim(key)
        if other is not None:
            other.wait()
            cached = self._cached(name, chunk)
            if cached is not None:
                return cached
            return self._fetch_chunk(name, chunk)
        try:
            return self._fetch_chunk(name, chunk)
        finally:
            self._in_flight.release(key)

    def _fetch_chunk(self, name: str, chunk: Chunk) -> bytes:
        raw = self._member_bytes(name, chunk)
        data = raw[chunk.inner_offset : chunk.inner_offset + chunk.size]
        self._check(name, chunk, data)
        self._keep(chunk, data)
        return data

    def is_cached(self, name: str, chunk: Chunk) -> bool:
        """Whether the chunk would be served without a fetch (presence only: a damaged cache
        entry is still caught, and refetched, when the chunk is read)."""
        if (chunk.offset, chunk.inner_offset) in self._cache:
            return True
        return self._chunk_cache is not None and chunk.key in self._chunk_cache

    def all_chunks(self) -> list[tuple[str, Chunk]]:
        """Every chunk of every file, in blob order (hardlinks counted once)."""
        if self._blob_order is None:  # the index never changes: sort once (a race sorts twice)
            entries = self._entries
            with paused_gc():
                out = [(name, c) for name in self._order if entries[name].type == "reg"
                       for c in self._chunks_of(name)]
                out.sort(key=blob_order)
            self._blob_order = out
        return list(self._blob_order)

    def fetch_range(self, chunks: list[tuple[str, Chunk]]) -> int:
        """Fetch the members holding ``chunks`` in one read per run of them, verify and cache
        every chunk. Chunks that are cached, or that another thread is fetching, are left out
        (a run ends there).

        For prefetching: ``chunks`` must be in blob order. Returns the compressed bytes read.
        """
        runs: list[list[tuple[str, Chunk]]] = [[]]
        claimed: set[tuple[int, int]] = set()
        for name, chunk in chunks:
            key = (chunk.offset, chunk.inner_offset)
            if key in claimed or self.is_cached(name, chunk) or \
                    self._in_flight.claim(key) is not None:
                if runs[-1]:
                    runs.append([])
                continue
            claimed.add(key)
            runs[-1].append((name, chunk))
        fetched = 0
        try:
            for todo in runs:
                if todo:
                    fetched += self._fetch_run(todo, claimed)
        finally:
            for key in claimed:  # not verified: the fetch failed
                self._in_flight.release(key)
        return fetched

    def _fetch_run(self, todo: list[tuple[str, Chunk]], claimed: set[tuple[int, int]]) -> int:
        """One read for ``todo`` (chunks in blob order, claimed); each is released as soon as
        it is verified and cached, so that readers waiting for it go on."""
        start = todo[0][1].offset
        end = max(c.member_end for _, c in todo)
        data = read_exact(self.source, start, end - start, f"range [{start}, {end})")
        needs: dict[int, int] = {}
        for _, c in todo:
            needs[c.offset] = max(needs.get(c.offset, 0), c.inner_offset + c.size)
        inflated: dict[int, bytes] = {}
        for name, c in todo:
            raw = inflated.get(c.offset)
            need = c.inner_offset + c.size
            if raw is None or len(raw) < need:
                what = f"{name!r} at file offset {c.chunk_offset} (blob offset {c.offset})"
                raw = self._decompress(
                    memoryview(data)[c.offset - start : c.member_end - start],
                    needs[c.offset],
                    what,
                )
                inflated = {c.offset: raw}  # members come in order: keep only the current one
            chunk_data = raw[c.inner_offset : need]
            if len(chunk_data) != c.size:
                raise FormatError(f"{name!r}: innerOffset {c.inner_offset} + size {c.size} is "
                                  f"past the end of its gzip member ({len(raw)} bytes)")
            self._check(name, c, chunk_data)
            self._keep(c, chunk_data)
            key = (c.offset, c.inner_offset)
            claimed.discard(key)
            self._in_flight.release(key)
        return end - start

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """``size`` bytes of a regular file from ``offset`` (all to the end when negative)."""
        name = self._content(self._path(path))
        entry = self._entries[name]
        if entry.type != "reg":
            raise NotFound(f"{path!r} is not a regular file")
        file_size = entry.size
        if offset < 0:
            raise ValueError("negative offset")
        end = file_size if size < 0 else min(file_size, offset + size)
        if offset >= end:
            return b""
        chunks = self._chunks
        run = self._runs[name]
        i = bisect.bisect_right(chunks, offset, run.start, run.stop, key=by_file_offset) - 1
        out = []
        pos = offset
        while pos < end:
            c = chunks[i]
            data = self.read_chunk(name, c)
            lo = pos - c.chunk_offset
            hi = min(c.size, end - c.chunk_offset)
            out.append(data[lo:hi])
            pos = c.chunk_offset + hi
            i += 1
        return b"".join(out)

    def open(self, path: str) -> io.BufferedReader:
        """A seekable file object over a regular file's verified content."""
        info = self.stat(path)
        if info.type != "reg":
            raise NotFound(f"{path!r} is not a regular file")
        return io.BufferedReader(SourceFile(_FileContent(self, path, info.size)), 1 << 20)

    def read_file(self, path: str) -> bytes:
        return self.read(path)

    def verify(self) -> dict[str, str]:
        """Check every chunk and every file digest; returns path -> sha256 of each file."""
        digests: dict[str, str] = {}
        for name in self._order:
            entry = self._entries[name]
            if entry.type != "reg":
                continue
            h = hashlib.sha256()
            for c in self._chunks_of(name):
                h.update(self.read_chunk(name, c))
            got = "sha256:" + h.hexdigest()
            want = entry.digest
            if want and got != want:
                raise ChunkDigestMismatch(f"{name!r}: content digest {got}, TOC says {want}")
            digests[name] = got
        return digests


class _FileContent:
    """A regular file's verified content, as a :class:`BlobSource` (for :class:`SourceFile`)."""

    def __init__(self, reader: BlobReader, path: str, size: int) -> None:
        self._reader, self._path, self.size = reader, path, size

    def read_at(self, offset: int, size: int) -> bytes:
        return self._reader.read(self._path, offset, size)
