"""``estargz store check`` and ``store gc``: damage is found and named; a command killed with
SIGKILL at any point leaves a store that checks consistent, and the next run succeeds."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from clikit import Cli as Estargz
from estargz.store import ImageStore
from estargz.store.check import check_store
from imagekit import busybox_layers, push_layers, random_file_layer
from lazykit import lazy_mounts, mounted_under, wait_for
from registry_fixture import RegistryServer, unique_repo


def _consistent(cli: Estargz) -> dict[str, object]:
    proc = cli.store("check", "--json")
    report: dict[str, object] = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["consistent"], proc.stdout + proc.stderr
    return report


@pytest.fixture(scope="module")
def big(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox and a 40 MB layer of random bytes: every command takes long enough to kill."""
    return push_layers(registry.host, "check-big",
                       [*busybox_layers(), random_file_layer("data/random.bin", 40 << 20)],
                       tmp_path_factory.mktemp("check-big"))


@pytest.fixture
def cli(tmp_path: Path) -> Estargz:
    return Estargz.at(tmp_path)


def test_damage_is_found_and_named(cli: Estargz, big: str) -> None:
    cli("pull", big)
    report = _consistent(cli)
    assert report["images"] == 1 and report["unreferenced_blobs"] == 0
    store = ImageStore(cli.root)
    manifest = json.loads(store.read_blob(store.get_image(big).digest))
    layer = store.blob_path(manifest["layers"][0]["digest"])
    layer.chmod(0o644)
    with layer.open("r+b") as f:  # one byte of a layer
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    config = store.blob_path(manifest["config"]["digest"])
    config.unlink()
    proc = cli.store("check")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(manifest["layers"][0]["digest"] in line and "corrupt" in line for line in lines)
    assert any(f"config {manifest['config']['digest']} is missing" in line for line in lines)
    assert "Traceback" not in proc.stderr


def test_a_dangling_name_is_found(cli: Estargz, big: str) -> None:
    cli("pull", big)
    store = ImageStore(cli.root)
    store.blob_path(store.get_image(big).digest).unlink()
    report = check_store(store)
    assert len(report.problems) == 1 and "a dangling name" in report.problems[0]


def test_gc_removes_what_nothing_names(cli: Estargz, big: str) -> None:
    cli("pull", big)
    store = ImageStore(cli.root)
    blobs = check_store(store).blobs
    index = json.loads((cli.root / "index.json").read_text())
    index["manifests"] = []
    (cli.root / "index.json").write_text(json.dumps(index))
    (cli.root / "ingest" / "old.tmp").write_bytes(b"x")
    os.utime(cli.root / "ingest" / "old.tmp", (0, 0))
    assert blobs > 2 and check_store(store).unreferenced == blobs
    proc = cli.store("gc")
    assert proc.returncode == 0 and f"removed {blobs} unreferenced blobs" in proc.stderr
    assert "1 temporaries" in proc.stderr
    assert list((cli.root / "blobs" / "sha256").iterdir()) == []
    assert _consistent(cli)["blobs"] == 0


def _kill_after(cli: Estargz, delay: float, *args: str) -> int:
    proc = subprocess.Popen(cli.argv(*args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli.env)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


_RNG = random.Random(12)
DELAYS = sorted(_RNG.uniform(0.02, 0.3) for _ in range(3))
"""Early enough that a kill lands while each command works, on an idle machine too."""


@pytest.mark.parametrize("command", ["pull", "convert", "push"])
def test_sigkill_at_random_points_leaves_a_consistent_store(
        cli: Estargz, big: str, command: str, registry: RegistryServer) -> None:
    src = big
    args = {"pull": ["pull", big],
            "convert": ["convert", "--oci", "--estargz", big, big.replace(":v1", ":esgz")],
            "push": ["push", f"{registry.host}/{unique_repo('killed-push')}:v1", big]}[command]
    if command != "pull":
        cli("pull", src)
    killed = 0
    for delay in DELAYS:
        killed += _kill_after(cli, delay, *args) == -signal.SIGKILL
        _consistent(cli)
    assert killed >= 1  # (at least one kill landed while the command was at work)
    cli(*args)
    _consistent(cli)


def test_sigkill_of_rpull_leaves_a_consistent_store(tmp_path: Path, registry: RegistryServer,
                                                    big: str) -> None:
    with lazy_mounts(tmp_path) as mounts:
        cli = mounts.cli
        esgz = big.replace(":v1", ":rpull-esgz")
        cli("convert", "--oci", "--estargz", big, esgz)
        cli("push", esgz)
        fresh = Estargz(tmp_path / "lazy", cli.env)
        mounts.cli = fresh
        state = fresh.root / "state" / "mounts"

        def daemons() -> list[Path]:
            return [p for p in state.glob("*/daemon.pid") if p.exists()
                    and Path(f"/proc/{p.read_text().strip()}").exists()]

        killed = 0
        for delay in DELAYS:
            if _kill_after(fresh, delay, "rpull", esgz) != -signal.SIGKILL:
                continue  # (done before the kill: a faster machine)
            killed += 1
            # a daemon whose rpull died before naming the image takes its mount away; one
            # whose rpull named the image (killed on its way out) serves it
            wait_for("the orphaned mount to go", lambda: not daemons() or fresh.names(),
                     timeout=30)
            _consistent(fresh)
            if fresh.names():
                assert fresh.run("umount", fresh.mounts()[0]["mountpoint"]).returncode == 0
                assert fresh.run("rm", esgz).returncode == 0
            gc = fresh.store("gc")  # what a daemon that died mid-way leaves (failed mounts)
            assert gc.returncode == 0, gc.stderr
            assert not mounted_under(fresh.root)
            assert not state.exists() or not any(state.iterdir())
            _consistent(fresh)
        assert killed >= 1
        mount = mounts.mount(esgz)
        assert (mount / "data" / "random.bin").stat().st_size == 40 << 20
        _consistent(fresh)
