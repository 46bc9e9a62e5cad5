"""Lazy pulling, ours against the Go stargz snapshotter 0.12, on the same image in one run.

    python3 benchmarks/lazy.py [--cache benchmarks/.cache]

The image is the debootstrap root filesystem of ``convert.py`` as one layer, converted to
eStargz by us and pushed to a local docker-registry (access log on, to count bytes). Both
sides mount that same image: ``estargz i rpull`` and ``ctr-remote i rpull`` (through
``../shared/peers/go-stargz.sh``). Measured per side: time from rpull to a mounted root (the
median of ``--repeat`` runs, each Go run on a fresh containerd), time to read one small file,
time to read every file, and bytes fetched from the registry.

The same image converted to zstd:chunked (``--zstdchunked``) is mounted too, by both sides,
for the read-every-file row: ours against our eStargz mount (``--read-repeat`` runs each,
interleaved, each in a fresh store so that no chunk is cached, medians; background fetch on,
as in the rows above) and against Go's mount of the same zstd:chunked image (one run).

The Go client talks to a containerd and a snapshotter that are already running; ours talks to
the store's service (``estargz service start``), started before the clock runs. The row
"without our service" is one rpull that starts the whole CLI cold, for comparison.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from convert import ensure_rootfs_tar  # noqa: E402
from imagekit import _sha  # noqa: E402
from peer import go_peer  # noqa: E402
from registry_fixture import free_port  # noqa: E402

SMALL_FILE = "etc/debian_version"
_SETTLE = 1.0
"""Seconds of quiet before each timed rpull: the previous side's teardown is over."""
_ACCESS = re.compile(r'"GET /v2/[^ ]+/blobs/[^ ]+ HTTP/[0-9.]+" (\d{3}) (\d+)')


class Registry:
    """docker-registry with its access log on, so fetched bytes can be counted."""

    def __init__(self, root: pathlib.Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = root / "registry.log"
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
            "http": {"addr": self.host},
        }
        (root / "config.yml").write_text(json.dumps(config))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                                         stdout=log, stderr=subprocess.STDOUT)
        for _ in range(100):
            if subprocess.run(["curl", "-sf", f"http://{self.host}/v2/"],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit("registry did not start")

    def blob_bytes(self) -> int:
        text = self.log.read_text(errors="replace")
        return sum(int(m.group(2)) for m in _ACCESS.finditer(text))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def _oci_layout(tar: pathlib.Path, layout: pathlib.Path) -> None:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    raw = tar.read_bytes()
    layer = gzip.compress(raw, 6, mtime=0)

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest[7:]).write_bytes(data)
        return digest

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [_sha(raw)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(layer), "size": len(layer)}],
    }).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "plain"}}]}))


def _read_all(root: pathlib.Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
            files += 1
    return files, total


def _measure(mount: pathlib.Path, registry: Registry, start_bytes: int) -> dict[str, float]:
    t = time.perf_counter()
    (mount / SMALL_FILE).read_bytes()
    small = time.perf_counter() - t
    after_small = registry.blob_bytes() - start_bytes
    t = time.perf_counter()
    files, size = _read_all(mount)
    every = time.perf_counter() - t
    return {"small_file_s": small, "every_file_s": every,
            "files": files, "bytes_read": size, "fetched_after_small": after_small,
            "fetched_total": registry.blob_bytes() - start_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=pathlib.Path, default=HERE / ".cache")
    parser.add_argument("--repeat", type=int, default=7, help="rpull runs per side (median)")
    parser.add_argument("--read-repeat", type=int, default=3,
                        help="read-every-file runs of our eStargz and zstd:chunked mounts")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    tar = ensure_rootfs_tar(args.cache)
    work = pathlib.Path(tempfile.mkdtemp(prefix="estargz-lazy-bench-"))
    registry = Registry(work)
    estargz = [sys.executable, "-m", "estargz.cli.main", "--root", str(work / "store"), "i"]
    try:
        _oci_layout(tar, work / "layout")
        plain, esgz = f"{registry.host}/deb:plain", f"{registry.host}/deb:esgz"
        zstd = f"{registry.host}/deb:zstd"
        subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                        f"oci:{work / 'layout'}:plain", f"docker://{plain}"], check=True)
        subprocess.run([*estargz, "convert", "-q", "--oci", "--estargz", plain, esgz],
                       check=True, capture_output=True)
        subprocess.run([*estargz, "push", "-q", esgz], check=True, capture_output=True)
        subprocess.run([*estargz, "convert", "-q", "--oci", "--zstdchunked", plain, zstd],
                       check=True, capture_output=True)
        subprocess.run([*estargz, "push", "-q", zstd], check=True, capture_output=True)

        # cold: no service, the whole CLI starts for the one command
        cold_cli = [sys.executable, "-m", "estargz.cli.main", "--root", str(work / "cold"), "i"]
        t = time.perf_counter()
        proc = subprocess.run([*cold_cli, "rpull", "-q", esgz], check=True, capture_output=True,
                              text=True)
        cold = time.perf_counter() - t
        subprocess.run([*cold_cli, "umount", proc.stdout.strip()], check=True,
                       capture_output=True)

        # as the Go side runs against a snapshotter that is already up, ours gets its service
        subprocess.run([sys.executable, "-m", "estargz.cli.main", "--root", str(work / "store"),
                        "service", "start"], check=True, capture_output=True)
        ours: dict[str, float] = {}
        go: dict[str, float] = {}
        rpulls: list[float] = []
        go_rpulls: list[float] = []
        for rep in range(args.repeat):  # interleaved, so both sides see the same machine
            time.sleep(_SETTLE)
            start = registry.blob_bytes()
            t = time.perf_counter()
            proc = subprocess.run([*estargz, "rpull", "-q", esgz], check=True,
                                  capture_output=True, text=True)
            rpulls.append(time.perf_counter() - t)
            if rep == 0:
                ours = _measure(pathlib.Path(proc.stdout.strip()), registry, start)
            subprocess.run([*estargz, "umount", proc.stdout.strip()], check=True,
                           capture_output=True)

            with go_peer() as peer:  # a fresh containerd each time: rpull again is a no-op
                time.sleep(_SETTLE)
                start = registry.blob_bytes()
                before = set(peer.stargz_mounts())
                t = time.perf_counter()
                peer.ctr("i", "rpull", "--plain-http", esgz)
                go_rpulls.append(time.perf_counter() - t)
                new = [m for m in peer.stargz_mounts() if m not in before]
                if len(new) != 1:
                    raise SystemExit(f"expected one lazy layer mount from Go, got {new}")
                if rep == 0:
                    go = _measure(pathlib.Path(new[0].split()[1]), registry, start)
        # read every file: our eStargz and zstd:chunked mounts, interleaved, each in a store
        # of its own (no chunk cached from an earlier run); then Go's zstd:chunked mount
        reads: dict[str, list[float]] = {esgz: [], zstd: []}
        fetched: dict[str, list[float]] = {esgz: [], zstd: []}
        for rep in range(args.read_repeat):
            for ref in (esgz, zstd) if rep % 2 == 0 else (zstd, esgz):
                fresh = [sys.executable, "-m", "estargz.cli.main", "--root",
                         str(work / f"read-{rep}-{ref.rsplit(':', 1)[1]}"), "i"]
                time.sleep(_SETTLE)
                start = registry.blob_bytes()
                proc = subprocess.run([*fresh, "rpull", "-q", ref],
                                      check=True, capture_output=True, text=True)
                got = _measure(pathlib.Path(proc.stdout.strip()), registry, start)
                reads[ref].append(got["every_file_s"])
                fetched[ref].append(got["fetched_total"])
                subprocess.run([*fresh, "umount", proc.stdout.strip()], check=True,
                               capture_output=True)
        with go_peer() as peer:
            time.sleep(_SETTLE)
            start = registry.blob_bytes()
            before = set(peer.stargz_mounts())
            peer.ctr("i", "rpull", "--plain-http", zstd)
            new = [m for m in peer.stargz_mounts() if m not in before]
            if len(new) != 1:
                raise SystemExit(f"expected one lazy zstd:chunked mount from Go, got {new}")
            go_zstd = _measure(pathlib.Path(new[0].split()[1]), registry, start)
        zstd_reads, esgz_reads = statistics.median(reads[zstd]), statistics.median(reads[esgz])
        ours["rpull_s"] = statistics.median(rpulls)
        ours["cold_rpull_s"] = cold
        go["rpull_s"] = statistics.median(go_rpulls)
        go["cold_rpull_s"] = go["rpull_s"]
    finally:
        subprocess.run([sys.executable, "-m", "estargz.cli.main", "--root", str(work / "store"),
                        "service", "stop"], capture_output=True, check=False)
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"image: debootstrap minbase bookworm, one eStargz layer ({tar.stat().st_size / 1e6:.0f} "
          f"MB uncompressed), {ours['files']:.0f} files")
    print(f"{'':24} {'estargz':>12} {'go 0.12':>12} {'ratio':>8}")
    print(f"rpull runs (s): estargz {' '.join(f'{x:.3f}' for x in rpulls)}; "
          f"go {' '.join(f'{x:.3f}' for x in go_rpulls)}")
    for key, label in (("rpull_s", "rpull to mounted root s"),
                       ("cold_rpull_s", "  without our service s"),
                       ("small_file_s", "read one small file s"),
                       ("every_file_s", "read every file s"),
                       ("fetched_after_small", "fetched after small B"),
                       ("fetched_total", "fetched in total B")):
        ratio = ours[key] / go[key] if go[key] else float("nan")
        print(f"{label:24} {ours[key]:>12.3f} {go[key]:>12.3f} {ratio:>8.2f}")
    print("zstd:chunked (same files), read every file:")
    print(f"  our eStargz runs (s):      {' '.join(f'{x:.3f}' for x in reads[esgz])}")
    print(f"  our zstd:chunked runs (s): {' '.join(f'{x:.3f}' for x in reads[zstd])}")
    print(f"{'':24} {'zstd:chunked':>12} {'our esgz':>12} {'ratio':>8} {'go zstd':>12} "
          f"{'ratio':>8}")
    print(f"{'read every file s':24} {zstd_reads:>12.3f} {esgz_reads:>12.3f} "
          f"{zstd_reads / esgz_reads:>8.2f} {go_zstd['every_file_s']:>12.3f} "
          f"{zstd_reads / go_zstd['every_file_s']:>8.2f}")
    zstd_bytes, esgz_bytes = statistics.median(fetched[zstd]), statistics.median(fetched[esgz])
    print(f"{'fetched in total B':24} {zstd_bytes:>12.0f} {esgz_bytes:>12.0f} "
          f"{zstd_bytes / esgz_bytes:>8.2f} {go_zstd['fetched_total']:>12.0f} "
          f"{zstd_bytes / go_zstd['fetched_total']:>8.2f}")
    print("targets: rpull ratio <= 1.0, every-file ratio <= 1.5, zstd:chunked every file <= "
          "our eStargz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
