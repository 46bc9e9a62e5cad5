"""Build the Go interoperability harness (tests/go/esgzharness) against the Go reference.

The harness links Debian's packaged stargz-snapshotter v0.12 sources
(golang-github-containerd-stargz-snapshotter-dev) in GOPATH mode, so no Go module
download is ever attempted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

HARNESS_DIR = pathlib.Path(__file__).resolve().parent / "go" / "esgzharness"
SYSTEM_GOPATH = pathlib.Path("/usr/share/gocode")
STARGZ_SRC = SYSTEM_GOPATH / "src/github.com/containerd/stargz-snapshotter/estargz"
DEFAULT_CACHE_DIR = pathlib.Path.home() / ".cache" / "estargz-tests" / "go"
GO_BUILD_TIMEOUT = 600.0


def _sources() -> list[pathlib.Path]:
    return sorted(HARNESS_DIR.glob("*.go"))


def _source_key(go: str) -> str:
    """Key the binary on the harness sources and the Go toolchain that built it."""
    h = hashlib.sha256()
    for src in _sources():
        h.update(src.name.encode() + b"\0")
        h.update(src.read_bytes() + b"\0")
    h.update(os.path.realpath(go).encode())
    return h.hexdigest()[:20]


def _go_env(cache_dir: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",
        GOPROXY="off",
        GOFLAGS="",
        GOPATH=f"{cache_dir / 'gopath'}{os.pathsep}{SYSTEM_GOPATH}",
        GOCACHE=str(cache_dir / "gocache"),
    )
    return env


@contextlib.contextmanager
def _locked(lock_path: pathlib.Path) -> Iterator[None]:
    """Serialise builds across processes (pytest-xdist workers share the cache)."""
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_go_harness(cache_dir: pathlib.Path) -> pathlib.Path:
    """Compile tests/go/esgzharness into cache_dir and return the binary's path.

    The binary is named after a hash of the harness sources, so it is rebuilt only
    when main.go changes; the Go build cache (cache_dir/gocache) keeps even a rebuild
    fast. Raises RuntimeError, with go's output, when the build cannot be done.
    """
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(
            "the Go toolchain is not on PATH; install the Debian packages golang-go and "
            "golang-github-containerd-stargz-snapshotter-dev"
        )
    if not _sources():
        raise RuntimeError(f"no Go sources found in {HARNESS_DIR}")
    if not STARGZ_SRC.is_dir():
        raise RuntimeError(
            f"{STARGZ_SRC} is missing; install golang-github-containerd-stargz-snapshotter-dev"
        )

    cache_dir = pathlib.Path(cache_dir).expanduser().resolve()
    bin_dir = cache_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "gopath").mkdir(exist_ok=True)
    binary = bin_dir / f"esgzharness-{_source_key(go)}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary

    with _locked(cache_dir / ".build.lock"):
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary  # another process built it while we waited
        fd, tmp_name = tempfile.mkstemp(prefix=".esgzharness-", dir=bin_dir)
        os.close(fd)
        tmp = pathlib.Path(tmp_name)
        cmd = [go, "build", "-o", str(tmp), "."]
        try:
            proc = subprocess.run(
                cmd,
                cwd=HARNESS_DIR,
                env=_go_env(cache_dir),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=GO_BUILD_TIMEOUT,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    f"building the Go harness failed (exit {proc.returncode}): "
                    f"{' '.join(cmd)} in {HARNESS_DIR}\n{proc.stdout}"
                )
            tmp.chmod(0o755)
            os.replace(tmp, binary)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"building the Go harness timed out after {GO_BUILD_TIMEOUT:.0f}s:\n{exc.output}"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
    return binary
