"""``estargz i`` when things go wrong, run as a subprocess against real registries.

Wrong credentials, a registry answering 500, connections cut in the middle of a push, a registry
that goes away for good, a corrupted download, and a convert killed with SIGKILL. A failure must
end in exit status 1 and one clear line (no traceback) and leave the store as it was: never a
half image under any name. What does succeed is checked with skopeo and gzip/hashlib.
"""

from __future__ import annotations

import gzip
import io
import json
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clikit import Cli as Estargz
from estargz.digest import sha256_digest as sha256
from estargz.registry import RegistryClient
from estargz.store import ImageStore
from faultproxy import FaultProxy
from imagekit import busybox_layers, files_layer, random_file_layer, write_oci_layout
from registry_fixture import RegistryServer, unique_repo

TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE = "io.containers.estargz.uncompressed-size"
LAYER_DIGEST = "containerd.io/snapshot/stargz/layer.digest"


@pytest.fixture
def cli(tmp_path: Path) -> Estargz:
    return Estargz.at(tmp_path)


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def inspect(ref: str, *flags: str) -> Any:
    return json.loads(skopeo("inspect", "--tls-verify=false", *flags, f"docker://{ref}"))


# -- source images, pushed once per module -------------------------------------------------


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OCI layouts ``small/`` (busybox, two layers) and ``tiny/`` (one small layer), tag v1."""
    path = tmp_path_factory.mktemp("failures-layouts")
    write_oci_layout(path / "small", "v1", busybox_layers())
    write_oci_layout(path / "tiny", "v1", [files_layer({"hello.txt": b"hi\n"})])
    return path


@pytest.fixture(scope="module")
def small(registry: RegistryServer, layouts: Path) -> str:
    """The busybox image in the shared registry, as ``repository:tag`` (no host)."""
    name = f"{unique_repo('failures-small')}:v1"
    skopeo("copy", "-q", "--dest-tls-verify=false", f"oci:{layouts / 'small'}:v1",
           f"docker://{registry.host}/{name}")
    return name


@pytest.fixture(scope="module")
def big(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox plus a 50 MB layer of random bytes: slow enough to convert to interrupt it."""
    path = tmp_path_factory.mktemp("failures-big")
    write_oci_layout(path, "big", [*busybox_layers(),
                                   random_file_layer("data/random.bin", 50 << 20)])
    name = f"{registry.host}/{unique_repo('failures-big')}:v1"
    skopeo("copy", "-q", "--dest-tls-verify=false", f"oci:{path}:big", f"docker://{name}")
    return name


@pytest.fixture
def proxy(registry: RegistryServer, fault_proxy: Callable[..., FaultProxy]) -> FaultProxy:
    return fault_proxy(registry.host)


# -- credentials ---------------------------------------------------------------------------


def test_wrong_credentials_fail_with_one_line(cli: Estargz, basic_registry: RegistryServer,
                                             layouts: Path) -> None:
    user, password = basic_registry.username, basic_registry.password
    ref = f"{basic_registry.host}/{unique_repo('auth')}:v1"
    skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-creds", f"{user}:{password}",
           f"oci:{layouts / 'tiny'}:v1", f"docker://{ref}")

    for creds in ([], ["--user", f"{user}:wrong-{password}"], ["--user", f"nobody:{password}"]):
        line = cli.fails("pull", *creds, ref)
        assert "401" in line and "credentials" in line, line
    assert not cli.root.exists() or cli.names() == []

    cli("pull", "--user", f"{user}:{password}", ref)  # the image is there for the right user
    assert cli.names() == [ref]
    before = cli.snapshot()
    other = f"{basic_registry.host}/{unique_repo('auth-push')}:v1"
    line = cli.fails("push", "--user", f"{user}:wrong", other, ref)
    assert "401" in line and "credentials" in line, line
    assert cli.snapshot() == before
    repo = other.split("/", 1)[1].rsplit(":", 1)[0]
    with RegistryClient(basic_registry.host, credentials=(user, password)) as client:
        assert client.head_manifest(repo, "v1") is None


# -- a flaky registry ----------------------------------------------------------------------


def test_pull_rides_out_two_500s(cli: Estargz, proxy: FaultProxy, small: str) -> None:
    ref = f"{proxy.host}/{small}"
    proxy.add("status", status=500, method="GET", path="/manifests/", times=2)
    proxy.add("status", status=500, method="GET", path="/blobs/", times=2)
    digest = cli("pull", ref).split()[1]
    assert cli.names() == [ref]
    assert len(proxy.seen("GET", "/manifests/")) == 3
    manifest = json.loads(cli.blob(digest).read_bytes())
    for desc in (manifest["config"], *manifest["layers"]):
        assert sha256(cli.blob(desc["digest"]).read_bytes()) == desc["digest"]


def test_push_rides_out_cut_connections(cli: Estargz, registry: RegistryServer,
                                        proxy: FaultProxy, small: str) -> None:
    cli("pull", f"{registry.host}/{small}")
    target = f"{unique_repo('cut')}:v1"
    cli("tag", f"{registry.host}/{small}", f"{proxy.host}/{target}")
    before = cli.snapshot()
    # the first blob upload and the first manifest PUT lose their connection before the answer
    proxy.add("reset", method="PUT", path="/blobs/uploads/", times=1)
    proxy.add("reset", method="PUT", path="/manifests/", times=1)
    out = cli("push", f"{proxy.host}/{target}")
    assert len(proxy.seen("PUT", "/manifests/")) == 2
    assert inspect(f"{registry.host}/{target}")["Digest"] == out.split()[1]
    assert cli.snapshot() == before


def test_push_survives_the_registry_going_away(cli: Estargz, registry: RegistryServer,
                                               proxy: FaultProxy, small: str) -> None:
    cli("pull", f"{registry.host}/{small}")
    target = f"{unique_repo('restart')}:v1"
    cli("tag", f"{registry.host}/{small}", f"{proxy.host}/{target}")
    before = cli.snapshot()
    at_outage: list[int] = []

    def go_away_and_come_back() -> None:  # as soon as the push starts: every connection cut,
        deadline = time.monotonic() + 60  # nobody listening for half a second
        while not proxy.seen("HEAD") and time.monotonic() < deadline:
            time.sleep(0.001)
        proxy.stop()
        at_outage.append(len(proxy.requests))
        time.sleep(0.5)
        proxy.start()

    watcher = threading.Thread(target=go_away_and_come_back)
    watcher.start()
    try:
        out = cli("push", f"{proxy.host}/{target}")
    finally:
        watcher.join()
    assert at_outage, "the push never reached the proxy"
    after = proxy.requests[at_outage[0]:]
    assert [s.method for s in after].count("PUT") >= 1, "the push was over before the outage"
    assert inspect(f"{registry.host}/{target}")["Digest"] == out.split()[1]
    assert out.split()[1] == inspect(f"{registry.host}/{small}")["Digest"]
    assert cli.snapshot() == before


def test_push_fails_cleanly_when_the_registry_stays_away(cli: Estargz, registry: RegistryServer,
                                                          proxy: FaultProxy, small: str) -> None:
    cli("pull", f"{registry.host}/{small}")
    target = f"{unique_repo('gone')}:v1"
    cli("tag", f"{registry.host}/{small}", f"{proxy.host}/{target}")
    before = cli.snapshot()
    for method in ("POST", "PUT", "PATCH"):  # blobs are looked up, then nothing gets through
        proxy.add("reset", method=method, times=None)
    line = cli.fails("push", f"{proxy.host}/{target}")
    assert proxy.host in line, line
    assert cli.snapshot() == before
    repo = target.rsplit(":", 1)[0]
    with RegistryClient(registry.host) as client:
        assert client.head_manifest(repo, "v1") is None


# -- a corrupted download ------------------------------------------------------------------


def _files(cli: Estargz) -> list[tuple[str, int, int]]:
    """The store's files (not directories, whose times change) with sizes and times."""
    return [entry for entry in cli.snapshot() if not (cli.root / entry[0]).is_dir()]


def test_corrupted_pull_leaves_no_image(cli: Estargz, registry: RegistryServer,
                                        proxy: FaultProxy, layouts: Path, small: str) -> None:
    tiny = cli("import", str(layouts / "tiny"), "--name", "local/tiny:1").split()[0]
    assert cli.names() == [tiny] == ["docker.io/local/tiny:1"]
    manifest = inspect(f"{registry.host}/{small}", "--raw")
    big_layer = max(manifest["layers"], key=lambda d: d["size"])["digest"]
    proxy.add("flip", method="GET", path=f"/blobs/{big_layer}", after=1000, times=None)
    before = _files(cli)
    line = cli.fails("pull", f"{proxy.host}/{small}")
    assert "digest" in line.lower(), line
    assert cli.names() == [tiny]
    assert not cli.blob(big_layer).exists()
    assert list((cli.root / "ingest").iterdir()) == []
    assert _files(cli) == before  # the blobs it had written (manifest, config) went again


def test_failed_pull_does_not_wait_for_other_commands(cli: Estargz, registry: RegistryServer,
                                                      proxy: FaultProxy, small: str) -> None:
    """The clean-up after a failure gives way to commands at work on the store (their leases):
    the failing command ends at once, and the next gc collects what it left."""
    cli("ls")  # (creates the store)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from estargz.store import ImageStore\n"
         "with ImageStore(sys.argv[1]).lease():\n print('held', flush=True); time.sleep(60)",
         str(cli.root)], stdout=subprocess.PIPE, text=True, env=cli.env)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        manifest = inspect(f"{registry.host}/{small}", "--raw")
        big_layer = max(manifest["layers"], key=lambda d: d["size"])["digest"]
        proxy.add("flip", method="GET", path=f"/blobs/{big_layer}", after=1000, times=None)
        started = time.monotonic()
        cli.fails("pull", f"{proxy.host}/{small}")
        assert time.monotonic() - started < 30
        left = [p for p in (cli.root / "blobs" / "sha256").iterdir()]
        assert left, "with another command at work, nothing was collected"
    finally:
        holder.kill()
        holder.wait()
    ImageStore(cli.root).gc()  # (what the next ``i rm`` does)
    assert list((cli.root / "blobs" / "sha256").iterdir()) == []


# -- SIGKILL in the middle of a convert ----------------------------------------------------


def _convert_and_kill(cli: Estargz, src: str, dst: str, delay: float) -> tuple[int, str]:
    """Start a convert, SIGKILL it ``delay`` s after it starts converting; (status, stderr)."""
    proc = subprocess.Popen(
        cli.argv("convert", "--oci", "--estargz", "--estargz-external-toc", src, dst),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli.env,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "converting to eStargz" in line:
                started.set()

    reader = threading.Thread(target=read)
    reader.start()
    started.wait(60)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    status = proc.wait()
    reader.join()
    return status, "".join(lines)


def test_sigkill_during_convert_leaves_no_half_image(cli: Estargz, big: str) -> None:
    cli("pull", big)
    dst = big.replace(":v1", ":esgz")
    toc_image = dst + "-esgztoc"
    for delay in (0.0, 0.1, 0.25, 0.4):
        status, err = _convert_and_kill(cli, big, dst, delay)
        assert status == -signal.SIGKILL, f"convert ended ({status}) before {delay} s:\n{err}"
        assert "converting to eStargz" in err
        assert cli.names() == [big]  # neither the image nor its TOC image

    out = cli("convert", "--oci", "--estargz", "--estargz-external-toc", big, dst)
    assert cli.names() == sorted([big, dst, toc_image])
    printed = dict(line.split() for line in out.splitlines())
    rows = json.loads(cli("inspect", "--json", dst))["layers"]
    assert [(r["estargz"], r["footer"]) for r in rows] == [(True, "external")] * 3

    # checked independently: blobs, gunzipped sizes, diffIDs, TOC digests
    manifest = json.loads(cli.blob(printed[dst]).read_bytes())
    config = json.loads(cli.blob(manifest["config"]["digest"]).read_bytes())
    tocs = json.loads(cli.blob(printed[toc_image]).read_bytes())["layers"]
    toc_of = {d["annotations"][LAYER_DIGEST]: d["digest"] for d in tocs}
    for i, desc in enumerate(manifest["layers"]):
        blob = cli.blob(desc["digest"]).read_bytes()
        assert sha256(blob) == desc["digest"] and len(blob) == desc["size"]
        raw = gzip.decompress(blob)
        assert len(raw) == int(desc["annotations"][UNCOMPRESSED_SIZE])
        assert config["rootfs"]["diff_ids"][i] == sha256(raw)
        toc_tar = gzip.decompress(cli.blob(toc_of[desc["digest"]]).read_bytes())
        with tarfile.open(fileobj=io.BytesIO(toc_tar)) as tf:
            toc_file = tf.extractfile("stargz.index.json")
            assert toc_file is not None
            assert sha256(toc_file.read()) == desc["annotations"][TOC_DIGEST]
