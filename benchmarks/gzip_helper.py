"""Decompressing a gzip layer: the built-in inflate against the helpers of
``i convert --estargz-gzip-helper`` (pigz, igzip, gzip), measured in the same run.

    python3 benchmarks/gzip_helper.py [--runs 5] [--input TAR] [--cache benchmarks/.cache]

The input is the debootstrap root filesystem of ``convert.py`` (or ``--input TAR``), compressed
once with ``gzip -6`` (the level of ``docker push`` and most registries' layers). Each run
decompresses it into a temporary file the way ``i convert`` does before converting: ours with
``format.source.spool_tar`` (zlib-ng, in this process), each helper through the same function
with ``gunzip=(helper, "-d", "-c")``. Then each converts the same gzip layer end to end
(``format.build`` at level 9 with all CPUs, as ``i convert`` does), where decompression
competes with compression for the CPUs. Runs are interleaved, the order rotating; the page
cache holds the input for every contender alike (one untimed read first). Medians of wall time
and of CPU time (this process and its children), and the ratio of each to ours, are printed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from convert import ensure_rootfs_tar  # noqa: E402
from estargz.format import BuildOptions, build  # noqa: E402
from estargz.format.source import spool_tar  # noqa: E402

HELPERS = ("pigz", "igzip", "gzip")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _decompress(path: pathlib.Path, gunzip: tuple[str, ...] | None, tmpdir: str
                ) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and bytes written, for one decompression to a temp file."""
    cpu, start = _cpu(), time.perf_counter()
    with open(path, "rb") as f:
        source = spool_tar(f, f.read(3), tmpdir, gunzip)
    wall = time.perf_counter() - start
    size = source.size
    source.close()
    return wall, _cpu() - cpu, size


class _Sink:
    """Counts what the builder writes."""

    size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def _convert(path: pathlib.Path, gunzip: tuple[str, ...] | None, tmpdir: str
             ) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and blob size of one conversion of the gzip layer."""
    cpu, start = _cpu(), time.perf_counter()
    sink = _Sink()
    build(path, sink, BuildOptions(gunzip=gunzip, tmpdir=tmpdir))  # type: ignore[arg-type]
    return time.perf_counter() - start, _cpu() - cpu, sink.size


def _table(title: str, mb: float, names: list[str], walls: dict[str, list[float]],
           cpus: dict[str, list[float]]) -> None:
    ours_wall, ours_cpu = statistics.median(walls[names[0]]), statistics.median(cpus[names[0]])
    print(title)
    print(f"{'':20} {'wall s':>7} {'MB/s':>7} {'CPU s':>7} {'wall vs ours':>13} "
          f"{'CPU vs ours':>12}")
    for name in names:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name[:20]:20} {wall:>7.2f} {mb / wall:>7.0f} {cpu:>7.2f} "
              f"{wall / ours_wall:>13.2f} {cpu / ours_cpu:>12.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--input", type=pathlib.Path, help="a tar (default: debootstrap rootfs)")
    parser.add_argument("--cache", type=pathlib.Path, default=HERE / ".cache")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    tar = args.input or ensure_rootfs_tar(args.cache)
    gz = args.cache / (tar.name + ".6.gz")
    if not gz.exists() or gz.stat().st_mtime < tar.stat().st_mtime:
        with open(gz.with_suffix(".tmp"), "wb") as out:
            subprocess.run(["gzip", "-6", "-n", "-c", str(tar)], stdout=out, check=True)
        gz.with_suffix(".tmp").rename(gz)
    gz.read_bytes()  # into the page cache, for everyone

    contenders: list[tuple[str, tuple[str, ...] | None]] = [("zlib-ng (ours)", None)]
    for name in HELPERS:
        path = shutil.which(name)
        if path is None:
            print(f"{name}: not installed, skipped")
            continue
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 check=False)
        words = (version.stdout or version.stderr).split()
        numbers = [w for w in words if w[:1].isdigit() or w[:2] in ("v2", "v1")]
        contenders.append((f"{name} {numbers[0] if numbers else ''}".strip(),
                           (path, "-d", "-c")))

    names = [name for name, _ in contenders]
    expected = tar.stat().st_size
    results: dict[str, tuple[dict[str, list[float]], dict[str, list[float]]]] = {}
    sizes: set[int] = set()
    for step, measure in (("inflate", _decompress), ("convert", _convert)):
        walls: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        for run in range(args.runs):
            shift = run % len(contenders)
            for name, command in contenders[shift:] + contenders[:shift]:
                wall, cpu, size = measure(gz, command, str(args.cache))
                if step == "inflate" and size != expected:
                    raise SystemExit(f"{name} wrote {size} bytes, the tar has {expected}")
                if step == "convert":
                    sizes.add(size)
                walls[name].append(wall)
                cpus[name].append(cpu)
        results[step] = (walls, cpus)
    if len(sizes) != 1:
        raise SystemExit(f"the blobs differ in size with the decompressor: {sizes}")

    mb = expected / 1e6
    print(f"input: {tar.name}, {mb:.1f} MB tar, gzip -6 {gz.stat().st_size / 1e6:.1f} MB; "
          f"{os.cpu_count()} CPUs; median of {args.runs} interleaved runs")
    _table("inflate into a temporary file:", mb, names, *results["inflate"])
    _table("convert to eStargz (level 9, all CPUs), end to end:", mb, names,
           *results["convert"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
