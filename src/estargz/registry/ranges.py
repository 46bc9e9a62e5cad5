"""HTTP byte ranges: the ``Range`` header we send and the ``Content-Range``/multipart we get.

Kept apart from the client so the parsing of what servers send back (single parts, several
parts, parts in a different order) is tested on byte strings alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ContentRange",
    "Part",
    "parse_content_range",
    "parse_multipart_byteranges",
    "range_header",
]

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ContentRange:
    """``bytes start-end/total``; ``end`` is inclusive, ``total`` None when ``*``."""

    start: int
    end: int
    total: int | None

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a ``multipart/byteranges`` body."""

    start: int
    data: bytes

    @property
    def end(self) -> int:
        """Exclusive end offset."""
        return self.start + len(self.data)

    def slice(self, offset: int, length: int) -> bytes | None:
        """The bytes ``[offset, offset+length)`` if this part holds all of them."""
        if self.start <= offset and offset + length <= self.end:
            return self.data[offset - self.start : offset - self.start + length]
        return None


def range_header(ranges: Sequence[tuple[int, int]]) -> str:
    """``bytes=a-b,c-d`` for ``(offset, length)`` pairs with length > 0."""
    specs = [f"{off}-{off + length - 1}" for off, length in ranges if length > 0]
    if not specs:
        raise ValueError("no non-empty range to request")
    return "bytes=" + ",".join(specs)


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse ``Content-Range: bytes 0-99/1234``; None when absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return ContentRange(start, end, total)


def parse_multipart_byteranges(content_type: str, body: bytes) -> list[Part]:
    """The parts of a ``multipart/byteranges`` body, each placed by its ``Content-Range``.

    Part lengths come from ``Content-Range``, not from searching for the boundary, so binary
    data that happens to contain the boundary cannot cut a part short. Raises ValueError on a
    body that does not have that shape.
    """
    m = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/byteranges") or not m:
        raise ValueError(f"not a multipart/byteranges content type: {content_type!r}")
    delimiter = b"--" + (m.group(1) or m.group(2)).encode()
    parts: list[Part] = []
    pos = body.find(delimiter)
    if pos < 0:
        raise ValueError("multipart body has no boundary")
    while True:
        pos += len(delimiter)
        if body[pos : pos + 2] == b"--":
            return parts
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise ValueError("multipart part without a header block")
        content_range: ContentRange | None = None
        for line in body[pos:head_end].split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep and name.strip().lower() == b"content-range":
                content_range = parse_content_range(value.decode("latin-1"))
        if content_range is None:
            raise ValueError("multipart part without a valid Content-Range")
        start = head_end + 4
        stop = start + content_range.length
        if stop > len(body):
            raise ValueError("multipart part shorter than its Content-Range")
        parts.append(Part(content_range.start, body[start:stop]))
        pos = body.find(delimiter, stop)
        if pos < 0:
            raise ValueError("multipart body is not terminated")
