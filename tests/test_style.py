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


def test_every_module_pins_its_public_names() -> None:
    """Each module says what it exports, and every exported name exists."""
    import importlib

    problems = []
    for path in sorted((ROOT / "src" / "estargz").rglob("*.py")):
        rel = path.relative_to(ROOT / "src").with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            problems.append(f"{name}: no __all__")
            continue
        problems += [f"{name}: {n} in __all__ but missing" for n in exported
                     if not hasattr(module, n)]
    assert not problems, problems
