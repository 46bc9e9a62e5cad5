"""The Go reference as a running peer: containerd + the stargz snapshotter 0.12 + ctr-remote.

Started through ``../shared/peers/go-stargz.sh``. One containerd at a time on this machine:
users take an exclusive file lock, so parallel test workers queue instead of colliding.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import subprocess
from collections.abc import Iterator

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "peers" / "go-stargz.sh"
DEFAULT_DIR = pathlib.Path.home() / ".cache" / "estargz-tests" / "gs"


class GoPeer:
    def __init__(self, state: pathlib.Path) -> None:
        self.state = state

    def ctr(self, *args: str, timeout: float = 300, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["bash", str(SCRIPT), "ctr", str(self.state), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ctr-remote {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                f"{proc.stderr}\n--- snapshotter log tail ---\n{self.log_tail()}"
            )
        return proc

    def log_tail(self, lines: int = 40) -> str:
        log = self.state / "stargz.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stargz_mounts(self) -> list[str]:
        with open("/proc/mounts") as f:
            return [line for line in f if str(self.state) in line and "fuse" in line]


@contextlib.contextmanager
def go_peer(state: pathlib.Path = DEFAULT_DIR) -> Iterator[GoPeer]:
    """A fresh containerd + snapshotter for the duration of the block (built once, cached)."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state.parent / "gs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["bash", str(SCRIPT), "start", str(state)], check=True, env=env,
                       capture_output=True, timeout=900)
        try:
            yield GoPeer(state)
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop", str(state)], check=False,
                           capture_output=True, timeout=120)
