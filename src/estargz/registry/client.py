"""The OCI distribution API of one registry host, as typed methods.

:class:`RegistryClient` owns an ``httpx.Client`` (any ``transport`` can be injected) with
:class:`RegistryAuth` attached; :mod:`.session` retries and translates errors, :mod:`.blobs`
reads and :mod:`.upload` pushes. :class:`RegistryBlob` makes a remote blob a ``BlobSource``.
"""

from __future__ import annotations

import io
import os
import re
import ssl
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import BinaryIO

import httpx
import orjson

from estargz.digest import DigestMismatch, check_digest, parse_digest, sha256_digest
from estargz.errors import RegistryError
from estargz.image.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from estargz.image.model import Descriptor
from estargz.reference import api_base
from estargz.registry import blobs, upload
from estargz.registry.auth import RegistryAuth
from estargz.registry.credentials import Credentials, credentials_for
from estargz.registry.httpopts import TLSFiles, dump_hooks, tls_context
from estargz.registry.retry import RetryPolicy
from estargz.registry.session import Session, display_url
from estargz.registry.upload import BlobData, PushResult

__all__ = [
    "DEFAULT_ACCEPT",
    "MAX_MANIFEST_SIZE",
    "RegistryBlob",
    "RegistryClient",
    "default_ssl_context",
]

DEFAULT_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
MAX_MANIFEST_SIZE = 4 << 20
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_MAX_CONFIG_SIZE = 64 << 20
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?', re.IGNORECASE)

Progress = Callable[[int], None]


def _user_agent() -> str:
    """From the package itself: asking importlib.metadata scans sys.path, milliseconds a time."""
    from estargz import __version__

    return f"estargz/{__version__}"


def _check_ref(ref: str) -> None:
    if ":" in ref:
        parse_digest(ref)
    elif not _TAG.match(ref):
        raise ValueError(f"{ref!r} is neither a tag nor a digest")


def _media_type(content_type: str | None, data: bytes) -> str:
    """The manifest's media type: the header, or the document's own field when generic."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    if value and value not in ("application/json", "text/plain", "application/octet-stream"):
        return value
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return value
    if isinstance(doc, dict):
        declared = doc.get("mediaType")
        if isinstance(declared, str) and declared:
            return declared
        if "manifests" in doc:
            return OCI_INDEX
        if "layers" in doc or "config" in doc:
            return OCI_MANIFEST
    return value


def default_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context, built once per CA bundle setting and shared by all clients:
    loading the CA bundle costs about a tenth of a second."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    context = _SSL_CONTEXTS.get(key)
    if context is None:
        context = _SSL_CONTEXTS[key] = httpx.create_ssl_context()
    return context


_SSL_CONTEXTS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def _verify(insecure_skip_verify: bool) -> ssl.SSLContext | bool:
    return False if insecure_skip_verify else default_ssl_context()


class _LazyTransport(httpx.BaseTransport):
    """A transport built on first use (TLS set-up only when an HTTPS request happens)."""

    def __init__(self, factory: Callable[[], httpx.BaseTransport]) -> None:
        self._factory = factory
        self._inner: httpx.BaseTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._inner is None:
            self._inner = self._factory()
        return self._inner.handle_request(request)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


class RegistryClient:
    """Talks to one registry host (``127.0.0.1:5000``, ``docker.io``, ``ghcr.io``).

    ``plain_http=None`` uses plain HTTP for loopback hosts only. ``credentials=None`` looks
    the host up in the docker config the first time the registry asks for authentication;
    ``Credentials()`` forces anonymous access. GET/HEAD are retried ``retries`` times with
    capped exponential ``backoff``; uploads restart whole blobs as often.
    """

    def __init__(
        self,
        host: str,
        *,
        plain_http: bool | None = None,
        insecure_skip_verify: bool = False,
        credentials: Credentials | tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        retries: int = 5,
        backoff: float = 0.2,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        monolithic_limit: int = upload.MONOLITHIC_LIMIT,
        tls: ssl.SSLContext | None = None,
        dump: Callable[[str], None] | None = None,
    ) -> None:
        self.host = host
        self.base_url = api_base(host, plain_http)
        if isinstance(credentials, tuple):
            credentials = Credentials(username=credentials[0], password=credentials[1])
        source: Credentials | Callable[[], Credentials | None] = (
            credentials if credentials is not None else (lambda: credentials_for(host))
        )
        self.auth = RegistryAuth(self.base_url, source)
        mounts: dict[str, httpx.BaseTransport | None] | None = None

        def verify() -> ssl.SSLContext | bool:
            if tls is not None:
                if insecure_skip_verify:
                    tls.check_hostname = False
                    tls.verify_mode = ssl.CERT_NONE
                return tls
            return _verify(insecure_skip_verify)

        if transport is None and self.base_url.startswith("http://"):
            # Plain HTTP needs no TLS context, and building one (loading the CA bundle) costs
            # a tenth of a second per client; a redirect to HTTPS still gets a verifying one.
            transport = httpx.HTTPTransport(verify=False)
            mounts = {"https://": _LazyTransport(lambda: httpx.HTTPTransport(verify=verify()))}
        self._http = httpx.Client(
            auth=self.auth,
            transport=transport,
            mounts=mounts,
            verify=verify() if transport is None else False,
            timeout=timeout,
            headers={"User-Agent": _user_agent()},
            event_hooks=dump_hooks(dump) if dump else None,
        )
        self._session = Session(self.base_url, self._http, self.auth,
                                RetryPolicy(retries=retries, backoff=backoff))
        self.monolithic_limit = monolithic_limit

    @classmethod
    def for_user(cls, host: str, *, plain_http: bool = False, skip_verify: bool = False,
                 user: str = "", refresh: str = "", tls_files: TLSFiles = ("", "", ""),
                 dump: Callable[[str], None] | None = None,
                 retries: int = 5) -> RegistryClient:
        """As the command line asks for it: ``--plain-http`` forces HTTP (loopback gets it
        anyway), ``--user USER[:PASSWORD]`` and ``--refresh TOKEN`` replace the docker
        config's credentials, ``tls_files`` are ``--tlscacert``, ``--tlscert``, ``--tlskey``
        and ``dump`` gets ``--http-dump``'s lines."""
        credentials = None
        if user or refresh:
            credentials = replace(Credentials.from_user(user), identity_token=refresh)
        return cls(host, plain_http=True if plain_http else None,
                   insecure_skip_verify=skip_verify, credentials=credentials, retries=retries,
                   tls=tls_context(*tls_files), dump=dump)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    @property
    def retry_policy(self) -> RetryPolicy:
        """How often and how long to wait before sending a failed request again."""
        return self._session.policy

    # -- base ------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that ``/v2/`` answers and accepts our credentials (raises otherwise)."""
        self._session.fetch("GET", self._session.url("/v2/"))

    def list_tags(self, repo: str) -> list[str]:
        """All tags of ``repo``, following ``Link: <...>; rel="next"`` pages."""
        url: httpx.URL | None = self._session.api_url(repo, "tags", "list")
        tags: list[str] = []
        seen: set[str] = set()
        while url is not None and str(url) not in seen:
            seen.add(str(url))
            response, body = self._session.fetch("GET", url)
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = None
            if not isinstance(doc, dict):
                raise RegistryError(f"GET {display_url(url)}: tag list is not a JSON object",
                                    method="GET", url=str(url), status=response.status_code)
            tags += [t for t in doc.get("tags") or [] if isinstance(t, str)]
            m = _LINK_NEXT.search(response.headers.get("Link", ""))
            try:
                url = response.request.url.join(m.group(1)) if m else None
            except httpx.InvalidURL:
                raise RegistryError(f"GET {display_url(response.request.url)}: bad Link header",
                                    method="GET", url=str(response.request.url)) from None
        return tags

    # -- manifests -------------------------------------------------------------------------

    def get_manifest(
        self, repo: str, ref: str, accept: Sequence[str] = DEFAULT_ACCEPT
    ) -> tuple[bytes, str, str]:
        """``(bytes, media_type, digest)`` of a manifest or index, its digest verified.

        When ``ref`` is a digest the content must hash to it; otherwise it must match the
        ``Docker-Content-Digest`` header if the registry sends one.
        """
        _check_ref(ref)
        url = self._session.api_url(repo, "manifests", ref)
        response, data = self._session.fetch(
            "GET", url, headers={"Accept": ", ".join(accept)}, limit=MAX_MANIFEST_SIZE
        )
        what = f"manifest {repo}@{ref}"
        if ":" in ref:
            check_digest(data, ref, what)
            digest = ref
        else:
            header = response.headers.get("Docker-Content-Digest", "")
            digest = sha256_digest(data)
            if header:
                try:
                    check_digest(data, header, what)
                except ValueError:
                    pass  # an algorithm we do not know: keep our sha256
                else:
                    digest = header
        return data, _media_type(response.headers.get("Content-Type"), data), digest

    def head_manifest(
        self, repo: str, ref: str, accept: Sequence[str] = DEFAULT_ACCEPT
    ) -> Descriptor | None:
        """The manifest's descriptor without its body, or None if there is no such manifest."""
        _check_ref(ref)
        url = self._session.api_url(repo, "manifests", ref)
        response, _ = self._session.fetch(
            "HEAD", url, headers={"Accept": ", ".join(accept)}, ok=(200, 404)
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest") or (ref if ":" in ref else "")
        length = response.headers.get("Content-Length", "")
        content_type = response.headers.get("Content-Type", "")
        media_type = _media_type(content_type, b"")
        if digest and length.isdigit() and media_type:
            return Descriptor(media_type, digest, int(length))
        data, media_type, digest = self.get_manifest(repo, ref, accept)
        return Descriptor(media_type, digest, len(data))

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """Store a manifest or index under a tag or its digest; returns its digest."""
        _check_ref(ref)
        digest = sha256_digest(data)
        if ":" in ref:
            check_digest(data, ref, f"manifest {repo}@{ref}")
            digest = ref
        url = self._session.api_url(repo, "manifests", ref)
        response, _ = self._session.fetch(
            "PUT", url, headers={"Content-Type": media_type}, content=bytes(data),
            ok=(200, 201, 202, 204),
        )
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored.startswith("sha256:") and digest.startswith("sha256:") and (
            stored != digest
        ):
            raise DigestMismatch(f"manifest {repo}@{ref}: registry stored it as {stored}, "
                                 f"we sent {digest}")
        return digest

    # -- blobs -----------------------------------------------------------------------------

    def blob_size(self, repo: str, digest: str) -> int | None:
        """Size of a blob from a HEAD request; None if the registry does not have it."""
        return upload.blob_size(self._session, repo, digest)

    def fetch_blob(
        self,
        repo: str,
        digest: str,
        dst: BinaryIO,
        *,
        size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Stream a blob into ``dst``, resuming broken downloads; verified before returning.

        Raises DigestMismatch if the bytes (or their count, when ``size`` is given) are not
        the ones promised; whatever reached ``dst`` must then be discarded.
        """
        return blobs.fetch_blob(self._session, repo, digest, dst, size=size, progress=progress)

    def get_blob(self, repo: str, digest: str, *, max_size: int = _MAX_CONFIG_SIZE) -> bytes:
        """A small blob (an image config) in memory, verified."""
        buf = io.BytesIO()
        blobs.fetch_blob(self._session, repo, digest, buf, max_size=max_size)
        return buf.getvalue()

    def read_range(self, repo: str, digest: str, offset: int, length: int) -> bytes:
        """``length`` bytes of a blob at ``offset``; fewer only at the end of the blob."""
        return blobs.read_range(self._session, repo, digest, offset, length)

    def read_ranges(
        self, repo: str, digest: str, ranges: Sequence[tuple[int, int]]
    ) -> list[bytes]:
        """Several ``(offset, length)`` ranges, in one request when the server allows it."""
        return blobs.read_ranges(self._session, repo, digest, ranges)

    def push_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        source: BlobData,
        *,
        mount_from: str | None = None,
        chunk_size: int | None = None,
        progress: Progress | None = None,
    ) -> PushResult:
        """Make the blob exist in ``repo``; see :func:`estargz.registry.upload.push_blob`.

        ``source`` is bytes, a path, or a callable opening a fresh binary stream (called again
        when an upload restarts). ``mount_from`` names a repository on this registry.
        """
        return upload.push_blob(
            self._session, repo, digest, size, source, mount_from=mount_from,
            chunk_size=chunk_size, progress=progress, monolithic_limit=self.monolithic_limit,
        )

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True if the registry linked the blob."""
        return upload.mount_blob(self._session, repo, digest, from_repo)

    def blob(self, repo: str, digest: str, size: int) -> RegistryBlob:
        return RegistryBlob(self, repo, digest, size)


class RegistryBlob:
    """A blob in a registry as a ``BlobSource``: ``size`` plus ranged ``read_at``.

    ``size`` comes from the descriptor, so reads are clamped to it without asking the
    registry; each ``read_at`` is one range request (lazy readers cache above this).
    """

    def __init__(self, client: RegistryClient, repo: str, digest: str, size: int) -> None:
        parse_digest(digest)
        if size < 0:
            raise ValueError(f"blob {digest}: negative size {size}")
        self.client = client
        self.repo = repo
        self.digest = digest
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError(f"negative read: offset {offset} size {size}")
        size = min(size, self._size - offset)
        if size <= 0:
            return b""
        return self.client.read_range(self.repo, self.digest, offset, size)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        clamped = [(o, max(0, min(n, self._size - o))) for o, n in ranges]
        return self.client.read_ranges(self.repo, self.digest, clamped)

    def fetch(self, dst: BinaryIO, progress: Progress | None = None) -> int:
        """The whole blob into ``dst``, verified against its digest and size."""
        return self.client.fetch_blob(self.repo, self.digest, dst, size=self._size,
                                      progress=progress)

    def __repr__(self) -> str:
        return f"RegistryBlob({self.client.host}/{self.repo}@{self.digest}, size={self._size})"
