"""The command line's error cases, walked as a new user meets them: each exits 1 with one line
on stderr that says what went wrong and with which file or host, with no Python exception
class name, no errno number and nothing said twice (``--debug`` keeps the traceback)."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from clikit import assert_clear_error, repeated_fragment
from registry_fixture import RegistryServer, free_port, unique_repo

ZERO = "sha256:" + "0" * 64


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs a user might hand over by mistake, and one good eStargz layer of each kind."""
    d = tmp_path_factory.mktemp("errors")
    tar = _tar({"etc/hostname": b"box\n", "bin/tool": hashlib.shake_256(b"t").digest(50_000)})
    (d / "layer.tar").write_bytes(tar)
    (d / "layer.tar.gz").write_bytes(gzip.compress(tar))
    (d / "truncated.tar.gz").write_bytes(gzip.compress(tar)[:20_000])
    (d / "garbage").write_bytes(b"not a tar " * 500)
    (d / "empty").write_bytes(b"")
    (d / "text.txt").write_text("hello\n")
    (d / "record.json").write_text("not json at all")
    (d / "adir").mkdir()
    _run(d, "layer", "convert", str(d / "layer.tar"), str(d / "good.esgz"))
    _run(d, "layer", "convert", "--external-toc", str(d / "ext.toc"), str(d / "layer.tar"),
         str(d / "ext.esgz"))
    return d


def _run(tmp: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "estargz.cli.main", "--root",
                           str(tmp / "store"), *argv], capture_output=True, text=True,
                          timeout=120, check=False)


LAYER_CASES: list[tuple[list[str], str]] = [
    (["layer", "convert", "/nonexistent", "{d}/out"], "/nonexistent: no such file or directory"),
    (["layer", "convert", "{d}/layer.tar", "/nonexistent/dir/out"],
     "/nonexistent/dir: no such directory to write into"),
    (["layer", "convert", "{d}/adir", "{d}/out"], "adir: is a directory (give a file)"),
    (["layer", "convert", "{d}/garbage", "{d}/out"], "garbage: "),
    (["layer", "convert", "{d}/text.txt", "{d}/out"], "text.txt: "),
    (["layer", "convert", "{d}/truncated.tar.gz", "{d}/out"],
     "truncated.tar.gz: compressed input is corrupt or truncated"),
    (["layer", "convert", "--keep-diff-id", "{d}/layer.tar", "{d}/out"],
     "keep-diff-id needs an external TOC"),
    (["layer", "convert", "--prioritized-files", "/nonexistent.txt", "{d}/layer.tar",
      "{d}/out"], "/nonexistent.txt: no such file or directory"),
    (["layer", "verify", "{d}/layer.tar"], "layer.tar: not an eStargz layer: "),
    (["layer", "verify", "{d}/layer.tar.gz"], "layer.tar.gz: not an eStargz layer: "),
    (["layer", "verify", "{d}/garbage"], "garbage: not an eStargz layer: "),
    (["layer", "verify", "{d}/empty"], "empty: not an eStargz layer: "),
    (["layer", "verify", "/nonexistent.esgz"], "/nonexistent.esgz: no such file or directory"),
    (["layer", "verify", "{d}/adir"], "adir: is a directory"),
    (["layer", "verify", "{d}/good.esgz", "--toc-digest", ZERO], f"expected {ZERO}"),
    (["layer", "verify", "{d}/ext.esgz"], "ext.esgz: this blob keeps its TOC outside"),
    (["layer", "verify", "{d}/ext.esgz", "--external-toc", "{d}/nope"],
     "nope: no such file or directory"),
    (["layer", "toc", "{d}/text.txt"], "text.txt: not an eStargz layer: "),
    (["layer", "extract", "{d}/garbage", "{d}/outdir"], "garbage: not an eStargz layer: "),
]

IMAGE_CASES: list[tuple[list[str], str]] = [
    (["i", "pull", "-q", "BAD::REF"], "invalid image reference 'BAD::REF'"),
    (["i", "pull", "-q", "--platform", "nope", "127.0.0.1:1/a:b"],
     "platform 'nope' is not os/arch[/variant]"),
    (["i", "pull", "-q", "127.0.0.1:{port}/a:b"],
     "GET 127.0.0.1:{port}/v2/a/manifests/b: connection refused"),
    (["i", "push", "-q", "127.0.0.1:{port}/a:b", "local/none:v1"], "local/none:v1"),
    (["i", "rm", "-q", "local/none:v1"], "local/none:v1"),
    (["i", "tag", "-q", "local/none:v1", "local/other:v1"], "local/none:v1"),
    (["i", "export", "-q", "{d}/out.tar", "local/none:v1"], "local/none:v1"),
    (["i", "import", "-q", "/nonexistent.tar"], "/nonexistent.tar: no such file or directory"),
    (["i", "import", "-q", "{d}/garbage"], "garbage"),
    (["i", "convert", "-q", "--estargz-external-toc", "a/b:c", "d/e:f"],
     "--estargz-external-toc needs --estargz"),
    (["i", "convert", "-q", "--estargz", "--estargz-keep-diff-id", "a/b:c", "d/e:f"],
     "keep-diff-id needs an external TOC"),
    (["i", "convert", "-q", "--estargz", "--estargz-record-in", "{d}/record.json",
      "127.0.0.1:{port}/a:b", "d/e:f"], "record.json: not a record file"),
    (["i", "inspect", "-q", "127.0.0.1:{port}/a:b"],
     "127.0.0.1:{port}/a:b: not in the store; asking its registry: GET "),
    (["i", "inspect", "-q", "127.0.0.1:{port}/a"],
     "127.0.0.1:{port}/a: not in the store; asking 127.0.0.1:{port}/a:latest: GET "),
    (["i", "get-toc-digest", "-q", ZERO],
     f"{ZERO} is not in the store: give the image (REF LAYER_DIGEST)"),
    (["i", "get-toc-digest", "-q", "127.0.0.1:{port}/a:b", ZERO], "not in the store; asking"),
    (["i", "push", "-q", "--tlscert", "{d}/text.txt", "127.0.0.1:{port}/a:b", "local/none:v1"],
     "local/none:v1"),
    (["i", "umount", "{d}/adir"], "adir"),
]


@pytest.mark.parametrize(("argv", "says"), LAYER_CASES + IMAGE_CASES,
                         ids=[f"{i:02d}-{' '.join(a[:2])}" for i, (a, _) in
                              enumerate(LAYER_CASES + IMAGE_CASES)])
def test_each_error_is_one_clear_line(files: Path, tmp_path: Path, argv: list[str],
                                      says: str) -> None:
    port = str(free_port())
    args = [a.format(d=files, port=port) for a in argv]
    proc = _run(tmp_path, *args)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    line = assert_clear_error(proc.stderr)
    assert says.format(port=port) in line, line


def test_a_missing_image_names_the_registry_asked(registry: RegistryServer,
                                                  tmp_path: Path) -> None:
    """``i inspect NAME`` that the store lacks says it asked the registry, and the answer."""
    ref = f"{registry.host}/{unique_repo('missing')}:v1"
    proc = _run(tmp_path, "i", "inspect", ref)
    assert proc.returncode == 1
    line = assert_clear_error(proc.stderr)
    assert line.startswith(f"estargz: error: {ref}: not in the store; asking its registry: "
                           f"GET {registry.host}/v2/"), line
    assert "404" in line


def test_a_refused_registry_fails_after_one_retry(tmp_path: Path) -> None:
    proc = _run(tmp_path, "i", "pull", "-q", f"127.0.0.1:{free_port()}/a:b")
    assert proc.returncode == 1
    assert assert_clear_error(proc.stderr).endswith(
        "connection refused: nothing listens on that host and port (is the registry running?) "
        "(after 2 attempts)")


def test_debug_keeps_the_detail(files: Path, tmp_path: Path) -> None:
    proc = _run(tmp_path, "--debug", "layer", "verify", str(files / "layer.tar"))
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "InvalidFooter" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("estargz: error: ")


@pytest.mark.parametrize(("message", "repeated"), [
    ("no footer (not a gzip member; not a gzip member; not a gzip member)", "not a gzip member"),
    ("GET host/v2/a: connection refused (after 2 attempts)", None),
    ("a.tar: no such file or directory: a.tar: no such file or directory",
     "no such file or directory"),
])
def test_the_repetition_check_finds_repeats(message: str, repeated: str | None) -> None:
    assert repeated_fragment(message) == repeated
