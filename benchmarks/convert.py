"""Conversion throughput and size, ours against the Go builder, measured in the same run.

    python3 benchmarks/convert.py [--runs 3] [--level 9] [--cache benchmarks/.cache]

The input is a real root filesystem: ``debootstrap --variant=minbase bookworm`` from the Debian
mirror apt is configured with, built once and cached as a tar. Each run converts it with
``estargz layer convert`` and with the Go harness's ``estargz.Build`` (stargz-snapshotter v0.12,
compiled from Debian's packaged sources), alternating the order; the medians are compared. A
second race does the same for zstd:chunked (``--zstdchunked`` against the Go ``zstdchunked``
compressor, at the same zstd level). Sizes are given relative to ``gzip -9``, ``zstd -3`` and
``zstd -19`` of the same tar (one thread each).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the Go harness builder lives with the tests

from gotool import build_go_harness  # noqa: E402


def _mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources)."""
    for path in sorted(pathlib.Path("/etc/apt").rglob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    sources = pathlib.Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return parts[1]
    return "http://deb.debian.org/debian"


def ensure_rootfs_tar(cache: pathlib.Path) -> pathlib.Path:
    tar = cache / "rootfs.tar"
    if tar.exists():
        return tar
    rootfs = cache / "rootfs"
    if not (rootfs / "bin").exists():
        if shutil.which("debootstrap") is None:
            subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        print(f"debootstrap --variant=minbase bookworm from {_mirror()} (once)...", flush=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), _mirror()],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    tmp = tar.with_suffix(".tmp")
    subprocess.run(
        ["tar", "--numeric-owner", "--sort=name", "-cf", str(tmp), "-C", str(rootfs), "."],
        check=True,
    )
    tmp.rename(tar)
    return tar


def _timed(cmd: list[str]) -> tuple[float, str, float]:
    """Wall seconds, standard output and CPU seconds (user + system, all threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, proc.stdout, cpu


def _race(runs: int, ours: list[str], go: list[str]) -> tuple[float, float, str, float, float]:
    """Median wall seconds of ours and of Go's, alternating which runs first; ours' engine;
    median CPU seconds of ours and of Go's (what a busy machine does not change)."""
    times: dict[str, list[float]] = {"ours": [], "go": []}
    cpus: dict[str, list[float]] = {"ours": [], "go": []}
    engine = ""
    for run in range(runs):
        jobs = [("ours", ours), ("go", go)]
        if run % 2:
            jobs.reverse()
        for name, cmd in jobs:
            elapsed, stdout, cpu = _timed(cmd)
            times[name].append(elapsed)
            cpus[name].append(cpu)
            if name == "ours":
                engine = json.loads(stdout)["engine"]
    med = statistics.median
    return (med(times["ours"]), med(times["go"]), engine, med(cpus["ours"]), med(cpus["go"]))


def _compressed_size(cmd: list[str], tar: pathlib.Path) -> int:
    return len(subprocess.run([*cmd, str(tar)], capture_output=True, check=True).stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--level", type=int, default=9)
    parser.add_argument("--zstd-level", type=int, default=3,
                        help="level of the zstd:chunked row (ctr-remote's default: 3)")
    parser.add_argument("--cache", type=pathlib.Path, default=HERE / ".cache")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    tar = ensure_rootfs_tar(args.cache)
    harness = build_go_harness(args.cache / "go")
    tar_size = tar.stat().st_size
    ours_out, go_out = args.cache / "ours.esgz", args.cache / "go.esgz"
    ours_zst, go_zst = args.cache / "ours.zst", args.cache / "go.zst"
    estargz_cmd = [sys.executable, "-m", "estargz.cli.main"]
    level, zlevel = str(args.level), str(args.zstd_level)

    gzip_size = _compressed_size(["gzip", "-9", "-c"], tar)
    zstd_sizes = {n: _compressed_size(["zstd", f"-{n}", "-c", "-q", "-T1"], tar) for n in (3, 19)}
    ours_s, go_s, engine, ours_cpu, go_cpu = _race(
        args.runs,
        [*estargz_cmd, "layer", "convert", "--json", "--compression-level", level, str(tar),
         str(ours_out)],
        [str(harness), "build", str(tar), str(go_out), "-level", level])
    ours_zs, go_zs, zengine, ours_zcpu, go_zcpu = _race(
        args.runs,
        [*estargz_cmd, "layer", "convert", "--zstdchunked", "--json", "--compression-level",
         zlevel, str(tar), str(ours_zst)],
        [str(harness), "build", str(tar), str(go_zst), "-zstdchunked", "-level", zlevel])

    # the output must be a valid blob, or the speed means nothing
    _timed([*estargz_cmd, "layer", "verify", str(ours_out)])
    _timed([*estargz_cmd, "layer", "verify", str(ours_zst)])

    mb = tar_size / 1e6
    print(f"input: debootstrap minbase bookworm, {mb:.1f} MB tar, {os.cpu_count()} CPUs, "
          f"gzip level {args.level}, zstd level {args.zstd_level}, median of {args.runs} runs")
    print(f"{'':16} {'seconds':>8} {'MB/s':>8} {'size':>12} {'vs gzip -9':>11} "
          f"{'vs zstd -3':>11} {'vs zstd -19':>12}")

    def row(name: str, secs: float | None, size: int) -> None:
        timing = f"{secs:>8.2f} {mb / secs:>8.1f}" if secs else f"{'':>8} {'':>8}"
        print(f"{name:16} {timing} {size:>12} {size / gzip_size:>11.3f} "
              f"{size / zstd_sizes[3]:>11.3f} {size / zstd_sizes[19]:>12.3f}")

    row("gzip -9", None, gzip_size)
    row("zstd -3", None, zstd_sizes[3])
    row("zstd -19", None, zstd_sizes[19])
    sizes = {p: p.stat().st_size for p in (ours_out, go_out, ours_zst, go_zst)}
    row("estargz", ours_s, sizes[ours_out])
    row("go 0.12", go_s, sizes[go_out])
    row("estargz zstd:ch", ours_zs, sizes[ours_zst])
    row("go zstd:chunked", go_zs, sizes[go_zst])
    print(f"eStargz: throughput ratio (estargz / go): {go_s / ours_s:.2f}x   "
          f"size ratio (estargz / go): {sizes[ours_out] / sizes[go_out]:.4f}   engine: {engine}")
    print(f"zstd:chunked: throughput ratio (estargz / go): {go_zs / ours_zs:.2f}x   "
          f"size ratio (estargz / go): {sizes[ours_zst] / sizes[go_zst]:.4f}   engine: {zengine}")
    print(f"CPU seconds (user + system, median): eStargz {ours_cpu:.2f} vs go {go_cpu:.2f} "
          f"({go_cpu / ours_cpu:.2f}x); zstd:chunked {ours_zcpu:.2f} vs go {go_zcpu:.2f} "
          f"({go_zcpu / ours_zcpu:.2f}x)")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
