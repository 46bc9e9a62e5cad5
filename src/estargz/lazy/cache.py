"""On-disk cache of verified chunks, shared by the layer servers of a store, bounded in total.

Each layer has its own directory under the cache root; the bound holds for the root as a
whole, whichever processes write to it. Entries are plain files written atomically; the reader
re-checks every entry's digest, so the cache needs no integrity of its own. Eviction drops the
least recently used files of every layer first: a file's modification time is its last use
(set on every write and every hit), so processes that never talk agree on the order.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

__all__ = ["DiskChunkCache"]

_LOW_WATER = 0.9
"""An eviction goes down to this share of the bound, so that it is not needed at every put."""


class DiskChunkCache:
    """``get``/``put`` by key under ``root/<namespace>/``; everything under ``root`` at most
    ``max_bytes`` on disk."""

    def __init__(self, root: Path, namespace: str, max_bytes: int = 4 << 30) -> None:
        self.root = Path(root)
        self.dir = self.root / namespace
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.generation = 0
        """Bumped whenever the set of keys changes: counting them again can wait until then."""
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] | None = None  # read on first use, off the mount path
        self._total = 0
        self._others = 0  # bytes of the other layers' directories, as last seen

    def _known(self) -> OrderedDict[str, int]:
        """This layer's entries on disk, oldest use first (call with the lock held); the first
        call also sizes up the other layers' directories (one scan of the root for both)."""
        if self._sizes is None:
            entries = self._scan(clean=True)
            mine = sorted((used, os.path.basename(path), size)
                          for used, path, size, own in entries if own)
            self._sizes = OrderedDict((name, size) for _, name, size in mine)
            self._total = sum(self._sizes.values())
            self._others = sum(size for _, _, size, own in entries if not own)
        return self._sizes

    def _scan(self, *, clean: bool = False) -> list[tuple[int, str, int, bool]]:
        """Every entry under the root: (last use, path, size, whether it is this layer's).
        ``clean``: also remove this layer's temporary files (of puts that were interrupted)."""
        out = []
        mine = os.fspath(self.dir)
        with os.scandir(self.root) as layers:
            for layer in layers:
                if not layer.is_dir(follow_symlinks=False):
                    continue
                own = layer.path == mine
                with contextlib.suppress(FileNotFoundError), os.scandir(layer.path) as it:
                    for entry in it:
                        if entry.name.startswith("."):
                            if clean and own:
                                with contextlib.suppress(FileNotFoundError):
                                    os.unlink(entry.path)
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            st = entry.stat(follow_symlinks=False)
                            out.append((st.st_mtime_ns, entry.path, st.st_size, own))
        return out

    def _evict(self) -> None:
        """Remove the least recently used entries of every layer until the whole cache is at
        the low-water mark (call with the lock held)."""
        sizes = self._known()
        entries = sorted(self._scan())
        total = sum(size for _, _, size, _ in entries)
        target = int(self.max_bytes * _LOW_WATER)
        for _, path, size, mine in entries:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
            if mine:
                self._total -= sizes.pop(os.path.basename(path), 0)
        self._others = max(0, total - self._total)

    def __contains__(self, key: object) -> bool:
        """Known to this process (found at start or put since): no disk access, cheap enough
        to ask for every chunk of a layer every fraction of a second."""
        with self._lock:
            return key in self._known()

    def count(self) -> int:
        """How many chunks of this layer are cached (its directory holds nothing else)."""
        with self._lock:
            return len(self._known())

    def get(self, key: str) -> bytes | None:
        path = self.dir / key
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with self._lock:  # (not loaded yet: nothing to forget, and no scan on a miss)
                size = None if self._sizes is None else self._sizes.pop(key, None)
                if size is not None:  # evicted by another layer's server
                    self._total -= size
                    self.generation += 1
            return None
        now = time.time_ns()
        with contextlib.suppress(OSError):  # (evicted meanwhile, or a read-only cache)
            os.utime(path, ns=(now, now))  # its last use, for every process's eviction
        with self._lock:
            if self._sizes is not None and key in self._sizes:
                self._sizes.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        fd, tmp = tempfile.mkstemp(prefix=".", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            now = time.time_ns()
            os.utime(tmp, ns=(now, now))  # (exact: the kernel's own stamps are coarser)
            os.replace(tmp, self.dir / key)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return  # a full disk makes the cache smaller, not the read fail
        with self._lock:
            sizes = self._known()
            self._total += len(data) - sizes.pop(key, 0)
            sizes[key] = len(data)
            if self._total + self._others > self.max_bytes:
                self._evict()
            self.generation += 1

    @property
    def size(self) -> int:
        """This layer's bytes on disk, as this process knows them."""
        with self._lock:
            self._known()
            return self._total
