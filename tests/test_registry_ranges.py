"""Range headers, Content-Range and multipart/byteranges parsing, on byte strings."""

from __future__ import annotations

import pytest

from estargz.registry.ranges import (
    ContentRange,
    Part,
    parse_content_range,
    parse_multipart_byteranges,
    range_header,
)


def test_range_header() -> None:
    assert range_header([(0, 10), (5, 0), (100, 1)]) == "bytes=0-9,100-100"
    with pytest.raises(ValueError):
        range_header([(3, 0)])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-99/1234", ContentRange(0, 99, 1234)),
        ("bytes 5-5/*", ContentRange(5, 5, None)),
        ("BYTES  10-19/20 ", ContentRange(10, 19, 20)),
        ("bytes */1234", None),
        ("bytes 9-3/10", None),
        ("items 0-1/2", None),
        (None, None),
    ],
)
def test_parse_content_range(value: str | None, expected: ContentRange | None) -> None:
    assert parse_content_range(value) == expected


def test_multipart_parts_are_cut_by_content_range() -> None:
    boundary = "3d6b6a416f9b5"
    tricky = b"x\r\n--" + boundary.encode() + b"\r\ny"  # the boundary inside the data
    body = (
        b"--" + boundary.encode() + b"\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Range: bytes 100-" + str(99 + len(tricky)).encode() + b"/5000\r\n\r\n"
        + tricky + b"\r\n"
        b"--" + boundary.encode() + b"\r\n"
        b"Content-Range: bytes 0-3/5000\r\n\r\n"
        b"abcd\r\n"
        b"--" + boundary.encode() + b"--\r\n"
    )
    parts = parse_multipart_byteranges(f"multipart/byteranges; boundary={boundary}", body)
    assert parts == [Part(100, tricky), Part(0, b"abcd")]
    assert parts[0].slice(101, 3) == tricky[1:4]
    assert parts[0].slice(99, 3) is None
    assert parts[1].slice(0, 4) == b"abcd" and parts[1].slice(2, 3) is None


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("text/plain", b"", "not a multipart/byteranges"),
        ("multipart/byteranges; boundary=b", b"nothing", "no boundary"),
        ("multipart/byteranges; boundary=b", b"--b\r\nContent-Range: bytes 0-9/10\r\n\r\nabc",
         "shorter than its Content-Range"),
        ("multipart/byteranges; boundary=b", b"--b\r\nX: y\r\n\r\nabc\r\n--b--",
         "without a valid Content-Range"),
        ('multipart/byteranges; boundary="b"', b"--b\r\nContent-Range: bytes 0-0/1\r\n\r\na",
         "not terminated"),
    ],
)
def test_multipart_rejects(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_multipart_byteranges(content_type, body)
