"""``i convert``'s ``--estargz-parallelism`` and ``--estargz-gzip-helper``: the worker count
never changes a byte of the output, and an external gzip decompressor is used only when it is
installed and measured faster than the built-in inflate (else the command says so, once)."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
from pathlib import Path

import pytest

from clikit import Cli
from estargz.errors import InvalidTar
from estargz.format import BuildOptions, build
from estargz.image.gziphelper import choose_gzip_helper
from imagekit import busybox_layers, files_layer, write_oci_layout


def _mixed_layer() -> bytes:
    """Text that compresses, bytes that do not, and many small files: members of every kind."""
    text = b"".join(b"line %d of a config file\n" % i for i in range(120_000))  # ~3 MB
    noise = hashlib.shake_256(b"seed").digest(1 << 20)
    small = {f"etc/conf.d/{i:03d}": b"x=%d\n" % i for i in range(300)}
    return files_layer({"usr/share/doc/big.txt": text, "usr/lib/blob.bin": noise, **small})


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("convert-options")
    write_oci_layout(path, "v1", [*busybox_layers(), _mixed_layer()])
    return path


def _store(tmp_path: Path, layout: Path) -> Cli:
    cli = Cli.at(tmp_path)
    cli("import", str(layout), "--name", "local/src:v1")
    return cli


def _convert(cli: Cli, dst: str, *flags: str) -> tuple[str, str]:
    """``(image digest, stderr)`` of a conversion to eStargz."""
    proc = cli.run("convert", "--oci", "--estargz", "--estargz-chunk-size", "256K", *flags,
                   "local/src:v1", dst)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[1], proc.stderr


def test_parallelism_never_changes_the_output(tmp_path: Path, layout: Path) -> None:
    cli = _store(tmp_path, layout)
    digests = {n: _convert(cli, f"local/p{n}:v1", "--estargz-parallelism", n)[0]
               for n in ("1", "3", "0", "8")}
    assert len(set(digests.values())) == 1, digests
    assert _convert(cli, "local/default:v1")[0] == digests["1"]
    packed = {n: _convert(cli, f"local/m{n}:v1", "--estargz-min-chunk-size", "16K",
                          "--estargz-parallelism", n)[0] for n in ("1", "4")}
    assert len(set(packed.values())) == 1 and packed["1"] != digests["1"], packed


@pytest.mark.parametrize("min_chunk", [0, 16 << 10])
def test_build_bytes_do_not_depend_on_workers(min_chunk: int) -> None:
    layer = _mixed_layer()
    blobs = set()
    for workers in (1, 2, 5, 16):
        out = io.BytesIO()
        build(io.BytesIO(layer), out, BuildOptions(chunk_size=64 << 10, workers=workers,
                                                   min_chunk_size=min_chunk))
        blobs.add(hashlib.sha256(out.getvalue()).hexdigest())
    assert len(blobs) == 1


# -- the gzip helper -------------------------------------------------------------------------


def test_igzip_is_used_and_changes_nothing(tmp_path: Path, layout: Path) -> None:
    real = shutil.which("igzip")
    assert real, ".ci/run installs isal (igzip)"
    cli = _store(tmp_path, layout)
    plain, _ = _convert(cli, "local/plain:v1")
    wrappers, calls = tmp_path / "bin", tmp_path / "calls"
    wrappers.mkdir()
    (wrappers / "igzip").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    (wrappers / "igzip").chmod(0o755)
    cli.env["PATH"] = f"{wrappers}:{cli.env.get('PATH', '')}"
    helped, err = _convert(cli, "local/helped:v1", "--estargz-gzip-helper", "igzip")
    assert helped == plain
    assert "note:" not in err
    assert calls.read_text().splitlines() == ["-d -c"] * 3  # one run per gzip layer


@pytest.mark.parametrize("helper", ["pigz", "gzip"])
def test_a_slower_helper_is_not_used_and_that_is_said_once(tmp_path: Path, layout: Path,
                                                           helper: str) -> None:
    assert shutil.which(helper), f".ci/run installs {helper}"
    cli = _store(tmp_path, layout)
    plain, _ = _convert(cli, "local/plain:v1")
    digest, err = _convert(cli, "local/h:v1", "--GH", helper)
    assert digest == plain
    notes = [line for line in err.splitlines() if helper in line]
    assert notes == [f"note: {helper} decompresses slower than the built-in inflate (zlib-ng), "
                     "which is used instead (measurements: docs/benchmarks.md)"]
    assert choose_gzip_helper(helper).command is None


def test_a_missing_helper_is_said_once(tmp_path: Path, layout: Path) -> None:
    cli = _store(tmp_path, layout)
    (tmp_path / "empty").mkdir()
    cli.env["PATH"] = str(tmp_path / "empty")  # no igzip on this PATH
    _, err = _convert(cli, "local/h:v1", "--estargz-gzip-helper", "igzip")
    notes = [line for line in err.splitlines() if "igzip" in line]
    assert notes == ["note: igzip is not installed: gzip layers are decompressed by the "
                     "built-in inflate (zlib-ng)"]


def test_an_unknown_helper_is_refused_by_the_parser(tmp_path: Path) -> None:
    proc = Cli.at(tmp_path).run("convert", "--estargz", "--GH", "zcat", "a", "b")
    assert proc.returncode == 2 and "invalid choice: 'zcat'" in proc.stderr


def test_the_helper_decompresses_files_and_streams_alike(tmp_path: Path) -> None:
    layer = _mixed_layer()
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(gzip.compress(layer, 6))
    command = choose_gzip_helper("igzip").command
    assert command is not None
    blobs = set()
    for src, gunzip in ((path, None), (path, command), (io.BytesIO(path.read_bytes()), command)):
        out = io.BytesIO()
        build(src, out, BuildOptions(gunzip=gunzip))  # type: ignore[arg-type]
        blobs.add(out.getvalue())
    assert len(blobs) == 1


def test_a_failing_helper_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "layer.tar.gz"
    noise = hashlib.shake_256(b"x").digest(100_000)
    path.write_bytes(gzip.compress(files_layer({"a": noise}))[:20_000])  # truncated
    command = choose_gzip_helper("igzip").command
    assert command is not None
    with pytest.raises(InvalidTar, match=r"corrupt or truncated: igzip exited with status \d+"):
        build(path, io.BytesIO(), BuildOptions(gunzip=command))
    false = shutil.which("false")
    assert false is not None
    with pytest.raises(InvalidTar, match="false exited with status 1"):
        build(io.BytesIO(path.read_bytes()), io.BytesIO(), BuildOptions(gunzip=(false,)))
