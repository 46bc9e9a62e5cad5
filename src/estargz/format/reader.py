"""Open an eStargz blob through any :class:`BlobSource`, verify it, and read files from it.

``open_blob`` returns an :class:`UnverifiedBlob`: the TOC is parsed but not yet trusted. Its only
ways out are :meth:`UnverifiedBlob.verify_toc` (with the digest from the manifest annotation)
and an explicit :meth:`UnverifiedBlob.skip_verify`. The :class:`BlobReader` they return checks
every chunk against its ``chunkDigest`` before a byte of it is returned, whichever way out was
taken: unverified bytes are never served.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import itertools
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, KeysView, Mapping
from dataclasses import dataclass
from operator import attrgetter, itemgetter, lt
from typing import Protocol

import msgspec

from estargz.errors import (
    ChunkDigestMismatch,
    FormatError,
    InvalidTOC,
    NotFound,
    TOCDigestMismatch,
)
from estargz.format.codec import decompressor
from estargz.format.compression import inflate_member
from estargz.format.footer import Footer, parse_footer, zstd_toc_hint
from estargz.format.source import BlobSource, SourceFile, as_source
from estargz.format.tarscan import clean_name
from estargz.format.toc import decode_toc, paused_gc, toc_digest
from estargz.format.types import (
    FOOTER_SIZE,
    MAX_CHUNK_SIZE,
    MAX_TOC_SIZE,
    PREFETCH_LANDMARK,
    SKIPPABLE_HEADER_SIZE,
    TOC_TAR_NAME,
    TOCEntry,
)

__all__ = [
    "BlobReader",
    "Chunk",
    "ChunkCache",
    "FileInfo",
    "RawTOC",
    "UnverifiedBlob",
    "open_blob",
    "parse_toc_blob",
    "read_toc",
]

_TAIL_GUESS = 512 << 10
"""Bytes read from the end at open: footer and, usually, the whole TOC in one request (a
debian root file system's TOC of 6,780 entries is 310 KB compressed; a second round trip to a
remote registry costs more than the extra bytes)."""


_HINTED_TAIL_LIMIT = 64 << 20
"""The most an annotation may make the first read fetch (a larger TOC costs a second read)."""


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


class Chunk(msgspec.Struct, frozen=True, gc=False):
    """Where one piece of a file's content lives, and the digest that vouches for it.

    (A ``msgspec`` struct: the index makes one per file, and these are built in C at a
    fraction of a frozen dataclass's cost.)"""

    chunk_offset: int
    size: int
    offset: int
    inner_offset: int
    member_end: int
    digest: str

    @property
    def key(self) -> str:
        return f"{self.offset}-{self.inner_offset}-{self.size}"


_file_order = attrgetter("chunk_offset")
_offset = attrgetter("offset")
_path_of = itemgetter(0)
_NO_CHUNKS = range(0)
_NO_XATTRS: dict[str, bytes] = {}
"""Shared by every entry without xattrs: the index never changes an entry's xattrs."""


def _blob_order(item: tuple[str, Chunk]) -> tuple[int, int]:
    return item[1].offset, item[1].inner_offset


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
        return BlobReader(self, chunk_cache=chunk_cache)

    def skip_verify(self, *, chunk_cache: ChunkCache | None = None) -> BlobReader:
        """Use the TOC as found (each chunk is still checked against its chunkDigest)."""
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
    tail = _read_exact(source, size - tail_len, tail_len, "footer")
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
        member = _read_exact(source, toc_offset, data_end - toc_offset, "TOC")
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


class _InFlight:
    """Chunks being fetched right now, so that a second reader of one waits for the first
    instead of fetching the same bytes again: the kernel sends the reads of one large file
    to several threads at once, and the background fetch meets the workload's reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[int, int], threading.Event] = {}

    def claim(self, key: tuple[int, int]) -> threading.Event | None:
        """None when the caller now fetches ``key`` (and must :meth:`release` it), else the
        event of the reader already fetching it."""
        with self._lock:
            event = self._events.get(key)
            if event is None:
                self._events[key] = threading.Event()
            return event

    def release(self, key: tuple[int, int]) -> None:
        """The fetch of ``key`` is over: verified and cached, or failed."""
        with self._lock:
            event = self._events.pop(key, None)
        if event is not None:
            event.set()


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
        self._entries: dict[str, TOCEntry] = {}  # every path (the last entry of a path wins)
        self._children: dict[str, dict[str, str]] = {}  # directories: base name -> path
        self._nlink: dict[str, int] = {}  # where it is not 1: directories, hardlink targets
        self._targets: dict[str, str] = {}  # hardlink -> the path whose content it shares
        self._chunks: list[Chunk] = []  # every file's, in TOC order
        self._runs: dict[str, range] = {}  # file -> where its chunks are in _chunks
        self._order: list[str] = []  # explicit entries, in TOC order
        self._implicit: dict[str, TOCEntry] = {}  # directories made for want of an entry
        self._duplicates = False  # some path has two entries
        self._blob_order: list[tuple[str, Chunk]] | None = None
        self._cache = _LRU(cache_bytes)
        self._chunk_cache = chunk_cache
        self._in_flight = _InFlight()
        self._decompress = decompressor(blob.footer.kind)  # gzip members or zstd frames
        self.prefetch_size = blob.prefetch_size
        with paused_gc():
            self._index()

    def drop_toc_json(self) -> None:
        """Forget the TOC's bytes (``toc_json`` becomes empty): a reader that lives long and
        never hands its TOC out keeps only the index, which is parsed from them."""
        self.toc_json = b""

    # --- index ---------------------------------------------------------------------------

    def _dir(self, name: str) -> dict[str, str]:
        """The children of directory ``name``; made, with missing parents, when no entry is."""
        siblings = self._children.get(name)
        if siblings is not None:
            return siblings
        missing = []
        parent = name
        while (siblings := self._children.get(parent)) is None:  # the root is always there
            entry = self._entries.get(parent)
            if entry is not None:
                raise InvalidTOC(f"{parent!r} is used as a directory but is a {entry.type}")
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for path in reversed(missing):  # parents first
            made = TOCEntry(name=path, type="dir", mode=0o755)
            self._entries[path] = self._implicit[path] = made
            siblings[path.rpartition("/")[2]] = path
            self._nlink[parent] += 1
            self._nlink[path] = 2
            siblings = self._children[path] = {}
            parent = path
        return siblings

    def _index(self) -> None:
        """The tree in one pass over the entries, then links, then chunks (a chunk ends where
        the next member starts, so those need every offset first).

        The index is a few dicts keyed by path rather than an object per path: the entry, and
        only where there is something to say, children, link count, hardlink target, chunks.
        Directory link counts are kept as entries arrive; a TOC naming a path twice has them
        counted again at the end instead. Errors come in the same order as they always did.
        """
        entries, children, nlink = self._entries, self._children, self._nlink
        entries[""] = self._implicit[""] = TOCEntry(name="", type="dir", mode=0o755)
        children[""] = {}
        nlink[""] = 2
        # a file's content: its entry and the chunk entries right after it, each with its owner
        pieces: list[TOCEntry] = []
        owners: list[tuple[str, TOCEntry]] = []  # (path, file entry), one tuple per file entry
        links: list[tuple[str, TOCEntry]] = []
        last: tuple[str, TOCEntry] | None = None  # the regular file chunk entries extend
        tidy = True
        clean, add_name = clean_name, self._order.append
        add_piece, add_owner = pieces.append, owners.append
        stamps: dict[str, str] = {}  # a layer has few distinct modtimes: one string each
        for entry in self.entries:
            kind = entry.type
            entry.modtime = stamps.setdefault(entry.modtime, entry.modtime)
            if not entry.xattrs:  # (msgspec gives each entry a dict of its own)
                entry.xattrs = _NO_XATTRS
            if kind == "chunk":
                if last is None:
                    raise InvalidTOC(f"chunk entry {entry.name!r} does not follow a regular file")
                add_owner(last)
                add_piece(entry)
                continue
            name = clean(entry.name)
            if name not in entries:  # the common case: a new path
                entries[name] = entry
                add_name(name)
                parent, _, base = name.rpartition("/")
                siblings = children.get(parent)
                if siblings is None:
                    siblings = self._dir(parent)
                siblings[base] = name
                if kind == "dir":
                    children[name] = {}
                    nlink[name] = 2
                    nlink[parent] += 1
            else:
                tidy = self._replace(name, entry) and tidy
            last = None
            if kind == "reg":
                if entry.chunk_digest == entry.digest:  # a one-chunk file: one string
                    entry.chunk_digest = entry.digest
                last = (name, entry)
                if entry.size > 0:
                    add_owner(last)
                    add_piece(entry)
            elif kind == "hardlink":
                links.append((name, entry))
        if self._duplicates:  # then each path once, where its last entry is
            links = [(name, entries[name]) for name in self._order
                     if entries[name].type == "hardlink"]
        for name, entry in links:
            self._link(name, entry)
        if not tidy:
            for name, kids in children.items():
                nlink[name] = 2 + sum(1 for c in kids.values() if c in children)
        self._add_chunks(pieces, owners, tidy and not self._duplicates)

    def _replace(self, name: str, entry: TOCEntry) -> bool:
        """Enter a path seen before: an implicit directory made explicit, or a duplicate (the
        last one wins, at its own position). False when link counts must be redone."""
        old = self._entries[name]
        if name == "" and entry.type != "dir":
            raise InvalidTOC(f"root entry {entry.name!r} is a {entry.type}")
        explicit = self._implicit.get(name) is not old
        if explicit:
            self._duplicates = True
            self._order.remove(name)
        self._entries[name] = entry
        self._order.append(name)
        is_dir, was_dir = entry.type == "dir", name in self._children
        if was_dir and not is_dir:
            del self._children[name], self._nlink[name]
        elif is_dir and not was_dir:
            self._children[name] = {}
            self._nlink[name] = 2
        if name:
            parent, _, base = name.rpartition("/")
            self._dir(parent)[base] = name
        return is_dir and not explicit  # the same directory, now with its own metadata

    def _link(self, name: str, entry: TOCEntry) -> None:
        path = clean_name(entry.link_name)
        target = self._entries.get(path)
        hops = 0
        while target is not None and target.type == "hardlink" and hops < 40:
            path = clean_name(target.link_name)
            target = self._entries.get(path)
            hops += 1
        if target is None or target.type in ("dir", "hardlink"):
            raise InvalidTOC(
                f"{name!r} is a hardlink to {entry.link_name!r}, which is not in the TOC"
            )
        self._targets[name] = path
        self._nlink[path] = self._nlink.get(path, 1) + 1

    def _add_chunks(self, pieces: list[TOCEntry], owners: list[tuple[str, TOCEntry]],
                    unique: bool) -> None:
        """Every file's chunks, checked, as runs of one list in TOC order.

        A member ends where the next one starts. Writers put members in blob order, and when
        the offsets only go up that is simply the next piece's offset, the (path, chunk) pairs
        of :meth:`all_chunks` are already in blob order (if no path is given twice), and a
        file's pieces, when they come in file order and cover it, need no sorting either.
        """
        data_end = self.data_end
        offsets = list(map(_offset, pieces))
        ascending = all(map(lt, offsets, itertools.islice(offsets, 1, None)))
        if not offsets:
            ends = []
        elif ascending and offsets[-1] < data_end:
            ends = [*offsets[1:], data_end]
        else:
            members = sorted(set(offsets) | {data_end})
            member_end = dict(itertools.pairwise(members))
            ends = [member_end.get(offset, data_end) for offset in offsets]  # past it: refused
        entries, runs, flat = self._entries, self._runs, self._chunks
        recheck: list[tuple[str, TOCEntry, int, int]] = []  # to sort, or that do not add up
        owner: tuple[str, TOCEntry] | None = None
        name, file, first, expect, current = "", TOCEntry("", ""), 0, 0, False
        for this, e, end in zip(owners, pieces, ends, strict=True):
            if this is not owner:  # a file's first piece: the file before it is complete
                if owner is not None and expect != file.size:
                    recheck.append((name, file, first, len(flat)))
                owner = this
                name, file = this
                first, expect, current = len(flat), 0, entries[name] is file
            length = file.size - e.chunk_offset
            if e.chunk_size and e.chunk_size < length:
                length = e.chunk_size
            if (length <= 0 or length > MAX_CHUNK_SIZE or e.offset >= data_end
                    or not e.chunk_digest):
                raise self._bad_chunk(name, file, e)
            flat.append(Chunk(e.chunk_offset, length, e.offset, e.inner_offset, end,
                                   e.chunk_digest))
            if current:  # not replaced by a later entry of the same path
                runs[name] = range(first, len(flat))  # (a range: nothing for the collector)
            expect = expect + length if e.chunk_offset == expect else -1  # -1: unordered
        if owner is not None and expect != file.size:
            recheck.append((name, file, first, len(flat)))
        if ascending and unique:
            self._blob_order = list(zip(map(_path_of, owners), flat, strict=True))
        for name, file, first, end in recheck:  # in TOC order: the first bad file is named
            run = sorted(flat[first:end], key=_file_order)
            flat[first:end] = self._check_chunks(name, file, run)

    def _bad_chunk(self, name: str, file: TOCEntry, e: TOCEntry) -> InvalidTOC:
        """What is wrong with a chunk entry, checked in the order the errors are reported."""
        size = file.size
        if e.chunk_offset >= size:
            return InvalidTOC(f"{name!r}: chunk at {e.chunk_offset} is past the file's size")
        length = e.chunk_size or size - e.chunk_offset
        length = min(length, size - e.chunk_offset)
        if length > MAX_CHUNK_SIZE:
            return InvalidTOC(
                f"{name!r}: chunk of {length} bytes at file offset {e.chunk_offset} "
                f"exceeds the {MAX_CHUNK_SIZE}-byte limit (ESTARGZ_MAX_CHUNK_SIZE)"
            )
        if e.offset >= self.data_end:
            return InvalidTOC(
                f"{name!r}: chunk offset {e.offset} is past the end of the blob's data "
                f"({self.data_end})"
            )
        return InvalidTOC(f"{name!r}: chunk at {e.chunk_offset} has no chunkDigest")

    @staticmethod
    def _check_chunks(name: str, file: TOCEntry, chunks: list[Chunk]) -> list[Chunk]:
        expect = 0
        for c in chunks:
            if c.chunk_offset != expect:
                raise InvalidTOC(
                    f"{name!r}: chunks leave a gap or overlap at file offset {expect}"
                )
            expect += c.size
        if expect != file.size:
            raise InvalidTOC(
                f"{name!r}: chunks cover {expect} bytes of a {file.size}-byte file"
            )
        return chunks

    # --- metadata --------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        name = clean_name(path)
        if name not in self._entries:
            raise NotFound(f"{path!r}: no such entry in the blob")
        return name

    def _info(self, name: str) -> FileInfo:
        target = self._targets.get(name)
        content = name if target is None else target
        e = self._entries[content]
        return FileInfo(
            name=name,
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
            nlink=self._nlink.get(content, 1),
            hardlink_to=target,
        )

    def lookup(self, path: str) -> FileInfo | None:
        name = clean_name(path)
        return self._info(name) if name in self._entries else None

    def entry(self, name: str) -> tuple[TOCEntry, int, str | None] | None:
        """The entry holding the metadata of ``name`` (a hardlink's target's), its link count
        and the hardlink target, or None. ``name`` is taken as the index keeps it (clean, no
        leading ``/``): the fast path for a filesystem that asks this for every lookup."""
        target = self._targets.get(name)
        content = name if target is None else target
        e = self._entries.get(content)
        if e is None:
            return None
        return e, self._nlink.get(content, 1), target

    def children(self, name: str) -> KeysView[str] | None:
        """The base names in directory ``name`` (clean, as :meth:`entry` takes it) in TOC
        order, unsorted and uncopied; None if it is not a directory."""
        kids = self._children.get(name)
        return None if kids is None else kids.keys()

    def stat(self, path: str) -> FileInfo:
        return self._info(self._path(path))

    def listdir(self, path: str = "") -> list[str]:
        children = self._children.get(self._path(path))
        if children is None:
            raise NotFound(f"{path!r} is not a directory")
        return sorted(children)

    def walk(self) -> Iterator[FileInfo]:
        """Every entry, explicit ones in TOC order after the implicit directories."""
        for name in self.names():
            yield self._info(name)

    def names(self) -> list[str]:
        """The paths :meth:`walk` visits, in its order, for callers that need no metadata."""
        entries = self._entries
        implicit = [name for name, e in self._implicit.items() if name and entries[name] is e]
        return implicit + self._order

    def hardlinks(self) -> list[str]:
        """The paths that are hardlinks (sharing their target's content and inode)."""
        return list(self._targets)

    def chunks(self, path: str) -> list[Chunk]:
        return self._chunks_of(self._content(self._path(path)))

    def _content(self, name: str) -> str:
        """Where the content of ``name`` is: a hardlink's target, or itself."""
        return self._targets.get(name, name)

    def _chunks_of(self, name: str) -> list[Chunk]:
        run = self._runs.get(name, _NO_CHUNKS)
        return self._chunks[run.start:run.stop]

    # --- content ---------------------------------------------------------------------------

    def _member_bytes(self, name: str, chunk: Chunk) -> bytes:
        what = f"{name!r} at file offset {chunk.chunk_offset} (blob offset {chunk.offset})"
        compressed = _read_exact(
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
                out.sort(key=_blob_order)
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
        i = bisect.bisect_right(chunks, offset, run.start, run.stop, key=_file_order) - 1
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
