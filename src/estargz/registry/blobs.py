"""Reading blobs: whole and verified, or by byte ranges for lazy readers.

Registries and the storage they redirect to differ in how they answer ``Range``: some send
206 with fewer bytes than asked, some ignore the header and send the whole blob with 200, some
refuse several ranges in one request. Each function here copes with all of them, and resumes
a body that breaks off instead of starting again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

import httpx

from estargz.digest import DigestMismatch, Hasher, parse_digest
from estargz.errors import RegistryError, RegistryUnavailable
from estargz.registry.ranges import (
    Part,
    parse_content_range,
    parse_multipart_byteranges,
    range_header,
)
from estargz.registry.session import Session, display_url

__all__ = ["fetch_blob", "read_range", "read_ranges"]

_IDENTITY = {"Accept-Encoding": "identity"}
_MAX_RANGES_PER_REQUEST = 64

Progress = Callable[[int], None]


def _give_up(url: httpx.URL, what: str, exc: Exception | None, attempts: int) -> RegistryError:
    cause = f": {exc}" if exc else ""
    return RegistryUnavailable(
        f"GET {display_url(url)}: {what}{cause} (after {attempts} attempts)", method="GET",
        url=str(url),
    )


def _after(chunks: Iterator[bytes], skip: int) -> Iterator[bytes]:
    """The body from byte ``skip`` on: for servers that answer a Range with the whole blob."""
    for chunk in chunks:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        yield chunk[skip:] if skip else chunk
        skip = 0


def _finish(body: Iterator[bytes], limit: int = 64 << 10) -> None:
    """Read what is left of a range's body (normally nothing but its end), so that its
    connection goes back to the pool: a response closed early closes the connection, and the
    next range read would open a new one."""
    for chunk in body:
        limit -= len(chunk)
        if limit < 0:
            return


def fetch_blob(
    session: Session,
    repo: str,
    digest: str,
    dst: BinaryIO,
    *,
    size: int | None = None,
    progress: Progress | None = None,
    max_size: int | None = None,
) -> int:
    """Stream a blob into ``dst`` and verify it; returns the number of bytes written.

    A body that breaks off is resumed with ``Range: bytes=<done>-`` (or by skipping what was
    already written if the server ignores the range). On DigestMismatch the bytes already in
    ``dst`` must be discarded by the caller.
    """
    algorithm, _ = parse_digest(digest)
    limit = size if size is not None else max_size
    url = session.api_url(repo, "blobs", digest)
    hasher = Hasher(algorithm)
    failures = 0
    while True:
        done = hasher.size
        headers = dict(_IDENTITY)
        if done:
            headers["Range"] = f"bytes={done}-"
        try:
            with session.stream("GET", url, headers=headers, ok=(200, 206)) as response:
                skip = 0
                if done and response.status_code == 200:
                    skip = done  # the server ignored the range: drop what we already have
                elif done:
                    got = parse_content_range(response.headers.get("Content-Range"))
                    if got is None or got.start != done:
                        raise RegistryError(
                            f"GET {display_url(url)}: asked to resume at byte {done}, got "
                            f"Content-Range {response.headers.get('Content-Range')!r}",
                            method="GET", url=str(url), status=response.status_code,
                        )
                for chunk in _after(response.iter_raw(), skip):
                    if limit is not None and hasher.size + len(chunk) > limit:
                        raise DigestMismatch(
                            f"blob {digest}: more than the expected {limit} bytes"
                        )
                    hasher.update(chunk)
                    dst.write(chunk)
                    if progress is not None:
                        progress(hasher.size)
            break
        except httpx.TransportError as exc:
            failures = 0 if hasher.size > done else failures + 1
            if failures > session.policy.retries:
                raise _give_up(url, "download keeps breaking off", exc, failures) from None
            session.policy.sleep(max(0, failures - 1))
    if size is not None and hasher.size != size:
        raise DigestMismatch(f"blob {digest}: got {hasher.size} bytes, expected {size}")
    if hasher.digest != digest:
        raise DigestMismatch(f"blob {digest}: content has digest {hasher.digest}")
    return hasher.size


def read_range(session: Session, repo: str, digest: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (fewer only at the end of the blob).

    Copes with a 206 that carries fewer bytes than asked (asks again for the rest), a 200
    with the whole blob (skips to ``offset``) and a body that breaks off (asks for the rest).
    """
    if offset < 0 or length < 0:
        raise ValueError(f"negative range: offset {offset} length {length}")
    url = session.api_url(repo, "blobs", digest)
    out = bytearray()
    failures = 0
    while len(out) < length:
        start, end = offset + len(out), offset + length - 1
        before = len(out)
        at_end = False
        error: Exception | None = None
        try:
            with session.stream(
                "GET", url, headers={**_IDENTITY, "Range": f"bytes={start}-{end}"},
                ok=(200, 206, 416),
            ) as response:
                if response.status_code == 416:
                    break  # starts at or past the end of the blob
                skip = start
                if response.status_code == 206:
                    got = parse_content_range(response.headers.get("Content-Range"))
                    if got is None or got.start != start:
                        raise RegistryError(
                            f"GET {display_url(url)}: asked for bytes {start}-{end}, got "
                            f"Content-Range {response.headers.get('Content-Range')!r}",
                            method="GET", url=str(url), status=206,
                        )
                    skip = 0
                    at_end = got.total is not None and got.end + 1 >= got.total
                body = response.iter_raw()
                for chunk in _after(body, skip):
                    out += chunk[: length - len(out)]
                    if len(out) >= length:
                        break
                else:
                    at_end = at_end or response.status_code == 200
                if len(out) >= length and response.status_code == 206:
                    _finish(body)
        except httpx.TransportError as exc:
            at_end, error = False, exc
        if at_end:
            break
        if len(out) > before:
            failures = 0
            continue
        failures += 1
        if failures > session.policy.retries:
            raise _give_up(url, f"bytes {start}-{end} never arrived", error, failures)
        session.policy.sleep(failures - 1)
    return bytes(out)


def _multi_range(session: Session, url: httpx.URL, ranges: Sequence[tuple[int, int]]) -> list[Part]:
    """One request for several ranges; [] when the server will not serve them that way."""
    wanted = sum(length for _, length in ranges)
    limit = wanted + 256 * len(ranges) + 4096
    with session.stream(
        "GET", url, headers={**_IDENTITY, "Range": range_header(ranges)},
        ok=(200, 206, 400, 416, 501),
    ) as response:
        if response.status_code != 206:
            return []  # refused or ignored: do not read a whole blob we did not ask for
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > limit:
                return []
        content_type = response.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/byteranges"):
            try:
                return parse_multipart_byteranges(content_type, bytes(body))
            except ValueError:
                return []
        got = parse_content_range(response.headers.get("Content-Range"))
        if got is None:
            return []
        return [Part(got.start, bytes(body[: got.length]))]


def read_ranges(
    session: Session, repo: str, digest: str, ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """The bytes of each ``(offset, length)``, asked for in one multi-range request.

    Ranges the answer does not cover (the server sent 200, one part, or refused) are read one
    request each with :func:`read_range`.
    """
    for offset, length in ranges:
        if offset < 0 or length < 0:
            raise ValueError(f"negative range: offset {offset} length {length}")
    url = session.api_url(repo, "blobs", digest)
    results: list[bytes | None] = [b"" if length == 0 else None for _, length in ranges]
    pending = [i for i, r in enumerate(results) if r is None]
    if len(pending) > 1:
        for first in range(0, len(pending), _MAX_RANGES_PER_REQUEST):
            batch = pending[first : first + _MAX_RANGES_PER_REQUEST]
            try:
                parts = _multi_range(session, url, [ranges[i] for i in batch])
            except httpx.TransportError:
                parts = []
            for i in batch:
                offset, length = ranges[i]
                for part in parts:
                    piece = part.slice(offset, length)
                    if piece is not None:
                        results[i] = piece
                        break
    return [
        r if r is not None else read_range(session, repo, digest, *ranges[i])
        for i, r in enumerate(results)
    ]
