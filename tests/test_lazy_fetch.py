"""What a lazy mount fetches, and what it does when the registry misbehaves.

The mounts go through a FaultProxy in front of the registry, which records every request (so
the tests can see which byte ranges were asked for) and breaks on cue: flipped bytes must give
EIO and a log line naming the layer and file, never wrong content; a registry that goes away
and comes back must only delay a read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from estargz.format import BlobReader, open_blob
from estargz.lazy.remote import ResilientSource
from estargz.registry import Reference, RegistryClient
from faultproxy import FaultProxy
from imagekit import HELLO
from lazykit import Images, Mounts, wait_for
from registry_fixture import RegistryServer

OS_RELEASE = b'NAME="estargz test image"\n'
PASSWD = b"root:x:0:0:root:/root:/bin/sh\n"
MIN_REQUEST = 64 << 10
"""The smallest range a layer server asks for (MountSpec.min_request)."""


@pytest.fixture
def proxy(registry: RegistryServer, fault_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    return fault_proxy(registry.host)


def _via(proxy: FaultProxy, ref: str) -> str:
    return proxy.host + ref[ref.index("/"):]


def _layers(ref: str) -> list[tuple[str, BlobReader]]:
    """Each layer's digest and a reader over the whole blob (for chunk offsets)."""
    parsed = Reference.parse(ref)
    with RegistryClient(parsed.registry) as client:
        raw, _, _ = client.get_manifest(parsed.repository, parsed.manifest_ref)
        out = []
        for desc in json.loads(raw)["layers"]:
            blob = client.get_blob(parsed.repository, desc["digest"], max_size=1 << 30)
            out.append((desc["digest"], open_blob(blob).skip_verify()))
    return out


def _stats(mounts: Mounts, mount: Path) -> list[dict[str, Any]]:
    rows = [r for r in mounts.cli.mounts() if r["mountpoint"] == str(mount)]
    assert len(rows) == 1, rows
    layers: list[dict[str, Any]] = rows[0]["layers"]
    return layers


def _settled(mounts: Mounts, mount: Path, layer: int, above: int) -> int:
    """The layer's fetched_bytes (as ``i mounts`` shows them) once they exceed ``above`` and
    stop changing; polled from the stats file the layer server rewrites."""
    path = mounts.state_dir(mount) / f"stats-{layer}.json"

    def check() -> bool:
        if not path.exists():  # written first a fraction of a second after the mount
            return False
        first = json.loads(path.read_text())["fetched_bytes"]
        time.sleep(0.3)  # the servers rewrite their stats a few times a second
        return bool(json.loads(path.read_text())["fetched_bytes"] == first > above)

    wait_for(f"layer {layer} fetched bytes to settle", check, timeout=10)
    value: int = _stats(mounts, mount)[layer]["fetched_bytes"]
    return value


def _blob_gets(proxy: FaultProxy, digest: str) -> list[tuple[int, int]]:
    """The byte ranges of the GETs of one blob that the proxy saw."""
    out = []
    for seen in proxy.seen("GET", f"/blobs/{digest}"):
        rng = {k.lower(): v for k, v in seen.headers.items()}.get("range", "")
        assert rng.startswith("bytes="), f"a whole-blob GET: {seen}"
        first, _, last = rng[len("bytes="):].partition("-")
        out.append((int(first), int(last) + 1))
    return out


def test_reads_fetch_only_the_members_they_need(images: Images, mounts: Mounts,
                                                proxy: FaultProxy) -> None:
    ref = images.get("default")
    (d0, r0), (d1, r1) = _layers(ref)
    mount = mounts.mount("--no-background-fetch", _via(proxy, ref))
    rpull_reads = _blob_gets(proxy, d0) + _blob_gets(proxy, d1)
    assert rpull_reads, "rpull reads each footer and TOC through the proxy"
    proxy.clear()
    time.sleep(0.5)  # the layer servers are up: they must not fetch anything on their own
    stats = _stats(mounts, mount)
    sizes = [layer["size"] for layer in stats]
    assert [layer["fetched_bytes"] for layer in stats] == [0, 0]  # no landmark: no prefetch
    assert [layer["cached_chunks_percent"] for layer in stats] == [0.0, 0.0]
    assert proxy.seen("GET", "/blobs/") == []

    # one small file of the top layer: one request, about one gzip member
    assert (mount / "etc/hello.txt").read_bytes() == HELLO
    (chunk,) = r1.chunks("etc/hello.txt")
    member = chunk.member_end - chunk.offset
    fetched = _settled(mounts, mount, 1, 0)
    assert member <= fetched <= min(member + MIN_REQUEST, sizes[1]), (member, fetched)
    gets = _blob_gets(proxy, d1)
    assert len(gets) == 1 and gets[0][0] == chunk.offset, gets
    assert _stats(mounts, mount)[0]["fetched_bytes"] == 0
    assert _blob_gets(proxy, d0) == []

    # one small file of the busybox layer: busybox and the 10 MB data/big.bin stay remote
    assert (mount / "etc/passwd").read_bytes() == PASSWD
    (chunk,) = r0.chunks("etc/passwd")
    member = chunk.member_end - chunk.offset
    fetched = _settled(mounts, mount, 0, 0)
    assert member <= fetched <= member + MIN_REQUEST, (member, fetched)
    assert fetched < sizes[0] // 10, (fetched, sizes[0])
    gets = _blob_gets(proxy, d0)
    assert len(gets) == 1 and gets[0][0] == chunk.offset, gets
    busybox = r0.chunks("bin/busybox")
    assert all(not (c.offset < gets[0][1] and gets[0][0] < c.member_end) for c in busybox)
    cache = mounts.cli.root / "cache" / d0[len("sha256:"):]
    cached = {p.name for p in cache.iterdir()}
    big = [c.key for c in r0.chunks("data/big.bin")]
    assert len(big) == 3 and not cached & set(big), cached
    assert r0.chunks("etc/passwd")[0].key in cached
    assert _stats(mounts, mount)[0]["cached_chunks_percent"] < 50


def test_concurrent_reads_of_one_chunk_fetch_it_once(images: Images, mounts: Mounts,
                                                     proxy: FaultProxy) -> None:
    """The kernel hands the reads of one large file to several FUSE threads at once; while one
    of them fetches a chunk, the others wait for it instead of fetching it again."""
    ref = images.get("default")
    (d0, r0), _ = _layers(ref)
    mount = mounts.mount("--no-background-fetch", _via(proxy, ref))
    first = r0.chunks("data/big.bin")[0]
    proxy.clear()
    proxy.add("delay", method="GET", path=f"/blobs/{d0}", times=None, seconds=0.5)
    want = bytes(range(256)) * 40_000
    got: dict[int, bytes] = {}

    def read(offset: int) -> None:
        with open(mount / "data/big.bin", "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # no kernel read-ahead
            got[offset] = os.pread(f.fileno(), 4096, offset)

    offsets = [i * (first.size // 6) for i in range(6)]
    threads = [threading.Thread(target=read, args=(o,)) for o in offsets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {o: want[o : o + 4096] for o in offsets}
    gets = _blob_gets(proxy, d0)
    assert len(gets) == 1 and gets[0][0] == first.offset, gets


def test_a_read_waits_for_the_background_fetch_of_its_chunk(images: Images,
                                                            proxy: FaultProxy) -> None:
    """A chunk that the background fetch is fetching is not fetched a second time for a read:
    the read waits for it (chunk by chunk: as soon as that chunk is verified)."""
    ref = Reference.parse(_via(proxy, images.get("default")))
    (d0, r0), _ = _layers(images.get("default"))
    big = [("data/big.bin", c) for c in r0.chunks("data/big.bin")]
    with RegistryClient(ref.registry) as client:
        size = client.blob_size(ref.repository, d0)
        remote = open_blob(ResilientSource(client.blob(ref.repository, d0, size))).skip_verify()
        proxy.clear()
        proxy.add("delay", method="GET", path=f"/blobs/{d0}", times=None, seconds=0.5)
        background = threading.Thread(target=remote.fetch_range, args=(big,))
        background.start()
        wait_for("the background request", lambda: bool(_blob_gets(proxy, d0)), timeout=5)
        last = big[-1][1]
        assert remote.read_chunk("data/big.bin", last) == \
            (bytes(range(256)) * 40_000)[last.chunk_offset : last.chunk_offset + last.size]
        background.join()
    gets = _blob_gets(proxy, d0)
    assert gets == [(big[0][1].offset, big[-1][1].member_end)], gets  # one request in all


def test_background_fetch_caches_every_chunk(images: Images, mounts: Mounts,
                                             proxy: FaultProxy) -> None:
    mount = mounts.mount(_via(proxy, images.get("default")))
    wait_for("every chunk cached", lambda: all(
        layer["cached_chunks_percent"] == 100.0 for layer in _stats(mounts, mount)), timeout=30)
    for layer in _stats(mounts, mount):
        assert layer["fetched_bytes"] >= layer["size"] * 0.9, layer
    # everything is local now: the registry can go away
    proxy.stop()
    big = hashlib.sha256((mount / "data/big.bin").read_bytes()).hexdigest()
    assert big == hashlib.sha256(bytes(range(256)) * 40_000).hexdigest()
    assert (mount / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()


def test_corrupt_bytes_give_eio_and_name_layer_and_file(images: Images, mounts: Mounts,
                                                        proxy: FaultProxy) -> None:
    ref = images.get("default")
    (d0, r0), _ = _layers(ref)
    mount = mounts.mount("--no-background-fetch", _via(proxy, ref))
    proxy.clear()  # forget rpull's own reads
    (chunk,) = r0.chunks("etc/os-release")
    assert chunk.member_end - chunk.offset > 14
    proxy.add("flip", method="GET", path=f"/blobs/{d0}", times=None, after=12)

    with pytest.raises(OSError) as failed:
        (mount / "etc/os-release").read_bytes()
    assert failed.value.errno == errno.EIO
    assert _blob_gets(proxy, d0)[0][0] == chunk.offset  # the flip hit this file's member
    log = (mounts.state_dir(mount) / "daemon.log").read_text()
    lines = [line for line in log.splitlines() if "failed" in line and "os-release" in line]
    assert lines, log
    assert f"layer 0 {d0[:19]}" in lines[0], lines[0]
    assert "'etc/os-release'" in lines[0] and f"(blob offset {chunk.offset})" in lines[0]
    assert "TOC says sha256:" in lines[0] or "does not inflate" in lines[0], lines[0]

    # once the registry sends good bytes again, the same read works: nothing bad was kept
    proxy.clear()
    assert (mount / "etc/os-release").read_bytes() == OS_RELEASE


def test_a_read_waits_while_the_registry_is_away(images: Images, mounts: Mounts,
                                                 proxy: FaultProxy) -> None:
    mount = mounts.mount("--no-background-fetch", _via(proxy, images.get("default")))
    proxy.stop()
    result: dict[str, Any] = {}

    def read() -> None:
        try:
            result["data"] = (mount / "etc/os-release").read_bytes()
        except OSError as exc:
            result["error"] = exc

    reader = threading.Thread(target=read, daemon=True)
    started = time.monotonic()
    reader.start()
    time.sleep(2.0)
    assert reader.is_alive(), f"the read did not wait for the registry: {result}"
    proxy.start()
    reader.join(30)
    assert not reader.is_alive(), "the read did not finish after the registry came back"
    assert result == {"data": OS_RELEASE}
    assert time.monotonic() - started >= 2.0
    log = (mounts.state_dir(mount) / "daemon.log").read_text()
    assert " failed" not in log, log


def test_a_read_fails_with_eio_once_the_read_timeout_is_over(images: Images, mounts: Mounts,
                                                             proxy: FaultProxy) -> None:
    mount = mounts.mount("--no-background-fetch", "--read-timeout", "2",
                         _via(proxy, images.get("default")))
    proxy.stop()
    started = time.monotonic()
    with pytest.raises(OSError) as failed:
        (mount / "etc/os-release").read_bytes()
    waited = time.monotonic() - started
    assert failed.value.errno == errno.EIO
    assert 1.9 <= waited < 4, waited  # the timeout asked for, not retries on top of it
    log = (mounts.state_dir(mount) / "daemon.log").read_text()
    assert "unreachable for 2s" in log, log

    # the registry is known to be away: other reads fail at once instead of waiting again
    started = time.monotonic()
    with pytest.raises(OSError) as failed:
        (mount / "etc/passwd").read_bytes()
    assert failed.value.errno == errno.EIO and time.monotonic() - started < 1.5
    # and once it is back, reads work again
    proxy.start()
    assert (mount / "etc/passwd").read_bytes() == PASSWD
    assert (mount / "etc/os-release").read_bytes() == OS_RELEASE


def test_min_request_sets_the_smallest_range(images: Images, mounts: Mounts,
                                             proxy: FaultProxy) -> None:
    ref = images.get("default")
    (d0, r0), _ = _layers(ref)
    mount = mounts.mount("--no-background-fetch", "--min-request", "256K", _via(proxy, ref))
    proxy.clear()
    assert (mount / "etc/passwd").read_bytes() == PASSWD
    (chunk,) = r0.chunks("etc/passwd")
    size = _stats(mounts, mount)[0]["size"]
    assert _blob_gets(proxy, d0) == [(chunk.offset, min(chunk.offset + (256 << 10), size))]


def test_the_chunk_cache_stays_within_its_bound(images: Images, mounts: Mounts,
                                               proxy: FaultProxy) -> None:
    """The bound is for the store's whole cache: what an earlier mount of another image left
    there goes first, as the least recently used."""
    mounts.cli("ls")  # (the store, before anything is put in it)
    cache = mounts.cli.root / "cache"
    stale = cache / ("0" * 64) / "0-0-3145728"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"s" * (3 << 20))
    os.utime(stale, (1, 1))
    mount = mounts.mount("--no-background-fetch", "--cache-size", "5M",
                         _via(proxy, images.get("default")))
    assert (mount / "data/big.bin").read_bytes() == bytes(range(256)) * 40_000
    assert (mount / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    cached = list(cache.glob("*/*"))
    assert not stale.exists()
    assert len(cached) > 1 and sum(p.stat().st_size for p in cached) <= 5 << 20


def test_prioritized_files_are_prefetched_in_one_request(images: Images, mounts: Mounts,
                                                         proxy: FaultProxy) -> None:
    ref = images.get("prioritized")
    layers = _layers(ref)
    mount = mounts.mount("--no-background-fetch", _via(proxy, ref))
    for index, (digest, reader) in enumerate(layers):
        landmark = reader.prefetch_size
        assert landmark > 0
        fetched = _settled(mounts, mount, index, 0)
        size = reader.source.size
        rpull_tail = max(0, size - (512 << 10))  # rpull reads footer and TOC from there
        gets = [r for r in _blob_gets(proxy, digest) if r[0] != rpull_tail]
        head = [c for _, c in reader.all_chunks() if c.offset < landmark]
        start = head[0].offset  # one request from the first member to the landmark,
        end = min(max(max(c.member_end for c in head), start + MIN_REQUEST), size)  # or more
        assert gets == [(start, end)] and fetched == end - start
    proxy.clear()
    assert (mount / "etc/passwd").read_bytes() == PASSWD
    assert (mount / "etc/hello.txt").read_bytes() == HELLO
    assert proxy.seen("GET", "/blobs/") == []  # both were in the prefetched range
