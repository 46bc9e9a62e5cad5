"""Writing results: JSON for machines, one plain line for people, atomic output files."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any, BinaryIO

import orjson

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
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".estargz-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
