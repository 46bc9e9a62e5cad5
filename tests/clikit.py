"""``estargz --root <store> i ...`` as a subprocess: the one runner the CLI-level tests share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Cli"]


@dataclass
class Cli:
    """The image commands of one store, with no docker credentials around."""

    root: Path
    env: dict[str, str]

    @classmethod
    def at(cls, tmp: Path, name: str = "store") -> Cli:
        env = {k: v for k, v in os.environ.items() if k != "ESTARGZ_ROOT"}
        (tmp / "docker-config").mkdir(exist_ok=True)
        env["DOCKER_CONFIG"] = str(tmp / "docker-config")
        return cls(tmp / name, env)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "estargz.cli.main", "--root", str(self.root), "i", *args]

    def store(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``estargz --root <store> store ARGS`` (check, gc)."""
        return subprocess.run([*self.argv()[:-1], "store", *args], capture_output=True,
                              text=True, env=self.env, timeout=timeout, check=False)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env,
                              timeout=timeout, check=False)

    def __call__(self, *args: str) -> str:
        """Run, insist on success, return stdout."""
        proc = self.run(*args)
        assert proc.returncode == 0, f"estargz i {' '.join(args)}:\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.stdout

    def fails(self, *args: str) -> str:
        """Run, insist on exit status 1 with one line and no traceback; return that line."""
        proc = self.run(*args)
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("estargz: error")]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        return lines[0]

    def names(self) -> list[str]:
        return self("ls", "-q").split()

    def mounts(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self("mounts", "--json"))
        return rows

    def blob(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def snapshot(self) -> list[tuple[str, int, int]]:
        """Every file of the store with its size and mtime: equal snapshots, untouched store."""
        return sorted((str(p.relative_to(self.root)), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in self.root.rglob("*"))
