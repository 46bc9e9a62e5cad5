"""The code base stays ruff- and mypy-clean, and the format layer stays free of I/O policy."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORMAT = ROOT / "src" / "estargz" / "format"


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_clean() -> None:
    proc = _run(sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean() -> None:
    proc = _run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_format_imports_no_io_policy() -> None:
    """estargz.format must not depend on the network, the store, FUSE or the CLI."""
    banned = ("httpx", "mfusepy", "fuse", "rich", "estargz.cli", "estargz.store",
              "estargz.registry", "estargz.lazy", "estargz.image")
    offenders = []
    for path in FORMAT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith(banned):
                    offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders
