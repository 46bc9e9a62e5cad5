"""Our snapshotter under Debian's containerd 1.6 as a proxy plugin: pull, run, write, remove.

The image is a plain gzip image in the test registry: containerd unpacks its layers into the
overlayfs snapshots we prepare (the path every non-eStargz layer takes).
"""

from __future__ import annotations

import hashlib
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

from containerdkit import SNAPSHOTTER, Containerd, containerd_with_snapshotter
from imagekit import HELLO, busybox_layers, push_layers
from registry_fixture import RegistryServer

ACTIVE, COMMITTED = 2, 3
BIG = bytes(range(256)) * 40_000


def _seed(registry: RegistryServer, repo: str, tmp_path: pathlib.Path) -> str:
    return push_layers(registry.host, repo.rsplit("/", 1)[-1], busybox_layers(), tmp_path)


def _run(env: Containerd, ref: str, script: str, *, rm: bool = True) -> tuple[str, str]:
    cid = f"t-{uuid.uuid4().hex[:8]}"
    flags = ["--rm"] if rm else []
    proc = env.ctr("run", *flags, "--snapshotter", SNAPSHOTTER, ref, cid, "/bin/sh", "-c", script)
    return cid, proc.stdout


def _settled(env: Containerd, rows: list[tuple[str, str, int]], timeout: float = 20) -> bool:
    """containerd's gc removes snapshots in the background: wait for it to reach ``rows``."""
    deadline = time.monotonic() + timeout
    while env.snapshot_rows() != rows:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_pull_and_run_a_plain_image(registry: RegistryServer, repo: str,
                                    tmp_path: pathlib.Path) -> None:
    ref = _seed(registry, repo, tmp_path)
    with containerd_with_snapshotter(tmp_path / "store") as env:
        env.ctr("i", "pull", "--plain-http", "--snapshotter", SNAPSHOTTER, ref)
        rows = env.snapshot_rows()
        assert [kind for _, _, kind in rows] == [COMMITTED, COMMITTED], rows
        assert rows[1][1] == rows[0][0], "layer two's snapshot has layer one's as parent"

        script = ("cat /etc/hello.txt; test -e /etc/removed-later || echo whiteout-ok; "
                  "sha256sum /data/big.bin")
        _, out = _run(env, ref, script)
        assert HELLO.decode() in out
        assert "whiteout-ok" in out
        assert hashlib.sha256(BIG).hexdigest() in out
        assert _settled(env, rows), "--rm left no active snapshot behind (after containerd's gc)"


def test_container_write_lands_in_its_active_snapshot_only(
    registry: RegistryServer, repo: str, tmp_path: pathlib.Path
) -> None:
    ref = _seed(registry, repo, tmp_path)
    with containerd_with_snapshotter(tmp_path / "store") as env:
        env.ctr("i", "pull", "--plain-http", "--snapshotter", SNAPSHOTTER, ref)
        cid, _ = _run(env, ref, "echo written > /etc/new.txt; echo x >> /etc/hello.txt", rm=False)
        db = sqlite3.connect(env.sn_root / "metadata.db")
        rows = list(db.execute("SELECT id, key, kind FROM snapshots"))
        db.close()
        active = [i for i, _, kind in rows if kind == ACTIVE]
        committed = [i for i, _, kind in rows if kind == COMMITTED]
        assert len(active) == 1 and len(committed) == 2, rows
        upper = env.sn_root / "snapshots" / str(active[0]) / "fs"
        assert (upper / "etc/new.txt").read_bytes() == b"written\n"
        assert (upper / "etc/hello.txt").read_bytes() == HELLO + b"x\n"  # copied up
        for i in committed:
            fs = env.sn_root / "snapshots" / str(i) / "fs"
            assert not (fs / "etc/new.txt").exists()
        layer_two = env.sn_root / "snapshots" / str(committed[1]) / "fs"
        assert (layer_two / "etc/hello.txt").read_bytes() == HELLO

        env.ctr("c", "rm", cid)
        env.ctr("i", "rm", "--sync", ref)
        assert _settled(env, []), "gc removed every snapshot"
        assert list((env.sn_root / "snapshots").iterdir()) == []
        assert not env.mounts()


def _run_after_restart(env: Containerd, ref: str) -> str:
    """``cat /etc/hello.txt`` in a container. containerd's connection to the stopped process
    is gone: its client fails calls as "unavailable" until it has reconnected (a backoff of
    about a second), so such failures are retried for a while."""
    deadline = time.monotonic() + 20
    while True:
        cid = f"t-{uuid.uuid4().hex[:8]}"
        proc = env.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, ref, cid,
                       "/bin/cat", "/etc/hello.txt", check=False)
        if proc.returncode == 0 or "unavailable" not in proc.stderr:
            assert proc.returncode == 0, proc.stderr + env.log_tail(env.sn_log)
            return proc.stdout
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(0.5)


def test_restart_keeps_snapshots(registry: RegistryServer, repo: str,
                                 tmp_path: pathlib.Path) -> None:
    ref = _seed(registry, repo, tmp_path)
    with containerd_with_snapshotter(tmp_path / "store") as env:
        env.ctr("i", "pull", "--plain-http", "--snapshotter", SNAPSHOTTER, ref)
        rows = env.snapshot_rows()
        assert env.stop_snapshotter(signal.SIGTERM) == 0
        assert not env.sn_socket.exists(), "a clean stop removes its socket"
        assert "SIGTERM: shutting down" in env.sn_log.read_text()
        env.start_snapshotter()
        assert env.snapshot_rows() == rows
        assert _run_after_restart(env, ref) == HELLO.decode()

        assert _settled(env, rows)
        env.stop_snapshotter(signal.SIGKILL)
        check = subprocess.run([sys.executable, "-m", "estargz.cli.main", "--root",
                                str(env.store), "store", "check"], capture_output=True,
                               text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr  # killed: still consistent
        env.start_snapshotter()
        assert env.snapshot_rows() == rows
        assert _run_after_restart(env, ref) == HELLO.decode()
