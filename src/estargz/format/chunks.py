"""Chunks: where a piece of a file's content lives, and the memory that keeps chunks while
they are fetched and after.

:class:`Chunk` is what the index makes of the TOC's ``chunk`` entries; :class:`MemoryCache`
keeps recently read chunks; :class:`InFlight` lets a second reader of a chunk wait for the
first; :class:`ChunkCache` is the second-level store (on disk) a caller may plug in.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from operator import attrgetter
from typing import Protocol

import msgspec

__all__ = ["Chunk", "ChunkCache", "InFlight", "MemoryCache", "blob_order", "by_file_offset"]


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


by_file_offset = attrgetter("chunk_offset")


def blob_order(item: tuple[str, Chunk]) -> tuple[int, int]:
    return item[1].offset, item[1].inner_offset


class MemoryCache:
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


class InFlight:
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
