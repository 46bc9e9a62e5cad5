"""The blob source of a lazy mount: counts what it fetches, rides out registry outages, and
turns small reads into requests of a useful minimum size.

A read that finds the registry away waits and retries (with capped backoff) until ``timeout``
expires, then fails; the FUSE layer turns that failure into EIO. Bytes are never invented:
everything read here is verified by the reader against the TOC before it is served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from estargz.errors import EstargzError, RegistryError, RegistryUnavailable
from estargz.format import BlobSource

__all__ = ["FetchStats", "ResilientSource", "SourceUnavailable"]

log = logging.getLogger("estargz.lazy")


class SourceUnavailable(EstargzError):
    """The registry stayed unreachable for longer than the read timeout."""


@dataclass(slots=True)
class FetchStats:
    requests: int = 0
    fetched_bytes: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        with self._lock:
            self.requests += 1
            self.fetched_bytes += n

    def retried(self) -> None:
        with self._lock:
            self.retries += 1


def _transient(exc: Exception) -> bool:
    """Worth asking again: the registry away, overloaded (5xx) or limiting the rate (429)."""
    if isinstance(exc, RegistryUnavailable | OSError):
        return True
    return isinstance(exc, RegistryError) and ((exc.status or 0) >= 500 or exc.status == 429)


_AHEAD_BYTES = 16 << 20
"""Read-ahead kept: a tree walk reads in directory order, not blob order, so the bytes a short
read brought along are often wanted a while later, not next."""


class ResilientSource:
    """Wraps a remote :class:`BlobSource` (e.g. a registry blob)."""

    def __init__(
        self,
        inner: BlobSource,
        *,
        timeout: float = 60.0,
        min_request: int = 0,
        stats: FetchStats | None = None,
        name: str = "blob",
    ) -> None:
        self.inner = inner
        self.timeout = timeout
        self.min_request = min_request
        self.stats = stats or FetchStats()
        self.name = name
        self._given_up = False  # the last read found the registry away for the whole timeout
        self._ahead: OrderedDict[int, bytes] = OrderedDict()
        self._ahead_bytes = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.inner.size

    def _buffered(self, offset: int, size: int) -> bytes | None:
        with self._lock:
            for start, data in reversed(self._ahead.items()):  # the newest is the likely one
                if start <= offset and offset + size <= start + len(data):
                    return data[offset - start : offset - start + size]
        return None

    def forget(self) -> None:
        """Drop the read-ahead: it held bytes that failed verification (a bad proxy, a flipped
        bit), and serving them again would fail every retry of the same read."""
        with self._lock:
            self._ahead.clear()
            self._ahead_bytes = 0

    def read_at(self, offset: int, size: int) -> bytes:
        hit = self._buffered(offset, size)
        if hit is not None:
            return hit
        want = min(max(size, self.min_request), self.size - offset)
        data = self._fetch(offset, want)
        if want > size:
            with self._lock:
                self._ahead[offset] = data
                self._ahead_bytes += len(data)
                while self._ahead_bytes > _AHEAD_BYTES:
                    self._ahead_bytes -= len(self._ahead.popitem(last=False)[1])
        return data[:size]

    def _fetch(self, offset: int, size: int) -> bytes:
        """Ask until the timeout is over; once a read has waited that long in vain, the next
        ones ask once each (a workload's every read waiting the whole timeout again would
        take forever) until one gets an answer."""
        deadline = time.monotonic() + (0 if self._given_up else self.timeout)
        delay = 0.2
        while True:
            try:
                data = self.inner.read_at(offset, size)
            except Exception as exc:
                if not _transient(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    self._given_up = True
                    raise SourceUnavailable(
                        f"{self.name}: bytes [{offset}, {offset + size}) unreachable for "
                        f"{self.timeout:.0f}s: {exc}"
                    ) from exc
                self.stats.retried()
                wait = min(delay, left)  # (the last attempt comes at the deadline)
                log.warning("%s: registry unreachable (%s); retrying in %.1fs",
                            self.name, exc, wait)
                time.sleep(wait)
                delay = min(delay * 2, 5.0)
                continue
            self._given_up = False
            self.stats.add(len(data))
            return data
