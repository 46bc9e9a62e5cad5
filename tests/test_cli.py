"""``estargz layer ...`` in-process through ``main(argv)``, and the installed script for real."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from clikit import assert_clear_error
from estargz.cli.main import main
from estargz.format import open_blob, parse_toc_blob

MTIME = 1_700_000_000
CONTENT = {
    "etc/hostname": b"box\n",
    "usr/bin/tool": hashlib.sha256(b"tool").digest() * 3000,  # 96000 bytes
    "empty": b"",
}


def make_tar(files: dict[str, bytes] = CONTENT, link: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("usr/bin/alias")
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "tool", MTIME
            tf.addfile(info)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    path = tmp_path / "layer.tar"
    path.write_bytes(make_tar())
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def convert(capsys: pytest.CaptureFixture[str], src: Path, dst: Path,
            *extra: str) -> dict[str, object]:
    code, out, err = run(capsys, "layer", "convert", "--json", *extra, str(src), str(dst))
    assert code == 0, err
    summary = json.loads(out)
    assert isinstance(summary, dict)
    return summary


def assert_one_line_error(err: str, text: str) -> None:
    """One clear line (see clikit.assert_clear_error) that says ``text``."""
    assert text in assert_clear_error(err), err


# --- convert ------------------------------------------------------------------------------


def test_convert_json(capsys: pytest.CaptureFixture[str], layer: Path, tmp_path: Path) -> None:
    out = tmp_path / "layer.esgz"
    summary = convert(capsys, layer, out)
    blob = out.read_bytes()
    raw = gzip.decompress(blob)
    assert summary["digest"] == sha256(blob)
    assert summary["size"] == len(blob)
    assert summary["diff_id"] == sha256(raw)
    assert summary["uncompressed_size"] == len(raw)
    assert summary["toc_digest"] == open_blob(blob).toc_digest
    assert summary["compression_level"] == 9
    assert summary["missed_prioritized"] == []
    assert isinstance(summary["engine"], str) and summary["engine"]
    assert sorted(os.listdir(tmp_path)) == ["layer.esgz", "layer.tar"]  # no temp file left


def test_convert_plain_output(capsys: pytest.CaptureFixture[str], layer: Path,
                              tmp_path: Path) -> None:
    out = tmp_path / "layer.esgz"
    code, stdout, err = run(capsys, "layer", "convert", "--compression-level", "1",
                            "--engine", "zlib", str(layer), str(out))
    assert code == 0 and stdout == ""
    blob = out.read_bytes()
    assert err.count("\n") == 1
    assert err.startswith(f"{out}: {len(blob)} bytes, {sha256(blob)}, TOC sha256:")
    assert "(zlib " in err and "level 1)" in err


def test_convert_options(capsys: pytest.CaptureFixture[str], layer: Path, tmp_path: Path) -> None:
    out = tmp_path / "layer.esgz"
    listing = tmp_path / "prio.txt"
    listing.write_text("usr/bin/tool\r\n\netc/hostname\n")
    summary = convert(capsys, layer, out, "--chunk-size", "10KiB", "--min-chunk-size", "1k",
                      "--prioritized-files", str(listing), "--workers", "2",
                      "--compression-level", "6")
    assert summary["compression_level"] == 6
    reader = open_blob(str(out)).verify_toc(str(summary["toc_digest"]))
    names = [e.name for e in reader.entries if e.type != "chunk"]
    assert names[:3] == ["usr/bin/tool", "etc/hostname", ".prefetch.landmark"]
    assert len(reader.chunks("usr/bin/tool")) == 10  # 96000 bytes in 10 KiB chunks
    assert reader.read("usr/bin/tool") == CONTENT["usr/bin/tool"]


def test_convert_missing_prioritized(capsys: pytest.CaptureFixture[str], layer: Path,
                                     tmp_path: Path) -> None:
    out = tmp_path / "layer.esgz"
    listing = tmp_path / "prio.txt"
    listing.write_text("etc/hostname\nnot/there\n")
    code, stdout, err = run(capsys, "layer", "convert", "--prioritized-files", str(listing),
                            str(layer), str(out))
    assert code == 1 and stdout == ""
    assert_one_line_error(err, "prioritized file 'not/there' is not in the input")
    assert not out.exists()
    summary = convert(capsys, layer, out, "--prioritized-files", str(listing),
                      "--allow-missing-prioritized")
    assert summary["missed_prioritized"] == ["not/there"]
    code, stdout, err = run(capsys, "layer", "convert", "--prioritized-files", str(listing),
                            "--allow-missing-prioritized", str(layer), str(out))
    assert code == 0
    assert "warning: prioritized file 'not/there' is not in the layer" in err


def test_external_toc(capsys: pytest.CaptureFixture[str], layer: Path, tmp_path: Path) -> None:
    out, toc = tmp_path / "layer.esgz", tmp_path / "layer.toc.tar.gz"
    summary = convert(capsys, layer, out, "--external-toc", str(toc))
    toc_json = parse_toc_blob(toc.read_bytes())
    assert sha256(toc_json) == summary["toc_digest"]
    with tarfile.open(toc, "r:gz") as tf:
        assert tf.getnames() == ["stargz.index.json"]
    code, stdout, err = run(capsys, "layer", "verify", str(out), "--external-toc", str(toc),
                            "--toc-digest", str(summary["toc_digest"]))
    assert code == 0, err
    assert err.startswith("OK: 4 files, ") and "matches the given digest" in err
    code, stdout, _ = run(capsys, "layer", "toc", str(out), "--external-toc", str(toc))
    assert code == 0 and stdout.encode() == toc_json + b"\n"
    code, _, err = run(capsys, "layer", "verify", str(out))
    assert code == 1
    assert_one_line_error(err, "this blob keeps its TOC outside")


def test_keep_diff_id(capsys: pytest.CaptureFixture[str], layer: Path, tmp_path: Path) -> None:
    out, toc = tmp_path / "layer.esgz", tmp_path / "toc.tgz"
    summary = convert(capsys, layer, out, "--keep-diff-id", "--external-toc", str(toc))
    assert gzip.decompress(out.read_bytes()) == layer.read_bytes()
    assert summary["diff_id"] == sha256(layer.read_bytes())


def test_keep_diff_id_without_external_toc(capsys: pytest.CaptureFixture[str], layer: Path,
                                           tmp_path: Path) -> None:
    out = tmp_path / "layer.esgz"
    code, stdout, err = run(capsys, "layer", "convert", "--keep-diff-id", str(layer), str(out))
    assert code == 1 and stdout == ""
    assert_one_line_error(err, "keep-diff-id needs an external TOC")
    assert sorted(os.listdir(tmp_path)) == ["layer.tar"]


@pytest.mark.parametrize(
    "bad_tar",
    [lambda t: t[: len(t) // 2], lambda t: b"not a tar" * 200, lambda t: gzip.compress(t)[:300]],
    ids=["truncated", "garbage", "truncated-gzip"],
)
def test_failed_convert_leaves_no_output(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         bad_tar: object) -> None:
    src = tmp_path / "bad.tar"
    src.write_bytes(bad_tar(make_tar()))  # type: ignore[operator]
    out = tmp_path / "out.esgz"
    code, stdout, err = run(capsys, "layer", "convert", str(src), str(out))
    assert code == 1 and stdout == ""
    assert_one_line_error(err, "bad.tar: ")
    assert sorted(os.listdir(tmp_path)) == ["bad.tar"]
    out.write_bytes(b"previous")  # an existing output survives a failed run untouched
    toc = tmp_path / "toc.tgz"
    code, _, err = run(capsys, "layer", "convert", "--external-toc", str(toc), str(src), str(out))
    assert code == 1
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["bad.tar", "out.esgz"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--chunk-size", "lots"], "not a size"),
        (["--chunk-size", "-1"], "sizes cannot be negative"),
        (["--compression-level", "0"], "invalid choice"),
        (["--engine", "gzip9000"], "invalid choice"),
    ],
)
def test_bad_arguments(capsys: pytest.CaptureFixture[str], layer: Path, tmp_path: Path,
                       argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["layer", "convert", *argv, str(layer), str(tmp_path / "o")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- verify, toc, extract -------------------------------------------------------------------


@pytest.fixture
def blob(capsys: pytest.CaptureFixture[str], layer: Path, tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "layer.esgz"
    summary = convert(capsys, layer, out, "--chunk-size", "40000")
    return out, str(summary["toc_digest"])


def test_verify_json(capsys: pytest.CaptureFixture[str], blob: tuple[Path, str]) -> None:
    path, digest = blob
    for extra in ([], ["--toc-digest", digest]):
        code, stdout, _ = run(capsys, "layer", "verify", "--json", str(path), *extra)
        assert code == 0
        report = json.loads(stdout)
        assert report["toc_digest"] == digest
        want = {name: sha256(data) for name, data in CONTENT.items()}
        want[".no.prefetch.landmark"] = sha256(b"\x0f")
        assert report["files"] == want


def test_verify_text(capsys: pytest.CaptureFixture[str], blob: tuple[Path, str]) -> None:
    path, digest = blob
    code, stdout, err = run(capsys, "layer", "verify", str(path))
    assert code == 0 and stdout == ""
    assert err == f"OK: 4 files, 5 chunks verified; TOC {digest} not checked (no --toc-digest)\n"


def test_verify_wrong_digest(capsys: pytest.CaptureFixture[str], blob: tuple[Path, str]) -> None:
    path, digest = blob
    wrong = "sha256:" + "0" * 64
    code, stdout, err = run(capsys, "layer", "verify", str(path), "--toc-digest", wrong)
    assert code == 1 and stdout == ""
    assert_one_line_error(err, f"TOC digest is {digest}, expected {wrong}")


def test_toc_prints_json(capsys: pytest.CaptureFixture[str], blob: tuple[Path, str]) -> None:
    path, digest = blob
    code, stdout, _ = run(capsys, "layer", "toc", str(path))
    assert code == 0
    assert sha256(stdout.encode().removesuffix(b"\n")) == digest
    doc = json.loads(stdout)
    assert doc["version"] == 1
    names = [e["name"] for e in doc["entries"] if e["type"] != "chunk"]
    assert names == [".no.prefetch.landmark", "etc/hostname", "usr/bin/tool", "empty",
                     "usr/bin/alias"]


def test_extract(capsys: pytest.CaptureFixture[str], blob: tuple[Path, str],
                 tmp_path: Path) -> None:
    path, digest = blob
    dest = tmp_path / "rootfs"
    code, stdout, err = run(capsys, "layer", "extract", str(path), str(dest),
                            "--toc-digest", digest)
    assert code == 0 and stdout == ""
    assert err == f"extracted 8 entries ({sum(map(len, CONTENT.values())) + 1} bytes) to {dest}\n"
    for name, data in CONTENT.items():
        assert (dest / name).read_bytes() == data
    assert os.readlink(dest / "usr/bin/alias") == "tool"


def test_extract_absolute_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src, out = tmp_path / "abs.tar", tmp_path / "abs.esgz"
    src.write_bytes(make_tar({"/abs/file": b"a"}, link=False))
    convert(capsys, src, out)
    code, _, err = run(capsys, "layer", "extract", str(out), str(tmp_path / "d1"))
    assert code == 1
    assert_one_line_error(err, "entry '/abs/file' is absolute")
    assert not (tmp_path / "d1").exists()
    code, _, err = run(capsys, "layer", "extract", "--strip-leading-slash", str(out),
                       str(tmp_path / "d2"))
    assert code == 0, err
    assert (tmp_path / "d2/abs/file").read_bytes() == b"a"


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["layer", "verify", "{tmp}/missing.esgz"], "missing.esgz: no such file or directory"),
        (["layer", "toc", "{tmp}/garbage"], "garbage: not an eStargz layer: no eStargz footer"),
        (["layer", "extract", "{tmp}/garbage", "{tmp}/out"], "layer convert` makes one"),
        (["layer", "convert", "{tmp}/missing.tar", "{tmp}/out.esgz"],
         "missing.tar: no such file or directory"),
        (["layer", "verify", "{tmp}/garbage", "--external-toc", "{tmp}/missing"],
         "missing: no such file or directory"),
    ],
    ids=["verify-missing", "toc-garbage", "extract-garbage", "convert-missing", "toc-missing"],
)
def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             argv: list[str], prefix: str) -> None:
    (tmp_path / "garbage").write_bytes(b"\x00" * 4096)
    code, stdout, err = run(capsys, *(a.format(tmp=tmp_path) for a in argv))
    assert code == 1 and stdout == ""
    assert_one_line_error(err, prefix)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.esgz").exists()


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "garbage").write_bytes(b"\x00" * 100)
    code, _, err = run(capsys, "--debug", "layer", "verify", str(tmp_path / "garbage"))
    assert code == 1
    assert "Traceback" in err
    assert err.endswith("\n") and err.splitlines()[-1].startswith("estargz: error: ")


def test_demo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, stdout, _ = run(capsys, "demo", "--dir", str(tmp_path))
    assert code == 0
    assert 'os-release: NAME="estargz demo"' in stdout
    assert stdout.count("files verified") == 3
    assert (tmp_path / "rootfs-default/etc/os-release").exists()


# --- the installed script, as a user runs it ----------------------------------------------


def script() -> str:
    found = shutil.which("estargz", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert found is not None, "the estargz console script is not installed"
    return found


def test_script_stdin_to_stdout(tmp_path: Path) -> None:
    tar = make_tar()
    for src in (tar, gzip.compress(tar)):
        proc = subprocess.run([script(), "layer", "convert", "--json", "-", "-"], input=src,
                              capture_output=True, check=False, timeout=60)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stderr)  # stdout carries the blob, so the JSON goes to stderr
        assert summary["digest"] == sha256(proc.stdout)
        assert summary["size"] == len(proc.stdout)
        reader = open_blob(proc.stdout).verify_toc(summary["toc_digest"])
        assert reader.read("usr/bin/tool") == CONTENT["usr/bin/tool"]
    path = tmp_path / "layer.esgz"
    path.write_bytes(proc.stdout)
    proc = subprocess.run([script(), "layer", "verify", "--json", str(path)],
                          capture_output=True, check=False, timeout=60)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["files"]["etc/hostname"] == sha256(b"box\n")


def test_script_file_to_file_and_stdout_silence(tmp_path: Path) -> None:
    (tmp_path / "layer.tar").write_bytes(make_tar())
    proc = subprocess.run([script(), "layer", "convert", "layer.tar", "-"], cwd=tmp_path,
                          capture_output=True, check=False, timeout=60)
    assert proc.returncode == 0
    assert proc.stderr == b""  # nothing but the blob when it goes to stdout
    assert open_blob(proc.stdout).skip_verify().read("etc/hostname") == b"box\n"


def test_script_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(make_tar()[:3000])
    out = tmp_path / "out.esgz"
    proc = subprocess.run([script(), "layer", "convert", str(bad), str(out)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr, f"{bad}: ")
    assert sorted(os.listdir(tmp_path)) == ["bad.tar"]
    piped = subprocess.run([script(), "layer", "convert", "-", "-"], input=b"junk" * 1000,
                           capture_output=True, check=False, timeout=60)
    assert piped.returncode == 1 and piped.stdout == b""
    assert_one_line_error(piped.stderr.decode(), "standard input: ")


def test_script_version() -> None:
    proc = subprocess.run([script(), "--version"], capture_output=True, text=True, check=True,
                          timeout=60)
    assert proc.stdout.startswith("estargz ")


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["i", "pull", "BAD::REF"], "invalid image reference"),
        (["i", "push", "Upper/case:tag"], "invalid image reference"),
        (["i", "rpull", "127.0.0.1:1/a:b", "--platform", "linux"],
         "is not os/arch[/variant]"),
        (["i", "pull", "--platform", "nope", "127.0.0.1:1/a:b"],
         "is not os/arch[/variant]"),
    ],
)
def test_bad_image_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             argv: list[str], prefix: str) -> None:
    """Malformed references and platforms are one line, before any network or store work."""
    code, out, err = run(capsys, "--root", str(tmp_path / "store"), *argv)
    assert code == 1 and out == ""
    assert_one_line_error(err, prefix)
    assert not (tmp_path / "store" / "state").exists()


def test_the_parser_imports_no_command_code() -> None:
    """Building the parser (``--help``, ``--version``, every command's start) loads none of the
    heavy libraries: each command imports what it needs when it runs. The store and mount
    commands (``i ls``, ``i mounts``, ...) load no HTTP stack, FUSE binding or format reader."""
    heavy = ("httpx", "mfusepy", "msgspec", "rich", "estargz.image.model",
             "estargz.format.reader", "estargz.registry.client")
    code = ("import sys; from estargz.cli.main import build_parser; build_parser(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules)); "
            "import estargz.cli.image, estargz.cli.lazy; "
            f"print(sorted(m for m in {heavy[:2] + heavy[5:]!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.split("\n")[:2] == ["[]", "[]"], proc.stdout
