"""RegistryClient against a real docker-registry: blobs, manifests, indexes, tags, ranges."""

from __future__ import annotations

import io
import os
import pathlib
import socket
import threading
from collections.abc import Callable

import httpx
import pytest

from estargz.digest import DigestMismatch, sha256_digest
from estargz.errors import RegistryNotFound, RegistryUnavailable
from estargz.format.source import BlobSource
from estargz.image.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from estargz.image.model import Descriptor, Index, Manifest, Platform, parse_document
from estargz.registry import RegistryBlob, RegistryClient
from faultproxy import FaultProxy
from registry_fixture import RegistryServer, free_port

BLOB = os.urandom(300_000)
BLOB_DIGEST = sha256_digest(BLOB)


def _push_image(client: RegistryClient, repo: str, *, docker: bool = False,
                arch: str = "amd64") -> tuple[bytes, Descriptor]:
    """Push a one-layer image and return its manifest bytes and descriptor."""
    config = f'{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers"}}}}'.encode()
    layer = os.urandom(2000)
    cfg = Descriptor.of(DOCKER_CONFIG if docker else OCI_CONFIG, config)
    lay = Descriptor.of(DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP, layer)
    for desc, data in ((cfg, config), (lay, layer)):
        client.push_blob(repo, desc.digest, desc.size, data)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    raw = Manifest(media_type, cfg, [lay]).to_bytes()
    return raw, Descriptor.of(media_type, raw, platform=Platform("linux", arch))


def test_push_and_fetch_blob(registry: RegistryServer, repo: str) -> None:
    seen: list[int] = []
    with registry.client() as client:
        assert client.blob_size(repo, BLOB_DIGEST) is None
        assert client.push_blob(repo, BLOB_DIGEST, len(BLOB), BLOB, progress=seen.append) == (
            "uploaded")
        assert seen[-1] == len(BLOB)
        assert client.blob_size(repo, BLOB_DIGEST) == len(BLOB)
        got: list[int] = []
        out = io.BytesIO()
        assert client.fetch_blob(repo, BLOB_DIGEST, out, size=len(BLOB), progress=got.append) == (
            len(BLOB))
        assert out.getvalue() == BLOB
        assert got == sorted(got) and got[-1] == len(BLOB)  # cumulative byte counts
        assert client.get_blob(repo, BLOB_DIGEST) == BLOB
        with pytest.raises(DigestMismatch, match="more than the expected 1000 bytes"):
            client.get_blob(repo, BLOB_DIGEST, max_size=1000)
        with pytest.raises(DigestMismatch, match=f"got {len(BLOB)} bytes, expected"):
            client.fetch_blob(repo, BLOB_DIGEST, io.BytesIO(), size=len(BLOB) + 1)


def test_push_sources_path_and_factory(registry: RegistryServer, repo: str,
                                       tmp_path: pathlib.Path) -> None:
    path = tmp_path / "blob"
    data = os.urandom(5000)
    path.write_bytes(data)
    other = os.urandom(6000)
    opened: list[int] = []

    def factory() -> io.BytesIO:
        opened.append(1)
        return io.BytesIO(other)

    with registry.client() as client:
        assert client.push_blob(repo, sha256_digest(data), len(data), path) == "uploaded"
        assert client.push_blob(repo, sha256_digest(other), len(other), factory) == "uploaded"
        assert opened == [1]
        assert client.get_blob(repo, sha256_digest(data)) == data
        assert client.get_blob(repo, sha256_digest(other)) == other


def test_wrong_source_is_refused_before_commit(registry: RegistryServer, repo: str) -> None:
    data = b"the promised content"
    digest = sha256_digest(data)
    with registry.client() as client:
        with pytest.raises(DigestMismatch, match="content has digest"):
            client.push_blob(repo, digest, len(data), b"Y" * len(data))
        with pytest.raises(DigestMismatch, match="expected 20"):
            client.push_blob(repo, digest, len(data), data + b"!")
        with pytest.raises(DigestMismatch, match="content has digest"):
            client.push_blob(repo, digest, len(data), b"X" * len(data), chunk_size=7)
        assert client.blob_size(repo, digest) is None


def test_existing_blob_is_skipped_by_head(registry: RegistryServer, repo: str,
                                          fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.host)
    with RegistryClient(proxy.host, backoff=0.01) as client:
        assert client.push_blob(repo, BLOB_DIGEST, len(BLOB), BLOB) == "uploaded"
        proxy.clear()
        assert client.push_blob(repo, BLOB_DIGEST, len(BLOB), BLOB) == "exists"
    assert [s.method for s in proxy.requests] == ["HEAD"]


def test_chunked_upload(registry: RegistryServer, repo: str,
                        fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.host)
    seen: list[int] = []
    with RegistryClient(proxy.host, backoff=0.01) as client:
        assert client.push_blob(repo, BLOB_DIGEST, len(BLOB), BLOB, chunk_size=64 * 1024,
                                progress=seen.append) == "uploaded"
        assert client.get_blob(repo, BLOB_DIGEST) == BLOB
    patches = proxy.seen("PATCH")
    assert len(patches) == 5  # 300,000 bytes in 64 KiB chunks
    assert [p.headers["Content-Range"] for p in patches[:2]] == ["0-65535", "65536-131071"]
    assert seen == [65536, 131072, 196608, 262144, 300000]
    assert len(proxy.seen("PUT")) == 1


def test_large_blob_goes_chunked(registry: RegistryServer, repo: str,
                                 fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.host)
    with RegistryClient(proxy.host, backoff=0.01, monolithic_limit=100_000) as client:
        assert client.push_blob(repo, BLOB_DIGEST, len(BLOB), BLOB) == "uploaded"
        small = b"small"
        assert client.push_blob(repo, sha256_digest(small), 5, small) == "uploaded"
    assert len(proxy.seen("PATCH")) == 1  # one default-size chunk for the large blob only
    assert len(proxy.seen("PUT")) == 2


def test_empty_blob(registry: RegistryServer, repo: str) -> None:
    digest = sha256_digest(b"")
    with registry.client() as client:
        assert client.push_blob(repo, digest, 0, b"", chunk_size=10) == "uploaded"
        assert client.blob_size(repo, digest) == 0
        assert client.get_blob(repo, digest) == b""


def test_cross_repository_mount(registry: RegistryServer, repo: str,
                                fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.host)
    with RegistryClient(proxy.host, backoff=0.01) as client:
        client.push_blob(repo, BLOB_DIGEST, len(BLOB), BLOB)
        proxy.clear()
        assert client.push_blob(f"{repo}-b", BLOB_DIGEST, len(BLOB), BLOB, mount_from=repo) == (
            "mounted")
        assert not proxy.seen("PATCH") and not proxy.seen("PUT")
        assert client.mount_blob(f"{repo}-c", BLOB_DIGEST, repo) is True
        assert client.get_blob(f"{repo}-c", BLOB_DIGEST) == BLOB
        # the registry refuses to mount what the source does not have: upload instead
        other = b"not in the source repository"
        assert client.mount_blob(f"{repo}-c", sha256_digest(other), repo) is False
        assert client.push_blob(f"{repo}-d", sha256_digest(other), len(other), other,
                                mount_from=repo) == "uploaded"


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_manifest_roundtrip(registry: RegistryServer, repo: str, docker: bool) -> None:
    with registry.client() as client:
        raw, desc = _push_image(client, repo, docker=docker)
        assert client.put_manifest(repo, "v1", raw, desc.media_type) == desc.digest
        data, media_type, digest = client.get_manifest(repo, "v1")
        assert (data, media_type, digest) == (raw, desc.media_type, desc.digest)
        assert client.get_manifest(repo, desc.digest) == (raw, desc.media_type, desc.digest)
        head = client.head_manifest(repo, "v1")
        assert head == Descriptor(desc.media_type, desc.digest, len(raw))
        assert client.head_manifest(repo, "nope") is None
        doc = parse_document(data, media_type)
        assert isinstance(doc, Manifest) and doc.layers[0].media_type == (
            DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP)


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_index_roundtrip(registry: RegistryServer, repo: str, docker: bool) -> None:
    with registry.client() as client:
        children = []
        for arch in ("amd64", "arm64"):
            raw, desc = _push_image(client, repo, docker=docker, arch=arch)
            client.put_manifest(repo, desc.digest, raw, desc.media_type)  # by digest only
            children.append(desc)
        media_type = DOCKER_MANIFEST_LIST if docker else OCI_INDEX
        raw_index = Index(media_type, children).to_bytes()
        digest = client.put_manifest(repo, "multi", raw_index, media_type)
        data, got_type, got_digest = client.get_manifest(repo, "multi")
        assert (data, got_type, got_digest) == (raw_index, media_type, digest)
        index = parse_document(data, got_type)
        assert isinstance(index, Index)
        assert [str(d.platform) for d in index.manifests] == ["linux/amd64", "linux/arm64"]
        if not docker:  # asking for image manifests only: the registry cannot give the index
            with pytest.raises(RegistryNotFound, match="MANIFEST_UNKNOWN"):
                client.get_manifest(repo, "multi", accept=[OCI_MANIFEST])


def test_put_manifest_by_wrong_digest(registry: RegistryServer, repo: str) -> None:
    with registry.client() as client:
        raw, desc = _push_image(client, repo)
        with pytest.raises(DigestMismatch, match="content has digest"):
            client.put_manifest(repo, "sha256:" + "0" * 64, raw, desc.media_type)


def test_list_tags(registry: RegistryServer, repo: str) -> None:
    with registry.client() as client:
        raw, desc = _push_image(client, repo)
        for tag in ("v2", "v1", "latest"):
            client.put_manifest(repo, tag, raw, desc.media_type)
        assert sorted(client.list_tags(repo)) == ["latest", "v1", "v2"]


def test_not_found_errors_carry_oci_codes(registry: RegistryServer, repo: str) -> None:
    with registry.client() as client:
        raw, desc = _push_image(client, repo)
        client.put_manifest(repo, "v1", raw, desc.media_type)
        with pytest.raises(RegistryNotFound) as info:
            client.get_manifest(repo, "missing")
        err = info.value
        assert err.status == 404 and err.code == "MANIFEST_UNKNOWN"
        assert str(err) == (f"GET {registry.host}/v2/{repo}/manifests/missing: 404 "
                            "MANIFEST_UNKNOWN: manifest unknown")
        with pytest.raises(RegistryNotFound, match="BLOB_UNKNOWN: blob unknown") as binfo:
            client.fetch_blob(repo, "sha256:" + "1" * 64, io.BytesIO())
        assert binfo.value.code == "BLOB_UNKNOWN"
        with pytest.raises(RegistryNotFound, match="NAME_UNKNOWN") as ninfo:
            client.list_tags(f"{repo}-never-pushed")
        assert ninfo.value.code == "NAME_UNKNOWN"
        with pytest.raises(ValueError, match="neither a tag nor a digest"):
            client.get_manifest(repo, "bad tag")
        with pytest.raises(ValueError, match="repository name"):
            client.blob_size("Bad/Repo", BLOB_DIGEST)


def test_read_ranges_and_blob_source(registry: RegistryServer, repo: str,
                                     fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.host)
    with RegistryClient(proxy.host, backoff=0.01) as client:
        client.push_blob(repo, BLOB_DIGEST, len(BLOB), BLOB)
        assert client.read_range(repo, BLOB_DIGEST, 1000, 5000) == BLOB[1000:6000]
        assert client.read_range(repo, BLOB_DIGEST, len(BLOB) - 10, 100) == BLOB[-10:]
        assert client.read_range(repo, BLOB_DIGEST, len(BLOB) + 5, 100) == b""
        assert client.read_range(repo, BLOB_DIGEST, 0, 0) == b""
        blob = RegistryBlob(client, repo, BLOB_DIGEST, len(BLOB))
        assert isinstance(blob, BlobSource)
        assert blob.size == len(BLOB)
        assert blob.read_at(299_990, 50) == BLOB[299_990:]
        assert blob.read_at(len(BLOB), 10) == b""
        ranges = [(0, 10), (150_000, 4096), (299_000, 1000), (5, 0), (20, 30)]
        proxy.clear()
        assert blob.read_ranges(ranges) == [BLOB[o : o + n] for o, n in ranges]
        # the real registry serves all four non-empty ranges as one multipart response
        assert len(proxy.seen("GET")) == 1
        assert "," in proxy.seen("GET")[0].headers["Range"]
        out = io.BytesIO()
        assert blob.fetch(out) == len(BLOB) and out.getvalue() == BLOB


def test_unreachable_registry(tmp_path: pathlib.Path) -> None:
    """Nothing listens: one retry, not five, and the reason in words."""
    host = f"127.0.0.1:{free_port()}"
    with RegistryClient(host, retries=5, backoff=0.01) as client:
        with pytest.raises(RegistryUnavailable, match=r"connection refused.*after 2 attempts"
                           ) as info:
            client.get_manifest("a/b", "latest")
        assert info.value.status is None and info.value.method == "GET"
        assert str(info.value).startswith(f"GET {host}/v2/a/b/manifests/latest: ")
        assert "Errno" not in str(info.value)
        with pytest.raises(RegistryUnavailable, match="connection refused"):
            client.push_blob("a/b", BLOB_DIGEST, len(BLOB), BLOB)


def test_unresolvable_host_fails_after_one_retry() -> None:
    """A name that does not resolve (the resolver's error, raised where httpx raises it, so
    that no DNS query leaves the machine) is said in words, after one retry."""
    calls: list[str] = []

    class NoSuchHost(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            calls.append(str(request.url))
            try:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            except socket.gaierror as exc:
                raise httpx.ConnectError(str(exc), request=request) from exc

    with RegistryClient("registry.invalid", transport=NoSuchHost(), retries=5,
                        backoff=0.01) as client, pytest.raises(RegistryUnavailable) as info:
        client.get_manifest("a/b", "latest")
    assert len(calls) == 2
    assert str(info.value) == (
        "GET registry.invalid/v2/a/b/manifests/latest: the host name does not resolve (Name or "
        "service not known): check the registry part of the reference (after 2 attempts)")


def test_a_registry_reached_before_is_waited_for_when_it_restarts(
        registry_factory: Callable[[str], RegistryServer], repo: str) -> None:
    """Refusals from a registry reached before are a restart: every retry is spent."""
    server = registry_factory("open")
    with server.client(retries=6, backoff=0.1) as client:
        client.ping()
        server.kill()
        comeback = threading.Timer(0.5, server.start)
        comeback.start()
        try:
            with pytest.raises(RegistryNotFound):  # the restarted registry's answer
                client.get_manifest(repo, "latest")
        finally:
            comeback.join()
