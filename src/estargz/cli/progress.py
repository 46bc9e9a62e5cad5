"""Progress for pull, push and convert: a ``rich`` display on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from estargz.image.model import Descriptor
from estargz.image.transfer import Progress as TransferProgress

__all__ = ["Reporter", "reporter"]


class Reporter:
    """Turns library callbacks into output; thread-safe (blobs move in parallel)."""

    def __init__(self, quiet: bool, live: bool) -> None:
        self.quiet = quiet
        self._lock = threading.Lock()
        self._rich: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        if live and not quiet:
            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=False,
            )

    def __enter__(self) -> Reporter:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def _started(self, desc: Descriptor, what: str) -> None:
        label = f"{what} {desc.digest[7:19]}"
        with self._lock:
            if self._rich is not None:
                self._tasks[desc.digest] = self._rich.add_task(label, total=desc.size)
        if self._rich is None:
            self.line(f"{label} {desc.media_type} ({desc.size} bytes)")

    def _advanced(self, desc: Descriptor, n: int) -> None:
        if self._rich is not None:
            task = self._tasks.get(desc.digest)
            if task is not None:
                self._rich.update(task, completed=n)

    def _done(self, desc: Descriptor, how: str) -> None:
        with self._lock:
            task = self._tasks.pop(desc.digest, None)
        if self._rich is not None and task is not None:
            self._rich.update(task, completed=desc.size, description=f"{how} {desc.digest[7:19]}")
        elif self._rich is None:
            self.line(f"{how} {desc.digest[7:19]} {desc.media_type}")

    def transfer(self) -> TransferProgress:
        return TransferProgress(self._started, self._advanced, self._done)

    def message(self, text: str) -> None:
        self.line(text)


@contextmanager
def reporter(args: Any) -> Iterator[Reporter]:
    """The reporter for a command: live only on a terminal, silent with ``--quiet``."""
    live = sys.stderr.isatty()
    with Reporter(bool(getattr(args, "quiet", False)), live) as rep:
        yield rep
