"""Writing results: JSON for machines, one plain line for people, atomic output files."""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson

from estargz.store.fsutil import atomic_file

__all__ = ["atomic_output", "emit_json", "say"]


def emit_json(value: Any, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    stream.flush()


def say(text: str) -> None:
    print(text, file=sys.stderr)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` only once complete; ``-`` is standard output."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    dest = Path(path).absolute()
    if not dest.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such directory to write into", str(dest.parent))
    with atomic_file(dest, tmpdir=dest.parent) as f:
        yield f
