"""Open an eStargz blob through any :class:`BlobSource`, verify it, and read files from it.

``open_blob`` returns an :class:`UnverifiedBlob`: the TOC is parsed but not yet trusted. Its only
ways out are :meth:`UnverifiedBlob.verify_toc` (with the digest from the manifest annotation)
and an explicit :meth:`UnverifiedBlob.skip_verify`. The :class:`BlobReader` they return checks
every chunk against its ``chunkDigest`` before a byte of it is returned, whichever way out was
taken: unverified bytes are never served.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from estargz.errors import (
    ChunkDigestMismatch,
    FormatError,
    InvalidTOC,
    NotFound,
    TOCDigestMismatch,
)
from estargz.format.compression import inflate_member
from estargz.format.footer import Footer, parse_footer
from estargz.format.source import BlobSource, SourceFile, as_source
from estargz.format.tarscan import clean_name
from estargz.format.toc import decode_toc, toc_digest
from estargz.format.types import (
    FOOTER_SIZE,
    MAX_CHUNK_SIZE,
    MAX_TOC_SIZE,
    PREFETCH_LANDMARK,
    TOC_TAR_NAME,
    TOCEntry,
)

__all__ = [
    "BlobReader",
    "Chunk",
    "ChunkCache",
    "FileInfo",
    "UnverifiedBlob",
    "open_blob",
    "parse_toc_blob",
]

_TAIL_GUESS = 256 << 10
"""Bytes read from the end at open: footer and, usually, the whole TOC in one request."""


class ChunkCache(Protocol):
    """A second-level store for verified chunks (e.g. on disk), keyed by ``Chunk.key``.

    Whatever it returns is checked against the chunk digest again before use, so a damaged or
    tampered cache costs a refetch, never wrong bytes.
    """

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...

    def __contains__(self, key: object) -> bool:
        """Whether ``get`` would likely find it: a cheap check, no read, no digest."""
        ...


@dataclass(frozen=True, slots=True)
class Chunk:
    """Where one piece of a file's content lives, and the digest that vouches for it."""

    chunk_offset: int
    size: int
    offset: int
    inner_offset: int
    member_end: int
    digest: str

    @property
    def key(self) -> str:
        return f"{self.offset}-{self.inner_offset}-{self.size}"


@dataclass(slots=True)
class _Node:
    entry: TOCEntry
    name: str
    children: dict[str, str] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    nlink: int = 1
    target: _Node | None = None  # a hardlink's target

    @property
    def content(self) -> _Node:
        return self.target if self.target is not None else self


@dataclass(frozen=True, slots=True)
class FileInfo:
    """Metadata of one path; a hardlink reports its target's type, size and content."""

    name: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    user_name: str
    group_name: str
    modtime: str
    link_name: str
    dev_major: int
    dev_minor: int
    xattrs: dict[str, bytes]
    digest: str
    nlink: int
    hardlink_to: str | None


def _tar_payload(tar_bytes: bytes, what: str) -> bytes:
    """The content of the single ``stargz.index.json`` entry at the start of a tar stream."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tf:
            info = tf.next()
            if info is None or info.name != TOC_TAR_NAME:
                found = None if info is None else info.name
                raise InvalidTOC(f"{what}: first tar entry is {found!r}, want {TOC_TAR_NAME!r}")
            if info.size > MAX_TOC_SIZE:
                raise InvalidTOC(f"{what}: TOC of {info.size} bytes exceeds {MAX_TOC_SIZE}")
            f = tf.extractfile(info)
            assert f is not None
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


def _read_exact(source: BlobSource, offset: int, size: int, what: str) -> bytes:
    if offset < 0 or size < 0 or offset + size > source.size:
        raise FormatError(
            f"{what}: bytes [{offset}, {offset + size}) are outside the blob ({source.size} bytes)"
        )
    data = source.read_at(offset, size)
    if len(data) != size:
        raise FormatError(f"{what}: short read at offset {offset} ({len(data)} of {size} bytes)")
    return data


class UnverifiedBlob:
    """A parsed TOC that nobody has vouched for yet."""

    def __init__(self, source: BlobSource, footer: Footer, toc_json: bytes, data_end: int) -> None:
        self.source = source
        self.footer = footer
        self.toc_json = toc_json
        self.toc_digest = toc_digest(toc_json)
        self.entries = decode_toc(toc_json)
        self.data_end = data_end

    @property
    def prefetch_size(self) -> int:
        """Bytes ``[0, n)`` a lazy reader fetches first: where ``.prefetch.landmark`` starts."""
        for e in self.entries:
            if e.type == "reg" and clean_name(e.name) == PREFETCH_LANDMARK:
                return e.offset
        return 0

    def verify_toc(
        self, expected_digest: str, *, chunk_cache: ChunkCache | None = None
    ) -> BlobReader:
        """Trust the TOC because its digest is the one the manifest promised."""
        if self.toc_digest != expected_digest:
            raise TOCDigestMismatch(
                f"TOC digest is {self.toc_digest}, expected {expected_digest}"
            )
        return BlobReader(self, chunk_cache=chunk_cache)

    def skip_verify(self, *, chunk_cache: ChunkCache | None = None) -> BlobReader:
        """Use the TOC as found (each chunk is still checked against its chunkDigest)."""
        return BlobReader(self, chunk_cache=chunk_cache)


def open_blob(
    blob: BlobSource | bytes | str,
    *,
    external_toc: bytes | None = None,
) -> UnverifiedBlob:
    """Read the footer and the TOC of an eStargz blob.

    ``external_toc`` is the TOC blob of a layer built with an external TOC (46-byte footer).
    """
    source = as_source(blob)
    size = source.size
    tail_len = min(size, _TAIL_GUESS)
    tail = _read_exact(source, size - tail_len, tail_len, "footer")
    footer = parse_footer(tail[-FOOTER_SIZE:])
    data_end = size - footer.size
    if footer.toc_offset is None:
        if external_toc is None:
            raise InvalidTOC(
                "this blob keeps its TOC outside (external TOC footer): pass the TOC blob",
                needs_external_toc=True,
            )
        return UnverifiedBlob(source, footer, parse_toc_blob(external_toc), data_end)
    if external_toc is not None:
        raise InvalidTOC("an external TOC was given but the blob carries its own TOC")
    toc_offset = footer.toc_offset
    if not 0 <= toc_offset < data_end:
        raise InvalidTOC(f"footer points at TOC offset {toc_offset}, outside the blob ({size})")
    if toc_offset >= size - tail_len:
        start = toc_offset - (size - tail_len)
        member = tail[start : tail_len - footer.size]
    else:
        member = _read_exact(source, toc_offset, data_end - toc_offset, "TOC")
    raw = inflate_member(member, MAX_TOC_SIZE + 4096, f"TOC at offset {toc_offset}")
    toc_json = _tar_payload(raw, f"TOC at offset {toc_offset}")
    return UnverifiedBlob(source, footer, toc_json, toc_offset)


class _LRU:
    """Byte-bounded LRU cache, safe across threads."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def get(self, key: tuple[int, int]) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[int, int], value: bytes) -> None:
        if len(value) > self._max:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = value
            self._size += len(value)
            while self._size > self._max:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


class BlobReader:
    """Lookup, listing and verified reads over a blob whose TOC has been accepted."""

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
        self.entries = blob.entries
        self.data_end = blob.data_end
        self._nodes: dict[str, _Node] = {}
        self._order: list[str] = []
        self._members: list[int] = []
        self._cache = _LRU(cache_bytes)
        self._chunk_cache = chunk_cache
        self.prefetch_size = blob.prefetch_size
        self._index()

    # --- index ---------------------------------------------------------------------------

    def _dir(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            parent = self._dir(name.rpartition("/")[0]) if name else None  # parents first
            node = _Node(TOCEntry(name=name, type="dir", mode=0o755), name)
            self._nodes[name] = node
            if parent is not None:
                parent.children[name.rpartition("/")[2]] = name
        elif node.entry.type != "dir":
            raise InvalidTOC(f"{name!r} is used as a directory but is a {node.entry.type}")
        return node

    def _index(self) -> None:
        data_entries: list[tuple[_Node, TOCEntry]] = []
        last_reg: _Node | None = None
        explicit: set[str] = set()
        self._dir("")
        for entry in self.entries:
            if entry.type == "chunk":
                if last_reg is None:
                    raise InvalidTOC(f"chunk entry {entry.name!r} does not follow a regular file")
                data_entries.append((last_reg, entry))
                continue
            name = clean_name(entry.name)
            node = _Node(entry, name)
            old = self._nodes.get(name)
            if name == "":
                if entry.type != "dir":
                    raise InvalidTOC(f"root entry {entry.name!r} is a {entry.type}")
                node.children = self._nodes[""].children
            elif old is not None and old.entry.type == "dir" and entry.type == "dir":
                node.children = old.children
            if name in explicit:  # a duplicate: the last one wins, at its own position
                self._order.remove(name)
            explicit.add(name)  # (an implicit parent made earlier is not in _order)
            self._nodes[name] = node
            self._order.append(name)
            if name:
                parent_name, _, base = name.rpartition("/")
                self._dir(parent_name).children[base] = name
            last_reg = None
            if entry.type == "reg":
                last_reg = node
                if entry.size > 0:
                    data_entries.append((node, entry))
        for name in self._order:
            node = self._nodes[name]
            if node.entry.type == "hardlink":
                target = self._nodes.get(clean_name(node.entry.link_name))
                hops = 0
                while target is not None and target.entry.type == "hardlink" and hops < 40:
                    target = self._nodes.get(clean_name(target.entry.link_name))
                    hops += 1
                if target is None or target.entry.type in ("dir", "hardlink"):
                    raise InvalidTOC(
                        f"{name!r} is a hardlink to {node.entry.link_name!r}, which is not in "
                        "the TOC"
                    )
                node.target = target
                target.nlink += 1
        for node in self._nodes.values():
            if node.entry.type == "dir":
                node.nlink = 2 + sum(
                    1 for c in node.children.values() if self._nodes[c].entry.type == "dir"
                )
        self._members = sorted({e.offset for _, e in data_entries} | {self.data_end})
        chunks_by_node: dict[int, list[Chunk]] = {}
        for node, entry in data_entries:
            chunks_by_node.setdefault(id(node), []).append(self._chunk(node, entry))
        for node, _ in data_entries:
            chunks = chunks_by_node.pop(id(node), None)
            if chunks is not None:
                node.chunks = self._check_chunks(node, sorted(chunks, key=lambda c: c.chunk_offset))
                node.starts = [c.chunk_offset for c in node.chunks]

    def _chunk(self, node: _Node, e: TOCEntry) -> Chunk:
        size = node.entry.size
        if e.chunk_offset >= size:
            raise InvalidTOC(f"{node.name!r}: chunk at {e.chunk_offset} is past the file's size")
        length = e.chunk_size or size - e.chunk_offset
        length = min(length, size - e.chunk_offset)
        if length > MAX_CHUNK_SIZE:
            raise InvalidTOC(
                f"{node.name!r}: chunk of {length} bytes at file offset {e.chunk_offset} "
                f"exceeds the {MAX_CHUNK_SIZE}-byte limit"
            )
        if e.offset >= self.data_end:
            raise InvalidTOC(
                f"{node.name!r}: chunk offset {e.offset} is past the end of the blob's data "
                f"({self.data_end})"
            )
        if not e.chunk_digest:
            raise InvalidTOC(f"{node.name!r}: chunk at {e.chunk_offset} has no chunkDigest")
        end = self._members[bisect.bisect_right(self._members, e.offset)]
        return Chunk(e.chunk_offset, length, e.offset, e.inner_offset, end, e.chunk_digest)

    @staticmethod
    def _check_chunks(node: _Node, chunks: list[Chunk]) -> list[Chunk]:
        expect = 0
        for c in chunks:
            if c.chunk_offset != expect:
                raise InvalidTOC(
                    f"{node.name!r}: chunks leave a gap or overlap at file offset {expect}"
                )
            expect += c.size
        if expect != node.entry.size:
            raise InvalidTOC(
                f"{node.name!r}: chunks cover {expect} bytes of a {node.entry.size}-byte file"
            )
        return chunks

    # --- metadata --------------------------------------------------------------------------

    def _node(self, path: str) -> _Node:
        node = self._nodes.get(clean_name(path))
        if node is None:
            raise NotFound(f"{path!r}: no such entry in the blob")
        return node

    def _info(self, node: _Node) -> FileInfo:
        e = node.content.entry
        return FileInfo(
            name=node.name,
            type=e.type,
            size=e.size,
            mode=e.mode,
            uid=e.uid,
            gid=e.gid,
            user_name=e.user_name,
            group_name=e.group_name,
            modtime=e.modtime,
            link_name=e.link_name,
            dev_major=e.dev_major,
            dev_minor=e.dev_minor,
            xattrs=e.xattrs,
            digest=e.digest,
            nlink=node.content.nlink,
            hardlink_to=node.content.name if node.target is not None else None,
        )

    def lookup(self, path: str) -> FileInfo | None:
        node = self._nodes.get(clean_name(path))
        return None if node is None else self._info(node)

    def stat(self, path: str) -> FileInfo:
        return self._info(self._node(path))

    def listdir(self, path: str = "") -> list[str]:
        node = self._node(path)
        if node.entry.type != "dir":
            raise NotFound(f"{path!r} is not a directory")
        return sorted(node.children)

    def walk(self) -> Iterator[FileInfo]:
        """Every entry, explicit ones in TOC order after the implicit directories."""
        explicit = set(self._order)
        for name, node in self._nodes.items():
            if name not in explicit and name:
                yield self._info(node)
        for name in self._order:
            yield self._info(self._nodes[name])

    def chunks(self, path: str) -> list[Chunk]:
        return list(self._node(path).content.chunks)

    # --- content ---------------------------------------------------------------------------

    def _member_bytes(self, name: str, chunk: Chunk) -> bytes:
        what = f"{name!r} at file offset {chunk.chunk_offset} (blob offset {chunk.offset})"
        compressed = _read_exact(
            self.source, chunk.offset, chunk.member_end - chunk.offset, what
        )
        need = chunk.inner_offset + chunk.size
        raw = inflate_member(compressed, need, what)
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
        """The verified bytes of one chunk."""
        cached = self._cached(name, chunk)
        if cached is not None:
            return cached
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
        out = [
            (name, c)
            for name in self._order
            if self._nodes[name].entry.type == "reg"
            for c in self._nodes[name].chunks
        ]
        out.sort(key=lambda nc: (nc[1].offset, nc[1].inner_offset))
        return out

    def fetch_range(self, chunks: list[tuple[str, Chunk]]) -> int:
        """Fetch the members holding ``chunks`` in ONE read, verify and cache every chunk.

        For prefetching: ``chunks`` must be in blob order. Returns the compressed bytes read.
        """
        todo = [(n, c) for n, c in chunks if not self.is_cached(n, c)]
        if not todo:
            return 0
        start = todo[0][1].offset
        end = max(c.member_end for _, c in todo)
        data = _read_exact(self.source, start, end - start, f"range [{start}, {end})")
        needs: dict[int, int] = {}
        for _, c in todo:
            needs[c.offset] = max(needs.get(c.offset, 0), c.inner_offset + c.size)
        inflated: dict[int, bytes] = {}
        for name, c in todo:
            raw = inflated.get(c.offset)
            need = c.inner_offset + c.size
            if raw is None or len(raw) < need:
                what = f"{name!r} at file offset {c.chunk_offset} (blob offset {c.offset})"
                raw = inflate_member(
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
        return end - start

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """``size`` bytes of a regular file from ``offset`` (all to the end when negative)."""
        node = self._node(path).content
        if node.entry.type != "reg":
            raise NotFound(f"{path!r} is not a regular file")
        file_size = node.entry.size
        if offset < 0:
            raise ValueError("negative offset")
        end = file_size if size < 0 else min(file_size, offset + size)
        if offset >= end:
            return b""
        chunks = node.chunks
        i = bisect.bisect_right(node.starts, offset) - 1
        out = []
        pos = offset
        while pos < end:
            c = chunks[i]
            data = self.read_chunk(node.name, c)
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
            node = self._nodes[name]
            if node.entry.type != "reg":
                continue
            h = hashlib.sha256()
            for c in node.chunks:
                h.update(self.read_chunk(name, c))
            got = "sha256:" + h.hexdigest()
            want = node.entry.digest
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
