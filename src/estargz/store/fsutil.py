"""The few file-system moves every crash-safe write in the store is made of.

A file becomes visible only by ``rename`` of a complete, fsynced temporary file created in the
same file system; the rename itself is made durable by fsyncing the directory. A process killed at
any point therefore leaves either the old file or the new one, plus at most a stray temporary.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "fsync_dir", "locked", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(dest: Path, *, tmpdir: Path, mode: int = 0o644,
                durable: bool = True) -> Iterator[BinaryIO]:
    """A file to fill that replaces ``dest`` when the block ends without an exception.

    ``tmpdir`` must be on the same file system as ``dest``; on an exception the temporary file is
    removed and ``dest`` is left as it was. ``durable=False`` skips the fsyncs, for runtime state
    that a reboot makes void anyway: readers still never see half a file.
    """
    fd, name = tempfile.mkstemp(dir=tmpdir, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
        if durable:
            fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(dest: Path, data: bytes, *, tmpdir: Path, mode: int = 0o644,
                 durable: bool = True) -> None:
    """Replace ``dest`` with ``data`` all at once."""
    with atomic_file(dest, tmpdir=tmpdir, mode=mode, durable=durable) as out:
        out.write(data)


@contextmanager
def locked(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` (created if missing) for the duration of the block.

    Locks belong to the open file, so two blocks in one process exclude each other as well.
    ``wait=False``: raise ``BlockingIOError`` at once if another holder is in the way.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) |
                    (0 if wait else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)  # closing releases the lock
