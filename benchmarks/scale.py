"""Lazy mounts of layers with many small files, ours against the Go stargz snapshotter 0.12.

    python3 benchmarks/scale.py [--sizes 10000,50000,200000] [--million] [--repeat 1]

Each size is one layer of ``size`` small files (500 per directory, 10-400 bytes each), built
once as a tar and cached. Per size, in one run: ``estargz layer convert`` and the Go builder
(level 9: time and peak RSS), then the image our converter made is pushed to a local
docker-registry and both sides mount it, ours with ``estargz i rpull`` (a fresh store, its
service started before the clock runs) and Go's with ``ctr-remote i rpull`` on a fresh
containerd and snapshotter. On each mount: the time of
a first and a second ``os.walk`` that also ``lstat``s every entry, and the memory of what
serves the mount as proportional set size (ours: the mount daemon and its layer servers, which
share the pages of the interpreter; Go: the snapshotter's growth from before rpull to after
the walks, and its total). The sides alternate which goes first.

``--million`` adds, for ours only, a layer of 1,000,000 entries from a synthetic TOC (100
directories of 10,000 empty files and a 32-deep chain of directories): rpull, a cold ``lstat``
of the deepest path, a cold listing of one 10,000-entry directory, a first walk, and memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from gotool import build_go_harness  # noqa: E402
from imagekit import _sha  # noqa: E402
from lazy import Registry  # noqa: E402
from peer import go_peer  # noqa: E402
from tarbuild import synthetic_layer  # noqa: E402

PER_DIR = 500
LEVEL = 9
DEPTH = 32
_SETTLE = 1.0
ESTARGZ = [sys.executable, "-m", "estargz.cli.main"]


def ensure_tar(cache: pathlib.Path, files: int) -> pathlib.Path:
    """``files`` small files in directories of 500, the same bytes on every run."""
    tar = cache / f"scale-{files}.tar"
    if tar.exists():
        return tar
    rng = random.Random(files)
    tmp = tar.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tf:
        for d in range(files // PER_DIR):
            info = tarfile.TarInfo(f"d{d:04d}")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tf.addfile(info)
            for f in range(PER_DIR):
                data = rng.randbytes(rng.randint(5, 200)).hex().encode()
                info = tarfile.TarInfo(f"d{d:04d}/f{f:04d}.txt")
                info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                tf.addfile(info, _Bytes(data))
    tmp.rename(tar)
    return tar


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        out, self.data = self.data, b""
        return out


def _peak_rss(cmd: list[str]) -> tuple[float, int, str]:
    """Seconds, peak RSS in bytes (GNU time's) and stdout of a command."""
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, check=False)
    elapsed = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr.decode(errors='replace')}")
    rss = int(proc.stderr.decode().strip().splitlines()[-1]) * 1024
    return elapsed, rss, proc.stdout.decode()


def _layout(layout: pathlib.Path, blob: bytes, summary: dict[str, object]) -> None:
    """An OCI layout of one eStargz layer, annotated as our converter annotates it."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest[7:]).write_bytes(data)
        return digest

    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [summary["diff_id"]]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(blob), "size": len(blob), "annotations": {
                        "containerd.io/snapshot/stargz/toc.digest": summary["toc_digest"],
                        "io.containers.estargz.uncompressed-size":
                            str(summary["uncompressed_size"])}}],
    }).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "esgz"}}]}))


def _push(work: pathlib.Path, blob: bytes, summary: dict[str, object], ref: str) -> None:
    layout = work / "layout"
    shutil.rmtree(layout, ignore_errors=True)
    _layout(layout, blob, summary)
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                    f"oci:{layout}:esgz", f"docker://{ref}"], check=True)
    shutil.rmtree(layout)


def _walk(root: pathlib.Path) -> tuple[float, int]:
    t = time.perf_counter()
    count = 0
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lstat(os.path.join(dirpath, name))
            count += 1
    return time.perf_counter() - t, count


def _rss(pid: int) -> int:
    """Proportional resident bytes: pages shared with other processes (ours fork the layer
    servers from the daemon) are counted once in all, not once per process."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def _ours_rss(store: pathlib.Path) -> int:
    """The mount daemons of ``store`` and their layer servers."""
    total = 0
    for pidfile in store.glob("state/mounts/*/daemon.pid"):
        pid = int(pidfile.read_text())
        total += _rss(pid) + sum(_rss(c) for c in _children(pid))
    return total


def _go_pid(state: pathlib.Path) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-stargz-grpc" in cmd.split(b"\0")[0] and str(state).encode() in cmd:
                return int(entry)
    raise SystemExit("the Go snapshotter is not running")


def ours(work: pathlib.Path, ref: str, probe: Callable[[pathlib.Path], dict[str, float]] | None
         = None, walks: int = 2) -> dict[str, float]:
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    cli = [*ESTARGZ, "--root", str(store), "i"]
    # as Go's client talks to a snapshotter already running, ours talks to the store's service
    subprocess.run([*ESTARGZ, "--root", str(store), "service", "start"], check=True,
                   capture_output=True)
    time.sleep(_SETTLE)
    t = time.perf_counter()
    proc = subprocess.run([*cli, "rpull", "-q", ref], check=True, capture_output=True,
                          text=True)
    out: dict[str, float] = {"rpull": time.perf_counter() - t}
    mount = pathlib.Path(proc.stdout.strip())
    try:
        if probe is not None:
            out.update(probe(mount))
        for i in range(walks):
            out[f"walk{i + 1}"], out["entries"] = _walk(mount)
        out["rss"] = _ours_rss(store)
    finally:
        subprocess.run([*cli, "umount", str(mount)], check=True, capture_output=True)
        subprocess.run([*ESTARGZ, "--root", str(store), "service", "stop"], check=False,
                       capture_output=True)
    shutil.rmtree(store, ignore_errors=True)
    return out


def go(ref: str) -> dict[str, float]:
    with go_peer() as peer:
        time.sleep(_SETTLE)
        pid = _go_pid(peer.state)
        before_rss = _rss(pid)
        before = set(peer.stargz_mounts())
        t = time.perf_counter()
        peer.ctr("i", "rpull", "--plain-http", ref, timeout=1800)
        out: dict[str, float] = {"rpull": time.perf_counter() - t}
        new = [m for m in peer.stargz_mounts() if m not in before]
        if len(new) != 1:
            raise SystemExit(f"expected one lazy layer mount from Go, got {new}")
        mount = pathlib.Path(new[0].split()[1])
        for i in range(2):
            out[f"walk{i + 1}"], out["entries"] = _walk(mount)
        out["rss"] = _rss(pid) - before_rss
        out["rss_total"] = _rss(pid)
    return out


def convert(tar: pathlib.Path, work: pathlib.Path, harness: pathlib.Path | None
            ) -> tuple[dict[str, float], dict[str, float], bytes, dict[str, object]]:
    esgz, go_esgz = work / "ours.esgz", work / "go.esgz"
    s, rss, stdout = _peak_rss([*ESTARGZ, "layer", "convert", "--json", "--compression-level",
                                str(LEVEL), str(tar), str(esgz)])
    summary = json.loads(stdout)
    mine = {"convert": s, "convert_rss": rss, "size": esgz.stat().st_size}
    theirs = {}
    if harness is not None:
        g, g_rss, _ = _peak_rss([str(harness), "build", str(tar), str(go_esgz), "-level",
                                 str(LEVEL)])
        theirs = {"convert": g, "convert_rss": g_rss, "size": go_esgz.stat().st_size}
        go_esgz.unlink()
    blob = esgz.read_bytes()
    esgz.unlink()
    return mine, theirs, blob, summary


def _med(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _table(size: int, mine: dict[str, float], theirs: dict[str, float]) -> None:
    print(f"\n{size} files ({mine.get('entries', 0):.0f} entries walked)")
    print(f"{'':26} {'estargz':>10} {'go 0.12':>10} {'ratio':>7}")
    rows = (("convert", "convert L9 s", 1), ("convert_rss", "convert peak RSS MB", 1e6),
            ("size", "layer MB", 1e6), ("rpull", "rpull s", 1), ("walk1", "first walk s", 1),
            ("walk2", "second walk s", 1), ("rss", "PSS serving MB (Go: growth)", 1e6),
            ("rss_total", "Go snapshotter PSS MB", 1e6))
    for key, label, scale in rows:
        a, b = mine.get(key), theirs.get(key)
        if a is None and b is None:
            continue
        cell_a = f"{a / scale:>10.3f}" if a is not None else f"{'':>10}"
        cell_b = f"{b / scale:>10.3f}" if b is not None else f"{'':>10}"
        ratio = f"{a / b:>7.2f}" if a is not None and b else ""
        print(f"{label:26} {cell_a} {cell_b} {ratio}", flush=True)


def _million(work: pathlib.Path, registry: Registry) -> None:
    layer = synthetic_layer(100, 10_000, DEPTH)
    blob = layer.blob
    summary: dict[str, object] = {"toc_digest": layer.toc_digest, "diff_id": layer.diff_id,
                                  "uncompressed_size": len(gzip.decompress(blob))}
    ref = f"{registry.host}/scale:million"
    _push(work, blob, summary, ref)
    deep, wide = layer.deep, layer.wide[50]

    def probe(mount: pathlib.Path) -> dict[str, float]:
        t = time.perf_counter()
        os.lstat(mount / deep)
        lookup = time.perf_counter() - t
        t = time.perf_counter()
        names = os.listdir(mount / wide)
        listing = time.perf_counter() - t
        if len(names) != 9_999:
            raise SystemExit(f"{wide}: {len(names)} entries")
        return {"deep_lookup": lookup, "wide_readdir": listing}

    mine = ours(work, ref, probe, walks=1)
    print(f"\n1,000,000 entries, synthetic TOC ({len(blob) / 1e6:.1f} MB blob), estargz only")
    print(f"rpull {mine['rpull']:.3f} s; lstat of a {DEPTH}-deep path "
          f"{mine['deep_lookup'] * 1e3:.2f} ms; listing of a 10,000-entry directory "
          f"{mine['wide_readdir'] * 1e3:.2f} ms; "
          f"first walk {mine['walk1']:.1f} s ({mine['entries']:.0f} entries); "
          f"PSS serving {mine['rss'] / 1e6:.0f} MB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=pathlib.Path, default=HERE / ".cache")
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--repeat", type=int, default=1, help="mounts per side (median)")
    parser.add_argument("--million", action="store_true", help="add the 1M-entry layer (ours)")
    parser.add_argument("--no-go", action="store_true", help="ours only (profiling)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    harness = None if args.no_go else build_go_harness(args.cache / "go")
    work = pathlib.Path(tempfile.mkdtemp(prefix="estargz-scale-bench-"))
    registry = Registry(work)
    print(f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for n, size in enumerate(int(s) for s in args.sizes.split(",") if s):
            tar = ensure_tar(args.cache, size)
            mine, theirs, blob, summary = convert(tar, work, harness)
            ref = f"{registry.host}/scale:{size}"
            _push(work, blob, summary, ref)
            runs_a: list[dict[str, float]] = []
            runs_b: list[dict[str, float]] = []
            for rep in range(args.repeat):
                order = ["ours", "go"] if (n + rep) % 2 == 0 else ["go", "ours"]
                for side in order:
                    time.sleep(_SETTLE)
                    if side == "ours":
                        runs_a.append(ours(work, ref))
                    elif not args.no_go:
                        runs_b.append(go(ref))
            mine.update(_med(runs_a))
            if runs_b:
                theirs.update(_med(runs_b))
            _table(size, mine, theirs)
        if args.million:
            _million(work, registry)
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
