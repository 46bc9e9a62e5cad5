"""Authentication against real registries: htpasswd Basic, and token auth with a real token
server (RS256 JWTs the registry verifies), plus redirects that must not carry credentials."""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Callable

import httpx
import pytest

from estargz.digest import sha256_digest
from estargz.errors import AuthenticationError, RegistryUnavailable
from estargz.registry import (
    Challenge,
    Credentials,
    RegistryClient,
    parse_www_authenticate,
    scope_for,
)
from faultproxy import FaultProxy
from registry_fixture import RegistryServer

DATA = os.urandom(70_000)
DIGEST = sha256_digest(DATA)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
         'scope="repository:library/alpine:pull"',
         [Challenge("bearer", {"realm": "https://auth.docker.io/token",
                               "service": "registry.docker.io",
                               "scope": "repository:library/alpine:pull"})]),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        ('Basic realm="a", Bearer realm="https://t/x",scope="repository:a:pull,push '
         'repository:b:pull",error="insufficient_scope"',
         [Challenge("basic", {"realm": "a"}),
          Challenge("bearer", {"realm": "https://t/x",
                               "scope": "repository:a:pull,push repository:b:pull",
                               "error": "insufficient_scope"})]),
        ('bearer REALM=http://t/x , service=svc', [Challenge("bearer", {"realm": "http://t/x",
                                                                         "service": "svc"})]),
        ('Bearer realm="with \\"quotes\\", and commas"',
         [Challenge("bearer", {"realm": 'with "quotes", and commas'})]),
        ("Negotiate", [Challenge("negotiate", {})]),
        ("", []),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


@pytest.mark.parametrize(
    ("method", "url", "scope"),
    [
        ("GET", "http://r/v2/a/b/manifests/latest", "repository:a/b:pull"),
        ("HEAD", "http://r/v2/a/blobs/sha256:00", "repository:a:pull"),
        ("POST", "http://r/v2/a/b/blobs/uploads/", "repository:a/b:pull,push"),
        ("PATCH", "http://r/v2/a/blobs/uploads/uuid?_state=x", "repository:a:pull,push"),
        ("POST", "http://r/v2/x/y/blobs/uploads/?mount=sha256:00&from=s/t",
         "repository:x/y:pull,push repository:s/t:pull"),
        ("GET", "http://r/v2/ns/blobs/img/manifests/blobs", "repository:ns/blobs/img:pull"),
        ("GET", "http://r/v2/a/tags/list", "repository:a:pull"),
        ("DELETE", "http://r/v2/a/manifests/sha256:00", "repository:a:delete"),
        ("GET", "http://r/v2/", ""),
    ],
)
def test_scope_for(method: str, url: str, scope: str) -> None:
    assert scope_for(httpx.Request(method, url)) == scope


# -- Basic ---------------------------------------------------------------------------------


def test_basic_auth_push_pull(basic_registry: RegistryServer, repo: str) -> None:
    with basic_registry.client() as client:
        client.ping()
        assert client.push_blob(repo, DIGEST, len(DATA), DATA) == "uploaded"
        assert client.get_blob(repo, DIGEST) == DATA


def test_basic_auth_wrong_password(basic_registry: RegistryServer, repo: str) -> None:
    with basic_registry.client(credentials=("alice", "nope")) as client, pytest.raises(
        AuthenticationError
    ) as info:
        client.get_manifest(repo, "latest")
    err = info.value
    assert err.status == 401 and err.code == "UNAUTHORIZED"
    assert str(err) == (f"GET {basic_registry.host}/v2/{repo}/manifests/latest: 401 "
                        "UNAUTHORIZED: authentication required (credentials of user 'alice' "
                        "were rejected)")


def test_basic_auth_anonymous(basic_registry: RegistryServer, repo: str) -> None:
    with basic_registry.client(credentials=Credentials()) as client, pytest.raises(
        AuthenticationError, match="no credentials were sent"
    ):
        client.push_blob(repo, DIGEST, len(DATA), DATA)


# -- Bearer tokens -------------------------------------------------------------------------


def test_token_auth_push_pull_and_cache(token_registry: RegistryServer, repo: str) -> None:
    ts = token_registry.token_server
    assert ts is not None
    before = len(ts.requests)
    with token_registry.client() as client:
        assert client.push_blob(repo, DIGEST, len(DATA), DATA, chunk_size=20_000) == "uploaded"
        for _ in range(3):
            assert client.blob_size(repo, DIGEST) == len(DATA)
        assert client.read_range(repo, DIGEST, 10, 10) == DATA[10:20]
        assert client.get_blob(repo, DIGEST) == DATA
    mine = ts.requests[before:]
    # one token per scope, reused: pull (HEAD before pushing) and pull,push (the upload)
    assert [r.scopes for r in mine] == [[f"repository:{repo}:pull"],
                                        [f"repository:{repo}:pull,push"]]
    assert all(r.user == token_registry.username and r.status == 200 for r in mine)


def test_token_auth_anonymous_pull_only(token_registry: RegistryServer, repo: str) -> None:
    with token_registry.client() as client:
        client.push_blob(repo, DIGEST, len(DATA), DATA)
    with token_registry.client(credentials=Credentials()) as anonymous:
        assert anonymous.get_blob(repo, DIGEST) == DATA
        other = b"anonymous push"
        with pytest.raises(AuthenticationError, match=r"401 UNAUTHORIZED.*no credentials"):
            anonymous.push_blob(repo, sha256_digest(other), len(other), other)


def test_token_auth_wrong_password(token_registry: RegistryServer, repo: str) -> None:
    with token_registry.client(credentials=("bob", "wrong")) as client, pytest.raises(
        AuthenticationError
    ) as info:
        client.get_manifest(repo, "latest")
    err = info.value
    assert err.status == 401
    ts = token_registry.token_server
    assert ts is not None
    assert str(err) == (f"GET {ts.realm.split('://')[1]}: 401 Unauthorized: token request for "
                        f"scope 'repository:{repo}:pull' refused (credentials of user 'bob' "
                        "were rejected)")


def test_token_refreshed_when_it_expires(registry_factory: Callable[[str], RegistryServer],
                                         repo: str) -> None:
    server = registry_factory("token")
    ts = server.token_server
    assert ts is not None
    ts.expires_in = 2  # used until 0.5 s before it runs out
    with server.client() as client:
        assert client.blob_size(repo, DIGEST) is None
        assert client.blob_size(repo, DIGEST) is None
        assert len(ts.requests) == 1  # cached
        time.sleep(1.55)
        assert client.blob_size(repo, DIGEST) is None
    assert len(ts.requests) == 2  # refreshed before use, not after a failure


def test_token_refetched_after_a_401(registry_factory: Callable[[str], RegistryServer],
                                     repo: str) -> None:
    """A token the registry rejects (expired despite its expires_in) is dropped and replaced."""
    server = registry_factory("token")
    ts = server.token_server
    assert ts is not None
    with server.client() as client:
        assert client.blob_size(repo, DIGEST) is None  # learns the challenge
        ts.expired_tokens = 1
        assert client.push_blob(repo, DIGEST, len(DATA), DATA) == "uploaded"
    def actions(scope: str) -> set[str]:  # (the registry's challenge orders them at random)
        return set(scope.rpartition(":")[2].split(","))

    push_tokens = [r for r in ts.requests
                   if len(r.scopes) == 1 and actions(r.scopes[0]) == {"pull", "push"}]
    assert len(push_tokens) == 2, ts.requests


def test_identity_token_uses_oauth2_refresh(registry_factory: Callable[[str], RegistryServer],
                                            repo: str) -> None:
    server = registry_factory("token")
    ts = server.token_server
    assert ts is not None
    ts.token_field = "access_token"  # OAuth2-style answer, no "token" field
    creds = Credentials(identity_token="refresh-" + server.username)
    with server.client(credentials=creds) as client:
        assert client.push_blob(repo, DIGEST, len(DATA), DATA) == "uploaded"
    assert {r.method for r in ts.requests} == {"POST"}
    assert all(r.user == server.username for r in ts.requests)
    with server.client(credentials=Credentials(identity_token="stale")) as client, pytest.raises(
        AuthenticationError, match=r"POST .*/token: 401.*stored token were rejected"
    ):
        client.blob_size(repo, DIGEST)


def test_token_service_503_is_retried(registry_factory: Callable[[str], RegistryServer],
                                      repo: str) -> None:
    server = registry_factory("token")
    ts = server.token_server
    assert ts is not None
    ts.failures = 2
    with server.client() as client:
        assert client.blob_size(repo, DIGEST) is None
    assert [r.status for r in ts.requests] == [503, 503, 200]
    ts.failures = 10
    with server.client(retries=1) as client, pytest.raises(
        RegistryUnavailable, match=r"GET .*/token: 503 Service Unavailable"
    ):
        client.blob_size(repo, DIGEST)


def test_token_server_down(registry_factory: Callable[[str], RegistryServer], repo: str) -> None:
    server = registry_factory("token")
    assert server.token_server is not None
    server.token_server.close()
    with server.client(retries=1) as client, pytest.raises(
        RegistryUnavailable, match=r"GET 127\.0\.0\.1:\d+/token: connection refused"
    ):
        client.blob_size(repo, DIGEST)


# -- redirects -----------------------------------------------------------------------------


def test_redirected_blob_get_carries_no_authorization(
    basic_registry: RegistryServer, repo: str, fault_proxy: Callable[..., FaultProxy]
) -> None:
    """Blob GETs redirected to storage on another host:port lose the Authorization header."""
    basic = "Basic " + base64.b64encode(
        f"{basic_registry.username}:{basic_registry.password}".encode()).decode()
    storage = fault_proxy(basic_registry.host, upstream_headers={"Authorization": basic})
    front = fault_proxy(basic_registry.host)
    with RegistryClient(front.host, credentials=basic_registry.credentials,
                        backoff=0.01) as client:
        client.push_blob(repo, DIGEST, len(DATA), DATA)
        front.add("redirect", method="GET", path="/blobs/sha256:", times=None,
                  target=storage.url)
        out = io.BytesIO()
        assert client.fetch_blob(repo, DIGEST, out) == len(DATA)
        assert out.getvalue() == DATA
        assert client.read_range(repo, DIGEST, 100, 50) == DATA[100:150]
    to_front = front.seen("GET", "/blobs/sha256:")
    to_storage = storage.seen("GET")
    assert len(to_front) == len(to_storage) == 2
    assert all(s.headers.get("Authorization") == basic for s in to_front)
    assert all("Authorization" not in s.headers for s in to_storage)
    assert to_storage[1].headers["Range"] == "bytes=100-149"  # the range survives
