"""containerd 1.6 (Debian's) with our snapshotter as its ``estargz`` proxy plugin.

Everything lives under one short temporary directory (unix socket paths are limited to 107
bytes): containerd's config, root, state and socket, and the snapshotter's socket and root.
One containerd at a time on this machine: the same exclusive file lock as the Go peer
(tests/peer.py), so parallel test workers queue instead of colliding over runc and mounts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from peer import DEFAULT_DIR

SNAPSHOTTER = "estargz"
SRC = pathlib.Path(__file__).resolve().parents[1] / "src"


def _wait_socket(path: pathlib.Path, proc: subprocess.Popen[bytes], log: pathlib.Path,
                 timeout: float = 30.0) -> None:
    """Until ``path`` accepts connections (a killed process leaves its socket file behind)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path} never answered:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


class Containerd:
    """The processes and their directories; ``ctr`` runs Debian's ctr against them."""

    def __init__(self, base: pathlib.Path, store: pathlib.Path, flags: tuple[str, ...] = ()
                 ) -> None:
        self.base = base
        self.store = store
        self.flags = flags
        self.socket = base / "c" / "containerd.sock"
        self.sn_socket = base / "s" / "snapshotter.sock"
        self.sn_root = base / "sroot"
        self.sn_log = base / "snapshotter.log"
        self.log = base / "containerd.log"
        self.snapshotter: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None

    # -- processes ---------------------------------------------------------------------------

    def start_snapshotter(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        with open(self.sn_log, "ab") as log:
            self.snapshotter = subprocess.Popen(
                [sys.executable, "-m", "estargz.cli.main", "--root", str(self.store),
                 "snapshotter", "--address", str(self.sn_socket), "--root", str(self.sn_root),
                 "--log-level", "debug", *self.flags],
                stdout=log, stderr=log, env=env, start_new_session=True,
            )
        _wait_socket(self.sn_socket, self.snapshotter, self.sn_log)

    def stop_snapshotter(self, sig: int = signal.SIGTERM) -> int:
        assert self.snapshotter is not None
        self.snapshotter.send_signal(sig)
        code = self.snapshotter.wait(timeout=30)
        self.snapshotter = None
        return code

    def start_containerd(self) -> None:
        (self.base / "c").mkdir(exist_ok=True)
        config = self.base / "config.toml"
        config.write_text(f"""version = 2
root = "{self.base}/root"
state = "{self.base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[proxy_plugins]
  [proxy_plugins.{SNAPSHOTTER}]
    type = "snapshot"
    address = "{self.sn_socket}"
""")
        with open(self.log, "ab") as log:
            self.containerd = subprocess.Popen(["containerd", "--config", str(config)],
                                               stdout=log, stderr=log, start_new_session=True)
        _wait_socket(self.socket, self.containerd, self.log)
        self.ctr("version")

    def stop(self) -> None:
        for proc in (self.containerd, self.snapshotter):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.containerd = self.snapshotter = None
        self.stop_layer_daemons()
        for line in reversed(self.mounts()):  # what containerd or we left: innermost first
            subprocess.run(["umount", "-l", line.split()[1]], check=False, capture_output=True)

    def stop_layer_daemons(self) -> None:
        """The lazy layers' mount daemons outlive the snapshotter (as they should): end them."""
        if not (self.store / "state" / "mounts").exists():
            return
        from estargz.lazy.mount import list_mounts, umount
        from estargz.store import ImageStore

        store = ImageStore(str(self.store), create=False)
        for info in list_mounts(store):
            umount(store, info.spec.id)

    # -- helpers -----------------------------------------------------------------------------

    def ctr(self, *args: str, tool: str = "ctr", timeout: float = 300, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([tool, "--address", str(self.socket), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                f"{proc.stderr}\n--- snapshotter log tail ---\n{self.log_tail(self.sn_log)}"
                f"\n--- containerd log tail ---\n{self.log_tail(self.log)}"
            )
        return proc

    @staticmethod
    def log_tail(path: pathlib.Path, lines: int = 30) -> str:
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def mounts(self) -> list[str]:
        with open("/proc/mounts") as f:
            return [line for line in f
                    if f" {self.base}/" in line or f" {self.store}/" in line]

    def snapshot_rows(self) -> list[tuple[str, str, int]]:
        """(key, parent, kind) of every row of our snapshotter's SQLite metadata."""
        import sqlite3

        db = sqlite3.connect(self.sn_root / "metadata.db")
        try:
            return list(db.execute("SELECT key, parent, kind FROM snapshots ORDER BY id"))
        finally:
            db.close()


@contextlib.contextmanager
def containerd_with_snapshotter(store: pathlib.Path, *flags: str) -> Iterator[Containerd]:
    """containerd + our snapshotter (with ``flags``), fresh, for the duration of the block."""
    DEFAULT_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(DEFAULT_DIR.parent / "gs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = pathlib.Path(tempfile.mkdtemp(prefix="esn", dir="/tmp"))
        env = Containerd(base, store, flags)
        try:
            env.start_snapshotter()
            env.start_containerd()
            yield env
        finally:
            env.stop()
            shutil.rmtree(base, ignore_errors=True)
