"""Failures between the client and a real registry, injected by tests/faultproxy.py: retries,
Retry-After, resumed downloads, Range quirks, corrupted bytes, uploads that restart, and a
registry process that dies in the middle of a push."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from estargz.digest import DigestMismatch, sha256_digest
from estargz.errors import RegistryUnavailable
from estargz.image.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from estargz.image.model import Descriptor, Manifest
from estargz.registry import RegistryClient
from faultproxy import FaultProxy
from registry_fixture import RegistryServer

BLOB = os.urandom(400_000)
DIGEST = sha256_digest(BLOB)


@pytest.fixture
def proxy(registry: RegistryServer, fault_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    return fault_proxy(registry.host)


@pytest.fixture
def client(proxy: FaultProxy) -> Iterator[RegistryClient]:
    with RegistryClient(proxy.host, retries=3, backoff=0.01) as c:
        yield c


@pytest.fixture
def pushed(client: RegistryClient, proxy: FaultProxy, repo: str) -> str:
    """``repo`` with BLOB in it; the proxy's request log starts empty."""
    client.push_blob(repo, DIGEST, len(BLOB), BLOB)
    proxy.clear()
    return repo


def _manifest(client: RegistryClient, repo: str) -> tuple[bytes, str]:
    config = b'{"architecture":"amd64","os":"linux"}'
    client.push_blob(repo, sha256_digest(config), len(config), config)
    raw = Manifest(OCI_MANIFEST, Descriptor.of(OCI_CONFIG, config),
                   [Descriptor(OCI_LAYER_GZIP, DIGEST, len(BLOB))]).to_bytes()
    return raw, client.put_manifest(repo, "v1", raw, OCI_MANIFEST)


# -- retries of safe requests --------------------------------------------------------------


def test_500_twice_then_success(client: RegistryClient, proxy: FaultProxy, pushed: str) -> None:
    raw, digest = _manifest(client, pushed)
    proxy.clear()
    proxy.add("status", status=500, method="GET", path="/manifests/", times=2)
    assert client.get_manifest(pushed, "v1") == (raw, OCI_MANIFEST, digest)
    assert len(proxy.seen("GET", "/manifests/")) == 3


def test_manifest_body_dropped_then_retried(client: RegistryClient, proxy: FaultProxy,
                                            pushed: str) -> None:
    raw, digest = _manifest(client, pushed)
    proxy.clear()
    proxy.add("drop", method="GET", path="/manifests/", after=10)
    assert client.get_manifest(pushed, "v1") == (raw, OCI_MANIFEST, digest)
    assert len(proxy.seen("GET", "/manifests/")) == 2


def test_429_honours_retry_after(client: RegistryClient, proxy: FaultProxy, pushed: str) -> None:
    proxy.add("status", status=429, method="HEAD", headers={"Retry-After": "1"})
    started = time.monotonic()
    assert client.blob_size(pushed, DIGEST) == len(BLOB)
    assert time.monotonic() - started >= 1.0  # backoff alone would be ~0.01 s
    assert len(proxy.seen("HEAD")) == 2


def test_retries_run_out(client: RegistryClient, proxy: FaultProxy, pushed: str) -> None:
    proxy.add("status", status=503, times=None)
    with pytest.raises(RegistryUnavailable) as info:
        client.read_range(pushed, DIGEST, 0, 10)
    err = info.value
    assert err.status == 503 and err.code == "UNAVAILABLE"
    assert str(err).endswith("503 UNAVAILABLE: injected 503 (after 4 attempts)")
    assert len(proxy.seen("GET")) == 4


def test_put_manifest_is_not_repeated(client: RegistryClient, proxy: FaultProxy,
                                      pushed: str) -> None:
    raw, _ = _manifest(client, pushed)
    proxy.clear()
    proxy.add("status", status=500, method="PUT", times=None)
    with pytest.raises(RegistryUnavailable, match=r"PUT .*manifests/v2: 500"):
        client.put_manifest(pushed, "v2", raw, OCI_MANIFEST)
    assert len(proxy.seen("PUT")) == 1


# -- downloads -----------------------------------------------------------------------------


def test_dropped_download_is_resumed(client: RegistryClient, proxy: FaultProxy,
                                     pushed: str) -> None:
    proxy.add("drop", method="GET", path="/blobs/", after=150_000)
    out = io.BytesIO()
    assert client.fetch_blob(pushed, DIGEST, out, size=len(BLOB)) == len(BLOB)
    assert out.getvalue() == BLOB
    gets = proxy.seen("GET")
    assert len(gets) == 2 and "Range" not in gets[0].headers
    assert gets[1].headers["Range"].startswith("bytes=")
    resumed_at = int(gets[1].headers["Range"][6:-1])
    assert 0 < resumed_at <= 150_000  # the bytes that arrived were kept


def test_dropped_download_resumed_where_range_is_ignored(client: RegistryClient,
                                                         proxy: FaultProxy, pushed: str) -> None:
    proxy.add("drop", method="GET", path="/blobs/", after=100_000)
    proxy.add("ignore_range", method="GET", path="/blobs/", times=None)
    out = io.BytesIO()
    assert client.fetch_blob(pushed, DIGEST, out) == len(BLOB)
    assert out.getvalue() == BLOB


def test_flipped_byte_is_a_digest_mismatch(client: RegistryClient, proxy: FaultProxy,
                                           pushed: str) -> None:
    proxy.add("flip", method="GET", path="/blobs/", after=12_345)
    result: list[int] = []
    with pytest.raises(DigestMismatch, match=f"blob {DIGEST}: content has digest sha256:"):
        result.append(client.fetch_blob(pushed, DIGEST, io.BytesIO()))
    assert result == []
    proxy.add("flip", method="GET", path="/blobs/", after=3)
    with pytest.raises(DigestMismatch):
        client.get_blob(pushed, DIGEST)


def test_flipped_manifest_byte(client: RegistryClient, proxy: FaultProxy, pushed: str) -> None:
    _, digest = _manifest(client, pushed)
    proxy.add("flip", method="GET", path="/manifests/", after=20, times=2)
    with pytest.raises(DigestMismatch, match=r"manifest .*@v1: content has digest"):
        client.get_manifest(pushed, "v1")  # checked against Docker-Content-Digest
    with pytest.raises(DigestMismatch, match=f"@{digest}: content has digest"):
        client.get_manifest(pushed, digest)


def test_download_that_keeps_breaking_gives_up(client: RegistryClient, proxy: FaultProxy,
                                               pushed: str) -> None:
    proxy.add("drop", method="GET", path="/blobs/", after=0, times=None)
    with pytest.raises(RegistryUnavailable, match="download keeps breaking off"):
        client.fetch_blob(pushed, DIGEST, io.BytesIO())


# -- range quirks --------------------------------------------------------------------------


def test_range_answered_with_whole_blob(client: RegistryClient, proxy: FaultProxy,
                                        pushed: str) -> None:
    proxy.add("ignore_range", times=None)
    assert client.read_range(pushed, DIGEST, 200_000, 1000) == BLOB[200_000:201_000]
    assert client.read_range(pushed, DIGEST, len(BLOB) - 5, 100) == BLOB[-5:]
    assert client.read_range(pushed, DIGEST, len(BLOB) + 1, 100) == b""


def test_short_range_reads_are_completed(client: RegistryClient, proxy: FaultProxy,
                                         pushed: str) -> None:
    proxy.add("truncate", method="GET", after=700, times=2)
    assert client.read_range(pushed, DIGEST, 1000, 2000) == BLOB[1000:3000]
    ranges = [g.headers["Range"] for g in proxy.seen("GET")]
    assert ranges == ["bytes=1000-2999", "bytes=1700-2999", "bytes=2400-2999"]


def test_range_read_dropped_mid_body(client: RegistryClient, proxy: FaultProxy,
                                     pushed: str) -> None:
    proxy.add("drop", method="GET", after=5000)
    assert client.read_range(pushed, DIGEST, 0, 100_000) == BLOB[:100_000]
    assert [g.headers["Range"] for g in proxy.seen("GET")] == ["bytes=0-99999",
                                                                "bytes=5000-99999"]


def test_range_reads_keep_their_connection(client: RegistryClient, proxy: FaultProxy,
                                          pushed: str) -> None:
    """A range read ends its response cleanly, so the next one reuses the connection (a new
    connection per lazy read would cost a TLS handshake each on a real registry)."""
    assert client.read_range(pushed, DIGEST, 0, 1000) == BLOB[:1000]
    opened = proxy.connections
    for offset in (100_000, 300_000, len(BLOB) - 10):
        assert client.read_range(pushed, DIGEST, offset, 1000) == BLOB[offset : offset + 1000]
    assert proxy.connections == opened
    assert len(proxy.seen("GET")) == 4


RANGES = [(0, 100), (10_000, 5000), (399_000, 2000), (50, 0), (123_456, 1)]
EXPECTED = [BLOB[o : o + n] for o, n in RANGES]


def test_multi_range_refused_falls_back(client: RegistryClient, proxy: FaultProxy,
                                        pushed: str) -> None:
    proxy.add("refuse_multirange", times=None)  # the server answers 200 with everything
    assert client.read_ranges(pushed, DIGEST, RANGES) == EXPECTED
    gets = proxy.seen("GET")
    assert len(gets) == 1 + 4 and "," in gets[0].headers["Range"]
    assert all("," not in g.headers["Range"] for g in gets[1:])


def test_multi_range_answered_with_one_part(client: RegistryClient, proxy: FaultProxy,
                                            pushed: str) -> None:
    proxy.add("first_range_only", times=None)
    assert client.read_ranges(pushed, DIGEST, RANGES) == EXPECTED
    assert len(proxy.seen("GET")) == 1 + 3  # the first range came with the first answer


# -- uploads -------------------------------------------------------------------------------


def test_upload_restarts_after_5xx_on_a_chunk(client: RegistryClient, proxy: FaultProxy,
                                              repo: str) -> None:
    proxy.add("status", status=500, method="PATCH", path="/blobs/uploads/")
    proxy.add("status", status=500, method="PATCH", path="/blobs/uploads/")  # 2nd rule, 2nd hit
    progress: list[int] = []
    assert client.push_blob(repo, DIGEST, len(BLOB), BLOB, chunk_size=100_000,
                            progress=progress.append) == "uploaded"
    assert client.get_blob(repo, DIGEST) == BLOB
    assert len(proxy.seen("POST")) == 2  # a new upload session for the restart
    assert proxy.seen("DELETE")  # the broken session was cancelled
    assert progress[-1] == len(BLOB) and 0 in progress


def test_upload_restarts_after_dropped_connection(client: RegistryClient, proxy: FaultProxy,
                                                  repo: str) -> None:
    proxy.add("reset", method="PUT", path="/blobs/uploads/")
    assert client.push_blob(repo, DIGEST, len(BLOB), BLOB) == "uploaded"
    assert len(proxy.seen("PUT")) == 2 and len(proxy.seen("POST")) == 2
    assert client.get_blob(repo, DIGEST) == BLOB


def test_upload_gives_up(client: RegistryClient, proxy: FaultProxy, repo: str) -> None:
    proxy.add("status", status=502, method="PUT", times=None)
    with pytest.raises(RegistryUnavailable, match=r"PUT .*/blobs/uploads/.*: 502"):
        client.push_blob(repo, DIGEST, len(BLOB), BLOB)
    assert len(proxy.seen("PUT")) == 4  # retries=3: four whole-blob attempts


def test_registry_dies_mid_push(registry_factory: Callable[[str], RegistryServer],
                                repo: str) -> None:
    """The registry process is killed after the first chunk and comes back 0.3 s later."""
    server = registry_factory("open")
    restarted = threading.Event()
    errors: list[BaseException] = []

    def come_back() -> None:
        try:
            server.start()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        restarted.set()

    seen: list[int] = []

    def on_progress(done: int) -> None:
        seen.append(done)
        if done and not restarted.is_set() and not hasattr(on_progress, "killed"):
            on_progress.killed = True  # type: ignore[attr-defined]
            server.kill()
            threading.Timer(0.3, come_back).start()

    with server.client(retries=6, backoff=0.1) as client:
        assert client.push_blob(repo, DIGEST, len(BLOB), BLOB, chunk_size=64 * 1024,
                                progress=on_progress) == "uploaded"
        assert restarted.wait(5) and not errors
        assert client.get_blob(repo, DIGEST) == BLOB
    assert seen[0] == 64 * 1024 and 0 in seen  # killed after one chunk, restarted from zero
    assert seen[-1] == len(BLOB)

