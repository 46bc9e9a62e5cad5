"""``estargz --root <store> i ...`` as a subprocess: the one runner the CLI-level tests share."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Cli", "assert_clear_error", "exception_names", "repeated_fragment"]


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
        """Run, insist on exit status 1 with one clear error line (progress lines may come
        before it) and no traceback; return that line."""
        proc = self.run(*args)
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("estargz: error")]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        return assert_clear_error(lines[0] + "\n")

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


# --- what a person reads ---------------------------------------------------------------------


@functools.cache
def exception_names() -> frozenset[str]:
    """Names of the exception classes a message could leak: Python's, ours, our libraries'."""
    import builtins
    import importlib
    import pkgutil

    import estargz

    modules: list[object] = [builtins]
    for info in pkgutil.walk_packages(estargz.__path__, "estargz."):
        if info.name.endswith("__main__"):
            continue
        modules.append(importlib.import_module(info.name))
    for name in ("httpx", "httpcore", "ssl", "socket", "zlib", "tarfile", "gzip", "msgspec",
                 "orjson", "json", "subprocess"):
        modules.append(importlib.import_module(name))
    names = set()
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException):
                names.add(value.__name__)
    return frozenset(n for n in names if n not in ("error",))  # zlib.error: an English word


def repeated_fragment(message: str) -> str | None:
    """A part of the message (between ``:;,()[]``) said twice, like "x; x; x"."""
    seen: set[str] = set()
    for part in re.split(r"[;:,()\[\]]", message):
        part = part.strip().strip("'\"").lower()
        if len(part) >= 8 and part in seen:
            return part
        seen.add(part)
    return None


def assert_clear_error(stderr: str) -> str:
    """One line on stderr, ``estargz: error: ...``, with no exception class name, no errno
    number and nothing said twice; returns the line."""
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    line = stderr.rstrip("\n")
    assert line.startswith("estargz: error: "), line
    leaked = sorted(set(re.findall(r"[A-Za-z_]+", line)) & exception_names())
    assert not leaked, (leaked, line)
    assert "[Errno" not in line and "Traceback" not in line, line
    assert repeated_fragment(line) is None, (repeated_fragment(line), line)
    return line
