"""Lazy layers under containerd: Debian's ``ctr-remote i rpull`` (Go, 0.12) through our
snapshotter of an image we converted, then ``ctr run`` on it.

A FaultProxy in front of the registry records every request: the layers are only ever asked
for in ranges (footer, TOC, then the chunks a container reads), never whole, and containerd's
content store never holds them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from containerdkit import SNAPSHOTTER, Containerd, containerd_with_snapshotter
from faultproxy import FaultProxy
from imagekit import HELLO, busybox_layers, files_layer, write_oci_layout
from registry_fixture import RegistryServer

COMMITTED = 3
BIG = bytes(range(256)) * 40_000
REMOTE_LABEL = "containerd.io/snapshot/remote"
SIZES: dict[str, int] = {}
"""Layer digest -> blob size, of the images :func:`_converted` made."""


def estargz(store: pathlib.Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "estargz.cli.main", "--root", str(store), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"estargz {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _converted(registry: RegistryServer, repo: str, tmp_path: pathlib.Path,
               layers: list[bytes] | None = None, flags: tuple[str, ...] = ()
               ) -> tuple[str, list[str]]:
    """Our eStargz conversion of an image (default: busybox, then a layer that adds
    /etc/hello.txt), pushed; and its layer digests."""
    layout = tmp_path / "layout"
    if layers is None:
        layers = [busybox_layers()[0], files_layer({"etc/hello.txt": HELLO})]
    write_oci_layout(layout, "v1", layers)
    src = f"{registry.host}/{repo}:v1"
    subprocess.run(
        ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{src}"],
        check=True, capture_output=True, timeout=120,
    )
    ours = f"{registry.host}/{repo}:esgz"
    work = tmp_path / "convert-store"
    estargz(work, "i", "convert", "--oci", "--estargz", *flags, src, ours)
    estargz(work, "i", "push", ours)
    if "--estargz-external-toc" in flags:
        estargz(work, "i", "push", f"{ours}-esgztoc")
    doc = json.loads(estargz(work, "i", "inspect", "--json", ours))
    layers = [layer["digest"] for layer in doc["layers"]]
    SIZES.update({layer["digest"]: layer["size"] for layer in doc["layers"]})
    assert len(layers) == 2, doc
    return ours, layers


def _layer_gets(proxy: FaultProxy, digests: list[str]) -> list[tuple[str, str]]:
    """(digest, Range header) of every blob GET of those layers through the proxy."""
    out = []
    for seen in proxy.seen("GET"):
        for digest in digests:
            if seen.path.endswith(f"/blobs/{digest}"):
                out.append((digest, seen.headers.get("Range", seen.headers.get("range", ""))))
    return out


def _remote_rows(env: Containerd) -> list[tuple[str, dict[str, str]]]:
    import sqlite3

    db = sqlite3.connect(env.sn_root / "metadata.db")
    try:
        rows = list(db.execute("SELECT key, labels, kind, remote FROM snapshots"))
    finally:
        db.close()
    return [(key, json.loads(labels)) for key, labels, kind, remote in rows
            if kind == COMMITTED and remote]


def _layer_mounts(env: Containerd) -> list[str]:
    """The FUSE mounts of the lazy layers (each also bound onto its snapshot's directory)."""
    return [m.split()[1] for m in env.mounts()
            if " fuse" in m and m.split()[1].startswith(f"{env.store}/")]


def _run(env: Containerd, ref: str, script: str, retry: bool = False) -> str:
    """A container's output; ``retry``: containerd reconnects to a restarted snapshotter
    after a backoff, failing calls as "unavailable" until then."""
    deadline = time.monotonic() + 20
    while True:
        proc = env.ctr("run", "--rm", "--snapshotter", SNAPSHOTTER, ref,
                       f"t-{uuid.uuid4().hex[:8]}", "/bin/sh", "-c", script, check=False)
        if proc.returncode == 0:
            return proc.stdout
        assert retry and "unavailable" in proc.stderr and time.monotonic() < deadline, (
            proc.stderr + env.log_tail(env.sn_log))
        time.sleep(0.5)


SCRIPT = "cat /etc/hello.txt; sha256sum /data/big.bin"


def _check_output(out: str) -> None:
    assert HELLO.decode() in out
    assert hashlib.sha256(BIG).hexdigest() in out


def test_rpull_mounts_our_layers_lazily_and_containers_run(
    registry: RegistryServer, repo: str, tmp_path: pathlib.Path,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    ours, layers = _converted(registry, repo, tmp_path)
    proxy = fault_proxy(registry.host)
    ref = ours.replace(registry.host, proxy.host)
    with containerd_with_snapshotter(tmp_path / "store", "--no-background-fetch") as env:
        env.ctr("i", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, ref,
                tool="ctr-remote")
        remote = _remote_rows(env)
        assert len(remote) == 2, env.log_tail(env.sn_log)
        assert all(labels.get(REMOTE_LABEL) for _, labels in remote)
        assert len(_layer_mounts(env)) == 2, env.mounts()
        blobs = env.base / "root" / "io.containerd.content.v1.content" / "blobs" / "sha256"
        assert any(blobs.iterdir()), "(the manifest and config are there)"
        assert not any((blobs / d.removeprefix("sha256:")).exists() for d in layers), \
            "containerd downloaded no layer"

        gets = _layer_gets(proxy, layers)
        assert gets and all(rng.startswith("bytes=") for _, rng in gets), gets
        # footer and TOC only: ranges read from the end of each blob (no prefetch landmark
        # without --estargz-record-in), none from its start
        assert all(rng.endswith(f"-{SIZES[d] - 1}") for d, rng in gets), gets
        assert not any(rng.startswith("bytes=0-") for d, rng in gets if d == layers[0]), gets

        _check_output(_run(env, ref, SCRIPT))
        gets = _layer_gets(proxy, layers)
        assert all(rng.startswith("bytes=") for _, rng in gets), "reads fetch ranges only"

        listed = estargz(tmp_path / "store", "i", "mounts")
        assert all(d[7:19] in listed for d in layers), listed


def test_lazy_layers_after_a_restart(
    registry: RegistryServer, repo: str, tmp_path: pathlib.Path
) -> None:
    ours, _ = _converted(registry, repo, tmp_path)
    with containerd_with_snapshotter(tmp_path / "store", "--no-background-fetch") as env:
        env.ctr("i", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, ours,
                tool="ctr-remote")
        assert len(_remote_rows(env)) == 2

        # SIGTERM: the layers' daemons keep serving; the new process finds them mounted
        assert env.stop_snapshotter(signal.SIGTERM) == 0
        env.start_snapshotter()
        _check_output(_run(env, ours, SCRIPT, retry=True))

        # SIGKILL of the snapshotter and of every layer daemon (as after a crash), and the
        # cached TOCs gone (as a store gc drops them): the next start mounts the layers again
        # from what it recorded, with their TOCs fetched again
        env.stop_snapshotter(signal.SIGKILL)
        for status in (tmp_path / "store" / "state" / "mounts").glob("*/status.json"):
            os.kill(json.loads(status.read_text())["pid"], signal.SIGKILL)
        tocs = list((tmp_path / "store").rglob("toc.json"))
        assert len(tocs) == 2, tocs
        for toc in tocs:
            toc.unlink()
        time.sleep(0.5)
        env.start_snapshotter()
        log = env.sn_log.read_text()
        assert log.count("mounting sha256:") == 2, log
        assert len(_layer_mounts(env)) == 2, env.mounts()
        _check_output(_run(env, ours, SCRIPT, retry=True))

        env.ctr("i", "rm", "--sync", ours)
        deadline = time.monotonic() + 20
        while _remote_rows(env) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _remote_rows(env) == []
        assert not [m for m in env.mounts() if " fuse" in m], "gc unmounted the lazy layers"
        assert list((env.sn_root / "snapshots").iterdir()) == []


def test_a_layer_with_whiteouts_above_another_is_unpacked(
    registry: RegistryServer, repo: str, tmp_path: pathlib.Path
) -> None:
    """Layer two deletes /etc/removed-later: it falls back to containerd's unpacking (the
    deletion holds), while layer one is still mounted lazily."""
    ours, _ = _converted(registry, repo, tmp_path, busybox_layers())
    with containerd_with_snapshotter(tmp_path / "store", "--no-background-fetch") as env:
        env.ctr("i", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, ours,
                tool="ctr-remote")
        assert len(_remote_rows(env)) == 1
        assert "whiteouts" in env.sn_log.read_text()
        out = _run(env, ours, "cat /etc/hello.txt; test -e /etc/removed-later || echo gone; "
                              "sha256sum /data/big.bin")
        _check_output(out)
        assert "gone" in out


@pytest.mark.parametrize("flags", [
    ("--estargz-min-chunk-size", "16384"),
    ("--estargz-external-toc",),
    ("--estargz-external-toc", "--estargz-keep-diff-id"),
], ids=["min-chunk-size", "external-toc", "keep-diff-id"])
def test_rpull_of_our_other_conversions(
    registry: RegistryServer, repo: str, tmp_path: pathlib.Path, flags: tuple[str, ...]
) -> None:
    ours, _ = _converted(registry, repo, tmp_path, flags=flags)
    with containerd_with_snapshotter(tmp_path / "store", "--no-background-fetch") as env:
        env.ctr("i", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, ours,
                tool="ctr-remote")
        assert len(_remote_rows(env)) == 2, env.log_tail(env.sn_log)
        _check_output(_run(env, ours, SCRIPT))


def test_rpull_of_an_image_converted_by_go(
    registry: RegistryServer, repo: str, tmp_path: pathlib.Path
) -> None:
    """Go's ``ctr-remote i convert`` (0.12) makes the eStargz image; we mount it lazily."""
    layout = tmp_path / "layout"
    write_oci_layout(layout, "v1", [busybox_layers()[0], files_layer({"etc/hello.txt": HELLO})])
    src = f"{registry.host}/{repo}:v1"
    subprocess.run(
        ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{src}"],
        check=True, capture_output=True, timeout=120,
    )
    theirs = f"{registry.host}/{repo}:go-esgz"
    with containerd_with_snapshotter(tmp_path / "store", "--no-background-fetch") as env:
        env.ctr("i", "pull", "--plain-http", src)
        env.ctr("i", "convert", "--oci", "--estargz", src, theirs, tool="ctr-remote")
        env.ctr("i", "push", "--plain-http", theirs)
        env.ctr("i", "rm", "--sync", src, theirs)
        env.ctr("i", "rpull", "--plain-http", "--snapshotter", SNAPSHOTTER, theirs,
                tool="ctr-remote")
        assert len(_remote_rows(env)) == 2, env.log_tail(env.sn_log)
        _check_output(_run(env, theirs, SCRIPT))
