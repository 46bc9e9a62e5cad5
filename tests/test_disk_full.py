"""A full disk: pull and convert fail with one clear line and leave the store as it was; a lazy
mount whose chunk cache cannot be written keeps serving verified bytes from the registry."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clikit import Cli
from imagekit import busybox_layers, files_layer, push_layers, random_file_layer
from lazykit import lazy_mounts
from registry_fixture import RegistryServer

FILES = {f"f{i}": os.urandom(20_000 + i) for i in range(60)}


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def big(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    return push_layers(registry.host, "disk-full",
                       [*busybox_layers(), random_file_layer("data/random.bin", 30 << 20),
                        files_layer(FILES)], tmp_path_factory.mktemp("full-big"))


def _one_line_about_space(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("estargz: error")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no space left on device" in lines[0].lower(), lines[0]


def _files(cli: Cli) -> list[tuple[str, int, int]]:
    """The store's files (not its locks; directories' times change as temporaries come and
    go)."""
    return [row for row in cli.snapshot() if (cli.root / row[0]).is_file()
            and row[0] not in ("lock", "gc.lock")]


def _store_check(cli: Cli) -> None:
    proc = cli.store("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pull_onto_a_full_disk(tmp_path: Path, big: str) -> None:
    with small_disk(tmp_path / "disk", 20) as disk:
        cli = Cli(disk / "store", Cli.at(tmp_path).env)
        cli("ls")  # an empty store
        before = _files(cli)
        _one_line_about_space(cli.run("pull", big))
        assert _files(cli) == before
        _store_check(cli)


def test_convert_onto_a_full_disk(tmp_path: Path, big: str) -> None:
    with small_disk(tmp_path / "disk", 45) as disk:
        cli = Cli(disk / "store", Cli.at(tmp_path).env)
        cli("pull", big)
        before = _files(cli)
        proc = cli.run("convert", "--oci", "--estargz", big, big.replace(":v1", ":esgz"))
        _one_line_about_space(proc)
        assert _files(cli) == before
        assert cli.names() == [big]
        _store_check(cli)


def test_a_lazy_mount_serves_when_its_cache_cannot_be_written(tmp_path: Path,
                                                             big: str) -> None:
    seed = Cli.at(tmp_path, "seed")
    esgz = big.replace(":v1", ":full-esgz")
    seed("convert", "--oci", "--estargz", big, esgz)
    seed("push", esgz)
    with small_disk(tmp_path / "disk", 8) as disk, lazy_mounts(tmp_path) as mounts:
        cli = Cli(disk / "store", seed.env)
        mounts.cli = cli
        mount = mounts.mount("--no-background-fetch", esgz)
        with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
            while True:  # the rest of the disk
                f.write(b"\0" * (1 << 20))
        for name, data in FILES.items():
            got = (mount / name).read_bytes()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name
        big_file = mount / "data" / "random.bin"
        assert big_file.stat().st_size == 30 << 20
        assert len(big_file.read_bytes()) == 30 << 20
