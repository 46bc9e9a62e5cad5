"""On-disk cache of verified chunks, bounded in size, shared by the layer servers of a store.

Entries are plain files written atomically; the reader re-checks every entry's digest, so the
cache needs no integrity of its own. Eviction drops the least recently used files first.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

__all__ = ["DiskChunkCache"]


class DiskChunkCache:
    """``get``/``put`` by key under ``root/<namespace>/``, at most ``max_bytes`` on disk."""

    def __init__(self, root: Path, namespace: str, max_bytes: int = 4 << 30) -> None:
        self.dir = Path(root) / namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.generation = 0
        """Bumped whenever the set of keys changes: counting them again can wait until then."""
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] | None = None  # read on first use, off the mount path
        self._total = 0

    def _known(self) -> OrderedDict[str, int]:
        """The entries on disk, oldest use first (call with the lock held)."""
        if self._sizes is None:
            entries = []
            with os.scandir(self.dir) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)  # a temp file of an interrupted put
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat()
                        entries.append((st.st_atime, entry.name, st.st_size))
            self._sizes = OrderedDict((name, size) for _, name, size in sorted(entries))
            self._total = sum(self._sizes.values())
        return self._sizes

    def __contains__(self, key: object) -> bool:
        """Known to this process (found at start or put since): no disk access, cheap enough
        to ask for every chunk of a layer every fraction of a second."""
        with self._lock:
            return key in self._known()

    def count_of(self, keys: set[str]) -> int:
        """How many of ``keys`` are cached (one set operation, not a lookup per key)."""
        with self._lock:
            return len(keys.intersection(self._known()))

    def get(self, key: str) -> bytes | None:
        try:
            data = (self.dir / key).read_bytes()
        except FileNotFoundError:
            return None
        with self._lock:
            sizes = self._known()
            if key in sizes:
                sizes.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        fd, tmp = tempfile.mkstemp(prefix=".", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.dir / key)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return  # a full disk makes the cache smaller, not the read fail
        with self._lock:
            sizes = self._known()
            self._total += len(data) - sizes.pop(key, 0)
            sizes[key] = len(data)
            while self._total > self.max_bytes and sizes:
                old, size = sizes.popitem(last=False)
                self._total -= size
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / old).unlink()
            self.generation += 1

    @property
    def size(self) -> int:
        with self._lock:
            self._known()
            return self._total
