"""Registry authentication as an ``httpx.Auth`` flow: Basic, and Bearer tokens from a realm.

The flow never opens a socket itself: it yields the token request to the client that is
sending (so tests drive it with any transport) and reads the answer from the response it gets
back. Tokens are cached per (realm, service, scope) until shortly before they expire, and a 401
on a cached token drops it and fetches a new one once. ``Authorization`` is only ever added to
requests for the registry's own origin; httpx strips it from redirects that leave the origin.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from estargz.errors import AuthenticationError, RegistryUnavailable
from estargz.registry.credentials import Credentials
from estargz.registry.retry import RETRY_STATUSES

__all__ = [
    "Challenge",
    "RegistryAuth",
    "parse_www_authenticate",
    "scope_for",
]

_DEFAULT_EXPIRES_IN = 60.0
_CLIENT_ID = "estargz"
_TOKEN_USER = "<token>"
_PATH = re.compile(r"^/v2/(?P<name>.+)/(?:manifests|blobs|tags)/")
_SCHEME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_PARAM = re.compile(r'\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge; ``scheme`` is lowercase (``bearer``, ``basic``)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scope(self) -> str:
        return self.params.get("scope", "")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """All challenges in a ``WWW-Authenticate`` value (``Bearer realm="..",scope="..", Basic``)."""
    challenges: list[Challenge] = []
    pos, n = 0, len(header)
    while pos < n:
        while pos < n and header[pos] in " ,":
            pos += 1
        m = _SCHEME.match(header, pos)
        if not m:
            break
        scheme, pos = m.group(0).lower(), m.end()
        params: dict[str, str] = {}
        while pos < n:
            pm = _PARAM.match(header, pos)
            if not pm:
                tm = _TOKEN68.match(header, pos + 1) if header[pos : pos + 1] == " " else None
                if tm and (tm.end() == n or header[tm.end()] == ","):
                    pos = tm.end()  # a token68 credential hint: nothing we use
                break
            value = pm.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[pm.group(1).lower()] = value
            pos = pm.end()
            if pos < n and header[pos] == ",":
                pos += 1
            else:
                break
        challenges.append(Challenge(scheme, params))
    return challenges


def scope_for(request: httpx.Request) -> str:
    """The token scope a registry request needs (``repository:name:pull[,push]``)."""
    m = _PATH.match(request.url.path)
    if not m:
        return ""
    name = m.group("name")
    action = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(request.method, "pull,push")
    scopes = [f"repository:{name}:{action}"]
    source = request.url.params.get("from")
    if source and "mount" in request.url.params and source != name:
        scopes.append(f"repository:{source}:pull")
    return " ".join(scopes)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _replayable(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream)


@dataclass(slots=True)
class _Token:
    value: str
    valid_until: float


CredentialSource = Credentials | Callable[[], Credentials | None] | None


class RegistryAuth(httpx.Auth):
    """Answers a registry's Basic or Bearer challenges for one registry origin.

    ``credentials`` is a value, a callable looked up once on the first challenge (so an
    anonymous pull never reads the docker config unless asked to authenticate), or None.
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(self, base_url: str, credentials: CredentialSource = None) -> None:
        self._origin = _origin(httpx.URL(base_url))
        self._source = credentials
        self._creds: Credentials | None = None
        self._resolved = False
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._lock = threading.Lock()
        self.token_fetches = 0

    @property
    def credentials(self) -> Credentials:
        """The credentials in use (resolving the lazy source on first use)."""
        with self._lock:
            if not self._resolved:
                src = self._source
                found = src() if callable(src) else src
                self._creds = found or Credentials()
                self._resolved = True
            assert self._creds is not None
            return self._creds

    def describe(self) -> str:
        """A hint for error messages: whose credentials were tried, without the secret."""
        creds = self.credentials
        if creds.anonymous:
            return "no credentials were sent; log in or pass credentials"
        who = f"user {creds.username!r}" if creds.username else "the stored token"
        return f"credentials of {who} were rejected"

    # -- the flow --------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin(request.url) != self._origin or not request.url.path.startswith("/v2/"):
            yield request
            return
        scope = scope_for(request)
        with self._lock:
            challenge = self._challenge
        sent: str | None = None
        if challenge is not None:
            sent = yield from self._authorization(challenge, scope, fresh=False)
            if sent is not None:
                request.headers["Authorization"] = sent
        response = yield request
        if response.status_code != 401 or _origin(response.url) != self._origin:
            return
        header_value = ", ".join(response.headers.get_list("WWW-Authenticate"))
        challenges = parse_www_authenticate(header_value)
        new = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if new is None:
            return
        with self._lock:
            self._challenge = new
        self._forget(new, scope)
        if not _replayable(request):
            return  # the body is gone; the caller restarts the whole upload
        header = yield from self._authorization(new, new.scope or scope, fresh=True, key=scope)
        if header is None or header == sent:
            return
        request.headers["Authorization"] = header
        yield request

    # -- helpers ---------------------------------------------------------------------------

    def _forget(self, challenge: Challenge, scope: str) -> None:
        with self._lock:
            self._tokens.pop((challenge.realm, challenge.service, scope), None)

    def _authorization(
        self, challenge: Challenge, scope: str, *, fresh: bool, key: str | None = None
    ) -> Generator[httpx.Request, httpx.Response, str | None]:
        creds = self.credentials
        if challenge.scheme == "basic":
            return _basic(creds.username, creds.password) if creds.has_basic else None
        if challenge.scheme != "bearer":
            return None
        if creds.registry_token:
            return f"Bearer {creds.registry_token}"
        cache_key = (challenge.realm, challenge.service, scope if key is None else key)
        if not fresh:
            with self._lock:
                token = self._tokens.get(cache_key)
            if token is not None and token.valid_until > time.monotonic():
                return f"Bearer {token.value}"
        if not challenge.realm:
            raise AuthenticationError("Bearer challenge without a realm: cannot fetch a token")
        token = yield from self._fetch_token(challenge, scope, creds)
        with self._lock:
            self._tokens[cache_key] = token
        return f"Bearer {token.value}"

    def _fetch_token(
        self, challenge: Challenge, scope: str, creds: Credentials
    ) -> Generator[httpx.Request, httpx.Response, _Token]:
        scopes = [s for s in scope.split(" ") if s]
        started = time.monotonic()
        response: httpx.Response | None = None
        if creds.identity_token:
            form: dict[str, Any] = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": _CLIENT_ID,
                "scope": " ".join(scopes),
            }
            if challenge.service:
                form["service"] = challenge.service
            response = yield httpx.Request("POST", challenge.realm, data=form)
            response.read()
            if response.status_code in (404, 405):
                response = None  # no OAuth2 endpoint: fall back to GET below
        if response is None:
            params: list[tuple[str, str | int | float | bool | None]] = []
            if challenge.service:
                params.append(("service", challenge.service))
            params += [("scope", s) for s in scopes]
            headers = {}
            if creds.has_basic:
                headers["Authorization"] = _basic(creds.username, creds.password)
            elif creds.identity_token:
                headers["Authorization"] = _basic(_TOKEN_USER, creds.identity_token)
            response = yield httpx.Request("GET", challenge.realm, params=params, headers=headers)
            response.read()
        self.token_fetches += 1
        return self._parse_token(response, scope, started)

    def _parse_token(self, response: httpx.Response, scope: str, started: float) -> _Token:
        what = f"{response.request.method} {_strip_scheme(response.request.url)}"
        if response.status_code != 200:
            hint = ""
            if response.status_code in (401, 403):
                hint = f" ({self.describe()})"
            cls = RegistryUnavailable if response.status_code in RETRY_STATUSES else (
                AuthenticationError)
            raise cls(
                f"{what}: {response.status_code} {response.reason_phrase}: token request for "
                f"scope {scope or '(none)'!r} refused{hint}",
                method=response.request.method,
                url=str(response.request.url),
                status=response.status_code,
            )
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            doc = None
        value = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise AuthenticationError(f"{what}: token response has no 'token'/'access_token'",
                                      method=response.request.method,
                                      url=str(response.request.url), status=200)
        expires_in = doc.get("expires_in") if isinstance(doc, dict) else None
        lifetime = (
            float(expires_in)
            if isinstance(expires_in, int | float) and expires_in > 0
            else _DEFAULT_EXPIRES_IN
        )
        margin = min(10.0, lifetime / 4)
        return _Token(value, started + lifetime - margin)


def _strip_scheme(url: httpx.URL) -> str:
    text = str(url.copy_with(query=None))
    return text.split("://", 1)[-1]
