"""Pushing blobs: skip what exists, mount across repositories, upload whole or in chunks.

Upload requests are not repeated one by one (a half-applied PATCH cannot be replayed
safely); when the connection drops or the registry answers 5xx/429, the whole blob starts
again in a new upload session, a bounded number of times. Request bodies are read from the
source into memory one chunk at a time, so the source is opened again for each restart.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO, Literal

import httpx

from estargz.digest import DigestMismatch, Hasher, check_digest, parse_digest
from estargz.errors import (
    AuthenticationError,
    RegistryError,
    RegistryNotFound,
    RegistryUnavailable,
)
from estargz.registry.session import Session, display_url

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MONOLITHIC_LIMIT",
    "BlobData",
    "PushResult",
    "blob_size",
    "mount_blob",
    "push_blob",
]

MONOLITHIC_LIMIT = 16 << 20
DEFAULT_CHUNK_SIZE = 16 << 20
_OCTETS = "application/octet-stream"

BlobData = bytes | bytearray | memoryview | str | os.PathLike[str] | Callable[[], BinaryIO]
PushResult = Literal["exists", "mounted", "uploaded"]
Progress = Callable[[int], None]


@contextmanager
def _open(source: BlobData) -> Iterator[BinaryIO]:
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            yield file
    else:
        stream = source()
        try:
            yield stream
        finally:
            stream.close()


def _read_full(f: BinaryIO, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        data = f.read(left)
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def _location(response: httpx.Response) -> httpx.URL:
    value = response.headers.get("Location")
    if not value:
        request = response.request
        raise RegistryError(
            f"{request.method} {display_url(request.url)}: {response.status_code} without a "
            "Location header", method=request.method, url=str(request.url),
            status=response.status_code,
        )
    try:
        return response.request.url.join(value)
    except httpx.InvalidURL:
        request = response.request
        raise RegistryError(
            f"{request.method} {display_url(request.url)}: bad Location {value[:100]!r}",
            method=request.method, url=str(request.url), status=response.status_code,
        ) from None


def blob_size(session: Session, repo: str, digest: str) -> int | None:
    """The size the registry reports for a blob, or None if it does not have it."""
    parse_digest(digest)
    response, _ = session.fetch("HEAD", session.api_url(repo, "blobs", digest), ok=(200, 404))
    if response.status_code == 404:
        return None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else -1


def _start(
    session: Session, repo: str, mount: tuple[str, str] | None = None
) -> tuple[bool, httpx.URL | None]:
    """Open an upload session; with ``mount=(digest, from_repo)`` try a mount first."""
    params = {"mount": mount[0], "from": mount[1]} if mount else None
    response, _ = session.fetch(
        "POST", session.api_url(repo, "blobs", "uploads", ""), params=params, content=b"",
        ok=(201, 202), retry=False,
    )
    if response.status_code == 201:
        return True, None
    return False, _location(response)


def _cancel(session: Session, location: httpx.URL | None) -> None:
    """Best effort: a failed cancel only leaves a session for the registry to purge."""
    if location is None:
        return
    with suppress(RegistryError):
        session.fetch("DELETE", location, ok=(200, 202, 204, 404), retry=False)


def mount_blob(session: Session, repo: str, digest: str, from_repo: str) -> bool:
    """Link a blob of ``from_repo`` into ``repo`` without uploading; False if refused."""
    parse_digest(digest)
    mounted, location = _start(session, repo, (digest, from_repo))
    if not mounted:
        _cancel(session, location)
    return mounted


def _commit(session: Session, location: httpx.URL, digest: str, body: bytes) -> None:
    url = location.copy_merge_params({"digest": digest})
    response, _ = session.fetch(
        "PUT", url, headers={"Content-Type": _OCTETS}, content=body, ok=(201, 204), retry=False
    )
    stored = response.headers.get("Docker-Content-Digest")
    if stored and stored.split(":", 1)[0] == digest.split(":", 1)[0] and stored != digest:
        raise DigestMismatch(f"blob {digest}: registry stored it as {stored}")


def _upload_whole(
    session: Session, location: httpx.URL, digest: str, size: int, source: BlobData,
    progress: Progress | None,
) -> None:
    with _open(source) as f:
        data = _read_full(f, size + 1)
    if len(data) != size:
        raise DigestMismatch(f"blob {digest}: source has {len(data)}+ bytes, expected {size}"
                             if len(data) > size else
                             f"blob {digest}: source has {len(data)} bytes, expected {size}")
    check_digest(data, digest, f"blob {digest} source")
    _commit(session, location, digest, data)
    if progress is not None:
        progress(size)


def _upload_chunks(
    session: Session, location: httpx.URL, digest: str, size: int, source: BlobData,
    chunk_size: int, progress: Progress | None,
) -> None:
    algorithm, _ = parse_digest(digest)
    hasher = Hasher(algorithm)
    with _open(source) as f:
        while True:
            data = _read_full(f, chunk_size)
            if not data:
                break
            offset = hasher.size
            if offset + len(data) > size:
                raise DigestMismatch(f"blob {digest}: source is longer than {size} bytes")
            hasher.update(data)
            response, _ = session.fetch(
                "PATCH", location, content=data, ok=(202, 204), retry=False,
                headers={"Content-Type": _OCTETS,
                         "Content-Range": f"{offset}-{offset + len(data) - 1}"},
            )
            if response.headers.get("Location"):
                location = _location(response)
            if progress is not None:
                progress(hasher.size)
    if hasher.size != size:
        raise DigestMismatch(f"blob {digest}: source has {hasher.size} bytes, expected {size}")
    if hasher.digest != digest:
        raise DigestMismatch(f"blob {digest} source: content has digest {hasher.digest}")
    _commit(session, location, digest, b"")


def _restartable(exc: RegistryError) -> bool:
    if isinstance(exc, RegistryUnavailable):
        return True
    return isinstance(exc, RegistryNotFound) and exc.code == "BLOB_UPLOAD_UNKNOWN"


def push_blob(
    session: Session,
    repo: str,
    digest: str,
    size: int,
    source: BlobData,
    *,
    mount_from: str | None = None,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    monolithic_limit: int = MONOLITHIC_LIMIT,
) -> PushResult:
    """Make ``digest`` exist in ``repo``: "exists", "mounted" from ``mount_from``, or "uploaded".

    Blobs up to ``monolithic_limit`` go in one PUT unless ``chunk_size`` is given; larger ones
    are sent as PATCH chunks. ``progress`` gets the bytes sent so far (0 after a restart).
    """
    parse_digest(digest)
    if size < 0:
        raise ValueError(f"blob {digest}: negative size {size}")
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if blob_size(session, repo, digest) is not None:
        return "exists"
    location: httpx.URL | None = None
    if mount_from and mount_from != repo:
        try:
            mounted, location = _start(session, repo, (digest, mount_from))
        except AuthenticationError:
            mounted = False  # no pull access to the source: upload instead
        if mounted:
            return "mounted"
    chunked = chunk_size is not None or size > monolithic_limit
    retries = session.policy.retries
    for attempt in range(retries + 1):
        try:
            if location is None:
                _, location = _start(session, repo)
            assert location is not None
            if chunked:
                _upload_chunks(session, location, digest, size, source,
                               chunk_size or DEFAULT_CHUNK_SIZE, progress)
            else:
                _upload_whole(session, location, digest, size, source, progress)
            return "uploaded"
        except DigestMismatch:
            _cancel(session, location)
            raise
        except RegistryError as exc:
            if not _restartable(exc) or attempt == retries:
                raise
            _cancel(session, location)
            location = None
            if progress is not None:
                progress(0)
            session.policy.sleep(attempt)
    raise AssertionError("unreachable")  # pragma: no cover
