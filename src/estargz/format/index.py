"""The index of a TOC: paths, directories, links and chunks, checked as they are built."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, KeysView
from dataclasses import dataclass
from operator import attrgetter, itemgetter, lt

from estargz.errors import InvalidTOC, NotFound
from estargz.format.chunks import Chunk, by_file_offset
from estargz.format.tarscan import clean_name
from estargz.format.toc import paused_gc
from estargz.format.types import MAX_CHUNK_SIZE, TOCEntry

__all__ = ["FileInfo", "TOCIndex"]

_offset = attrgetter("offset")
_path_of = itemgetter(0)
_NO_CHUNKS = range(0)
_NO_XATTRS: dict[str, bytes] = {}
"""Shared by every entry without xattrs: the index never changes an entry's xattrs."""


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


class TOCIndex:
    """The tree a TOC describes: every path's entry, directories' children, link counts,
    hardlink targets and each file's chunks, built in one pass and never changed after.

    The index is a few dicts keyed by path rather than an object per path; lookups, listings
    and metadata come from here, content from :class:`~estargz.format.reader.BlobReader`.
    """

    def __init__(self, entries: list[TOCEntry], data_end: int) -> None:
        self.entries = entries
        self.data_end = data_end
        self._entries: dict[str, TOCEntry] = {}  # every path (the last entry of a path wins)
        self._children: dict[str, dict[str, str]] = {}  # directories: base name -> path
        self._nlink: dict[str, int] = {}  # where it is not 1: directories, hardlink targets
        self._targets: dict[str, str] = {}  # hardlink -> the path whose content it shares
        self._chunks: list[Chunk] = []  # every file's, in TOC order
        self._runs: dict[str, range] = {}  # file -> where its chunks are in _chunks
        self._order: list[str] = []  # explicit entries, in TOC order
        self._implicit: dict[str, TOCEntry] = {}  # directories made for want of an entry
        self._duplicates = False  # some path has two entries
        self._blob_order: list[tuple[str, Chunk]] | None = None  # chunks, when TOC order is
        with paused_gc():
            self._index()

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
            run = sorted(flat[first:end], key=by_file_offset)
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
