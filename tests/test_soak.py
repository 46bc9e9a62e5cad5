"""Soak: pull, convert + push, and lazy reads through a registry that misbehaves on one request
in ten (5xx, 429, resets, cut and short bodies, flipped bytes, 200 for ranges, slow answers,
redirects). Every operation ends with the right content or one clear error line, and not one
wrong byte is ever returned.

The suite runs it for ``ESTARGZ_SOAK_SECONDS`` (40) on a small image; a longer run on the
debootstrap root filesystem of the benchmarks, with counts printed::

    ESTARGZ_SOAK_SECONDS=600 ESTARGZ_SOAK_ROOTFS=benchmarks/.cache/rootfs.tar \\
        python3 -m pytest -s tests/test_soak.py
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from clikit import Cli
from estargz.errors import EstargzError
from estargz.image.model import Manifest, parse_document
from estargz.registry import RegistryClient
from faultproxy import FaultProxy
from imagekit import busybox_layers, files_layer, push_layers
from lazykit import lazy_mounts
from registry_fixture import RegistryServer

SECONDS = float(os.environ.get("ESTARGZ_SOAK_SECONDS", "40"))
ROOTFS = os.environ.get("ESTARGZ_SOAK_ROOTFS")
MIN_FAULTS = 12
"""The run goes on past its time (up to four times it) until this many faults were met."""
FILES = {f"d{i % 7}/f{i}": os.urandom(500 + 97 * i) for i in range(120)}


def _layer() -> tuple[bytes, dict[str, str]]:
    """The files layer and the sha256 of each regular file in it."""
    layer = Path(ROOTFS).read_bytes() if ROOTFS else files_layer(FILES)
    want = {}
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for info in tar:
            if info.isreg():
                data = tar.extractfile(info)
                assert data is not None
                want[info.name.removeprefix("./")] = hashlib.sha256(data.read()).hexdigest()
    return layer, want


def _clear_failure(proc: subprocess.CompletedProcess[str]) -> bool:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("estargz: error")]
    return proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr


def _blobs_match(registry: RegistryServer, ref: str) -> bool:
    """What a push left in the registry, read without the proxy: every digest holds."""
    repo, tag = ref.split("/", 1)[1].rsplit(":", 1)
    with RegistryClient(registry.host) as client:
        data, media_type, _ = client.get_manifest(repo, tag)
        manifest = parse_document(data, media_type)
        assert isinstance(manifest, Manifest)
        try:
            for desc in [manifest.config, *manifest.layers]:
                client.get_blob(repo, desc.digest, max_size=1 << 30)  # (checks the digest)
        except EstargzError:
            return False
    return True


def test_soak_under_one_fault_in_ten(tmp_path: Path, registry: RegistryServer,
                                     fault_proxy: Callable[..., FaultProxy]) -> None:
    layer, want = _layer()
    src = push_layers(registry.host, "soak", [*busybox_layers(), layer], tmp_path)
    seed = Cli.at(tmp_path, "seed")
    esgz = src.replace(":v1", ":esgz")
    seed("convert", "--oci", "--estargz", "--estargz-min-chunk-size", "4096", src, esgz)
    seed("push", esgz)
    proxy = fault_proxy(registry.host)
    through = src.replace(registry.host, proxy.host)
    proxy.chaos(0.10, seed=2026)

    outcome: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    deadline = time.monotonic() + SECONDS
    with lazy_mounts(tmp_path) as mounts:
        for round_ in itertools.count():
            enough = sum(proxy.injected.values()) >= MIN_FAULTS and round_ >= 4
            if time.monotonic() > deadline and (enough or time.monotonic() > deadline
                                                 + 3 * SECONDS):
                break
            cli = Cli.at(tmp_path, f"store-{round_}")
            op = ("pull", "push", "lazy", "convert")[round_ % 4]
            if op == "pull":
                proc = cli.run("pull", through)
                ok = proc.returncode == 0
            elif op == "convert":  # (pulls the source through the proxy first)
                proc = cli.run("convert", "--oci", "--estargz", through,
                               f"converted-{round_}:latest")
                ok = proc.returncode == 0
            elif op == "push":
                seed_src = esgz
                target = through.replace(":v1", f":pushed-{round_}")
                proc = seed.run("push", target, seed_src)
                ok = proc.returncode == 0
                if ok and not _blobs_match(registry, target.replace(proxy.host,
                                                                      registry.host)):
                    wrong.append(f"push {target}: a blob in the registry is not its digest")
            else:
                mounts.cli = cli
                proc = cli.run("rpull", "--read-timeout", "20",
                               through.replace(":v1", ":esgz"))
                ok = proc.returncode == 0
                if ok:
                    mount = Path(proc.stdout.strip())
                    mounts.points.append(str(mount))
                    for name, digest in want.items():
                        try:
                            got = hashlib.sha256((mount / name).read_bytes()).hexdigest()
                        except OSError as exc:  # EIO: a fault that outlasted the retries
                            outcome["lazy read failed (EIO)"] += 1
                            assert exc.errno == 5, exc
                            continue
                        outcome["lazy read"] += 1
                        if got != digest:
                            wrong.append(f"lazy read of {name}: sha256 {got}, want {digest}")
                    assert cli.run("umount", str(mount)).returncode == 0
            if ok:
                outcome[f"{op} ok"] += 1
            else:
                outcome[f"{op} failed"] += 1
                assert _clear_failure(proc), f"{op}:\n{proc.stderr}"
            check = cli.run("ls")  # the store answers, whatever happened
            assert check.returncode == 0, check.stderr
    print(f"\nsoak {SECONDS:.0f}s: {len(proxy.requests)} requests, injected "
          f"{dict(proxy.injected)}; outcomes {dict(outcome)}")
    assert not wrong, "\n".join(wrong)
    assert sum(proxy.injected.values()) >= MIN_FAULTS  # (the faults did happen)
    assert outcome["pull ok"] and outcome["push ok"] and outcome["lazy ok"]
    assert outcome["convert ok"]
    failed = sum(n for k, n in outcome.items() if k.endswith("failed"))
    assert failed <= sum(n for k, n in outcome.items() if k.endswith(" ok")), outcome
