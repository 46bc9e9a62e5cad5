"""Conversion throughput and size, ours against the Go builder, measured in the same run.

    python3 benchmarks/convert.py [--runs 3] [--level 9] [--cache benchmarks/.cache]

The input is a real root filesystem: ``debootstrap --variant=minbase bookworm`` from the Debian
mirror apt is configured with, built once and cached as a tar. Each run converts it with
``estargz layer convert`` and with the Go harness's ``estargz.Build`` (stargz-snapshotter v0.12,
compiled from Debian's packaged sources), alternating the order; the medians are compared.
Sizes are given relative to ``gzip -9`` of the same tar.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
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


def _timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--level", type=int, default=9)
    parser.add_argument("--cache", type=pathlib.Path, default=HERE / ".cache")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    tar = ensure_rootfs_tar(args.cache)
    harness = build_go_harness(args.cache / "go")
    tar_size = tar.stat().st_size
    ours_out, go_out = args.cache / "ours.esgz", args.cache / "go.esgz"
    estargz_cmd = [sys.executable, "-m", "estargz.cli.main"]

    gzip_size = len(subprocess.run(["gzip", "-9", "-c", str(tar)], capture_output=True,
                                   check=True).stdout)
    ours_times: list[float] = []
    go_times: list[float] = []
    engine = ""
    for run in range(args.runs):
        jobs = [
            ("ours", [*estargz_cmd, "layer", "convert", "--json",
                      "--compression-level", str(args.level), str(tar), str(ours_out)]),
            ("go", [str(harness), "build", str(tar), str(go_out), "-level", str(args.level)]),
        ]
        if run % 2:
            jobs.reverse()
        for name, cmd in jobs:
            elapsed, stdout = _timed(cmd)
            if name == "ours":
                ours_times.append(elapsed)
                engine = json.loads(stdout)["engine"]
            else:
                go_times.append(elapsed)

    # the output must be a valid blob, or the speed means nothing
    _timed([*estargz_cmd, "layer", "verify", str(ours_out)])

    ours_s, go_s = statistics.median(ours_times), statistics.median(go_times)
    mb = tar_size / 1e6
    ours_size, go_size = ours_out.stat().st_size, go_out.stat().st_size
    print(f"input: debootstrap minbase bookworm, {mb:.1f} MB tar, {os.cpu_count()} CPUs, "
          f"level {args.level}, median of {args.runs} runs")
    print(f"{'':10} {'seconds':>8} {'MB/s':>8} {'size':>12} {'vs gzip -9':>11}")
    print(f"{'gzip -9':10} {'':>8} {'':>8} {gzip_size:>12} {1:>11.3f}")
    for name, secs, size in (("estargz", ours_s, ours_size), ("go 0.12", go_s, go_size)):
        print(f"{name:10} {secs:>8.2f} {mb / secs:>8.1f} {size:>12} {size / gzip_size:>11.3f}")
    print(f"throughput ratio (estargz / go): {go_s / ours_s:.2f}x   "
          f"size ratio (estargz / go): {ours_size / go_size:.4f}   engine: {engine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
