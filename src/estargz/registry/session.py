"""One registry's HTTP plumbing: retries of safe requests and translation of every failure.

This is the boundary where httpx exceptions and error responses become :class:`RegistryError`
subclasses carrying the OCI ``errors[]`` codes. GET and HEAD are retried on transport errors,
408/429 and 5xx (honouring ``Retry-After``); anything else is sent once, and the upload code
decides to restart at the blob level.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import httpx
import orjson

from estargz.errors import (
    AuthenticationError,
    RegistryError,
    RegistryNotFound,
    RegistryUnavailable,
)
from estargz.reference import validate_repository
from estargz.registry.auth import RegistryAuth
from estargz.registry.retry import RETRY_STATUSES, RetryPolicy, parse_retry_after

__all__ = ["Session", "display_url", "error_from_response"]

_ERROR_BODY_LIMIT = 64 * 1024
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def display_url(url: httpx.URL | str) -> str:
    """``host:port/path`` without scheme or query (upload URLs carry state in the query)."""
    u = httpx.URL(url)
    return f"{u.netloc.decode('ascii')}{u.path}"


def _oci_errors(body: bytes) -> tuple[tuple[str, str], ...]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ()
    items = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return ()
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append((str(item.get("code") or ""), str(item.get("message") or "")))
    return tuple(out)


def error_from_response(
    response: httpx.Response, body: bytes, *, hint: str = "", attempts: int = 1
) -> RegistryError:
    """The typed error for a failed response, with its OCI codes in the message."""
    request = response.request
    method, status = request.method, response.status_code
    errors = _oci_errors(body)
    if errors:
        detail = "; ".join(f"{code}: {msg}" if msg else code for code, msg in errors)
    else:
        text = body[:200].decode("utf-8", "replace").strip()
        detail = response.reason_phrase + (f": {text}" if text and len(text) < 200 else "")
    message = f"{method} {display_url(request.url)}: {status} {detail}"
    cls: type[RegistryError] = RegistryError
    if status in (401, 403):
        cls = AuthenticationError
        if hint:
            message += f" ({hint})"
    elif status == 404 or any(code.endswith("_UNKNOWN") for code, _ in errors):
        cls = RegistryNotFound
    elif status in RETRY_STATUSES:
        cls = RegistryUnavailable
        if attempts > 1:
            message += f" (after {attempts} attempts)"
    return cls(message, method=method, url=str(request.url), status=status, errors=errors)


def _root_cause(exc: BaseException) -> BaseException:
    """The OS error that httpx and httpcore wrapped, else ``exc``. Only causes and OS errors
    are followed: an unrelated exception being handled at the time is not a cause."""
    seen: set[int] = set()
    while not isinstance(exc, OSError) and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif isinstance(exc.__context__, OSError):
            exc = exc.__context__
        else:
            break
    return exc


def _refused(exc: httpx.TransportError) -> bool:
    """The host does not resolve or nothing listens on the port: not a hiccup that waiting
    cures, unlike a 503, a timeout or a dropped connection."""
    root = _root_cause(exc)
    return isinstance(exc, httpx.ConnectError) and isinstance(
        root, socket.gaierror | ConnectionRefusedError)


_TIMEOUTS = {
    httpx.ConnectTimeout: "timed out connecting",
    httpx.ReadTimeout: "timed out waiting for the answer",
    httpx.WriteTimeout: "timed out sending the request",
    httpx.PoolTimeout: "timed out waiting for a free connection",
}


def _describe(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return _TIMEOUTS.get(type(exc), "timed out")
    root = _root_cause(exc)
    if isinstance(root, socket.gaierror):
        return (f"the host name does not resolve ({root.strerror or root}): check the "
                "registry part of the reference")
    if isinstance(root, ConnectionRefusedError):
        return ("connection refused: nothing listens on that host and port (is the registry "
                "running?)")
    text = (root.strerror if isinstance(root, OSError) and root.strerror else str(root)) or str(
        exc)
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {text}"
    return f"connection failed: {text or 'closed unexpectedly'}"


class Session:
    """Sends requests for one registry through an ``httpx.Client`` that carries its auth."""

    def __init__(self, base_url: str, client: httpx.Client, auth: RegistryAuth,
                 policy: RetryPolicy) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.auth = auth
        self.policy = policy
        self._reached = False  # has a connection to the registry ever been made?

    def api_url(self, repo: str, *parts: str) -> httpx.URL:
        """``<base>/v2/<repo>/<parts...>``; the repository name is validated first."""
        validate_repository(repo)
        return httpx.URL(f"{self.base_url}/v2/{repo}/" + "/".join(parts))

    def url(self, path: str) -> httpx.URL:
        return httpx.URL(f"{self.base_url}{path}")

    # -- the two ways to send --------------------------------------------------------------

    def fetch(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        ok: Collection[int] = (200,),
        retry: bool | None = None,
        limit: int = 1 << 20,
    ) -> tuple[httpx.Response, bytes]:
        """Send and read the whole decoded body (at most ``limit`` bytes); returns closed."""
        result: list[bytes] = []
        response = self._send(method, url, headers, content, params, ok, retry, limit, result)
        return response, result[0]

    @contextmanager
    def stream(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (200,),
        retry: bool | None = None,
    ) -> Iterator[httpx.Response]:
        """Send, check the status, and hand over the unread response (closed afterwards).

        Errors while reading the body inside the ``with`` block are the caller's to handle.
        """
        response = self._send(method, url, headers, None, None, ok, retry, None, None)
        try:
            yield response
        finally:
            response.close()

    # -- the loop --------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: httpx.URL | str,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        params: Mapping[str, str] | None,
        ok: Collection[int],
        retry: bool | None,
        limit: int | None,
        out: list[bytes] | None,
    ) -> httpx.Response:
        if retry is None:
            retry = method in _SAFE_METHODS
        attempts = self.policy.retries + 1 if retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                request = self.client.build_request(
                    method, url, headers=headers, content=content, params=params
                )
                response = self.client.send(
                    request, stream=True, follow_redirects=method in _SAFE_METHODS
                )
            except httpx.TransportError as exc:
                if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    self._reached = True  # connected, then cut: the host is there
                # a host never reached that refuses (or does not resolve): one retry at most;
                # one reached before is restarting, and gets every retry
                if last or (attempt >= 1 and not self._reached and _refused(exc)):
                    raise self._unavailable(method, url, exc, attempt + 1) from None
                self.policy.sleep(attempt)
                continue
            except RegistryUnavailable:  # the token service failed inside the auth flow
                if last:
                    raise
                self.policy.sleep(attempt)
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise RegistryError(f"{method} {display_url(url)}: {exc}", method=method,
                                    url=str(url)) from None
            self._reached = True
            status = response.status_code
            if status in ok:
                if out is None:
                    return response
                try:
                    out.append(self._read(response, limit))
                except httpx.TransportError as exc:
                    if last:
                        raise self._unavailable(method, url, exc, attempts) from None
                    self.policy.sleep(attempt)
                    continue
                except httpx.HTTPError as exc:  # e.g. a body that fails to decompress
                    raise RegistryError(f"{method} {display_url(url)}: {exc}", method=method,
                                        url=str(url), status=status) from None
                finally:
                    response.close()
                return response
            try:
                body = self._read(response, _ERROR_BODY_LIMIT, truncate=True)
            except httpx.HTTPError:
                body = b""
            finally:
                response.close()
            if status in RETRY_STATUSES and not last:
                self.policy.sleep(attempt, parse_retry_after(response.headers.get("Retry-After")))
                continue
            raise error_from_response(
                response, body, hint=self.auth.describe() if status in (401, 403) else "",
                attempts=attempt + 1,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _read(response: httpx.Response, limit: int | None, truncate: bool = False) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                if truncate:
                    break
                request = response.request
                raise RegistryError(
                    f"{request.method} {display_url(request.url)}: response larger than "
                    f"{limit} bytes",
                    method=request.method, url=str(request.url), status=response.status_code,
                )
        return b"".join(chunks)

    @staticmethod
    def _unavailable(method: str, url: Any, exc: httpx.TransportError,
                     attempts: int) -> RegistryUnavailable:
        with suppress(RuntimeError):  # name the failed request: maybe a token request
            method, url = exc.request.method, exc.request.url
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        return RegistryUnavailable(
            f"{method} {display_url(url)}: {_describe(exc)}{suffix}", method=method,
            url=str(url)
        )
