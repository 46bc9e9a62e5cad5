"""Registry behaviours docker-registry 2.8 never shows, through httpx's transport seam:
paginated tag lists, generic manifest Content-Types, broken encodings, odd token answers.
Everything the real registry can do is tested against it in the other test_registry_* files."""

from __future__ import annotations

import gzip

import httpx
import orjson
import pytest

from estargz.digest import sha256_digest
from estargz.errors import AuthenticationError, RegistryError
from estargz.image.mediatypes import OCI_INDEX, OCI_MANIFEST
from estargz.registry import Credentials, RegistryAuth, RegistryClient

HOST = "reg.test"


def _client(handler: httpx.MockTransport) -> RegistryClient:
    return RegistryClient(HOST, transport=handler, credentials=Credentials(), backoff=0.0,
                          retries=1)


def test_tag_pages_follow_link_headers() -> None:
    pages = {
        "/v2/a/tags/list": (["v1", "v2"], '</v2/a/tags/list?last=v2&n=2>; rel="next"'),
        "/v2/a/tags/list?last=v2&n=2": (["v3"], ""),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        key = request.url.raw_path.decode()
        tags, link = pages[key]
        headers = {"Link": link} if link else {}
        return httpx.Response(200, json={"name": "a", "tags": tags}, headers=headers)

    with _client(httpx.MockTransport(handler)) as client:
        assert client.list_tags("a") == ["v1", "v2", "v3"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}, OCI_INDEX),
        ({"schemaVersion": 2, "manifests": []}, OCI_INDEX),
        ({"schemaVersion": 2, "config": {}, "layers": []}, OCI_MANIFEST),
    ],
)
def test_generic_content_type_is_sniffed(doc: dict[str, object], expected: str) -> None:
    body = orjson.dumps(doc)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body,
                              headers={"Content-Type": "application/json; charset=utf-8"})

    with _client(httpx.MockTransport(handler)) as client:
        assert client.get_manifest("a", "t") == (body, expected, sha256_digest(body))


def test_broken_content_encoding_is_a_registry_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"not gzip at all",
                              headers={"Content-Encoding": "gzip"})

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(
        RegistryError, match=r"GET reg\.test/v2/a/manifests/t: "
    ):
        client.get_manifest("a", "t")


def test_gzip_transfer_encoding_is_undone_for_manifests() -> None:
    body = b'{"schemaVersion":2,"mediaType":"%s","manifests":[]}' % OCI_INDEX.encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=gzip.compress(body),
                              headers={"Content-Encoding": "gzip", "Content-Type": OCI_INDEX})

    with _client(httpx.MockTransport(handler)) as client:
        assert client.get_manifest("a", "t")[0] == body


def test_token_answer_without_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(200, json={"expires_in": 60})
        return httpx.Response(401, headers={
            "WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="reg"'})

    with _client(httpx.MockTransport(handler)) as client, pytest.raises(
        AuthenticationError, match="token response has no 'token'/'access_token'"
    ):
        client.blob_size("a", "sha256:" + "0" * 64)


def test_auth_adds_nothing_for_other_origins() -> None:
    """Driving the flow by hand: requests to another origin pass through untouched."""
    auth = RegistryAuth("https://reg.test", Credentials("u", "p"))
    first = httpx.Request("GET", "https://reg.test/v2/a/blobs/sha256:00")
    flow = auth.auth_flow(first)
    assert "Authorization" not in next(flow).headers
    challenge = httpx.Response(401, request=first,
                               headers={"WWW-Authenticate": 'Basic realm="r"'})
    retried = flow.send(challenge)
    assert retried.headers["Authorization"].startswith("Basic ")
    elsewhere = httpx.Request("GET", "https://storage.test/blob?sig=x")
    flow = auth.auth_flow(elsewhere)
    assert "Authorization" not in next(flow).headers
    other_port = httpx.Request("GET", "https://reg.test:8443/v2/a/blobs/sha256:00")
    assert "Authorization" not in next(auth.auth_flow(other_port)).headers
    same = httpx.Request("GET", "https://reg.test:443/v2/a/blobs/sha256:00")
    assert next(auth.auth_flow(same)).headers["Authorization"].startswith("Basic ")
