"""Real clients, both ways: the Go stargz snapshotter 0.12 runs what we convert, and we read
what its ``ctr-remote i convert`` produces.

containerd, the snapshotter and ctr-remote come from ``../shared/peers/go-stargz.sh``; the
registry is Debian's docker-registry on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys
import uuid

from estargz.format import open_blob
from estargz.format.types import TOC_JSON_DIGEST_ANNOTATION
from estargz.image.model import Manifest, parse_document
from estargz.store import ImageStore
from imagekit import HELLO, busybox_layers, write_oci_layout
from peer import go_peer
from registry_fixture import RegistryServer

LANDMARKS = {".no.prefetch.landmark", ".prefetch.landmark"}


def estargz(store: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "estargz.cli.main", "--root", str(store), *args],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"estargz {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _seed(registry: RegistryServer, repo: str, tmp_path: pathlib.Path) -> str:
    layout = tmp_path / "layout"
    write_oci_layout(layout, "v1", busybox_layers())
    ref = f"{registry.host}/{repo}:v1"
    subprocess.run(
        ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}"],
        check=True, capture_output=True, timeout=120,
    )
    return ref


def _layer_files(store: ImageStore, name: str) -> list[dict[str, str]]:
    """Per layer, path -> sha256 of every regular file, read through our verifying reader."""
    top = store.get_image(name)
    manifest = parse_document(store.read_blob(top.digest), top.media_type)
    assert isinstance(manifest, Manifest)
    out = []
    for layer in manifest.layers:
        reader = open_blob(store.blob_source(layer.digest)).verify_toc(
            layer.annotations[TOC_JSON_DIGEST_ANNOTATION]
        )
        out.append({k: v for k, v in reader.verify().items() if k not in LANDMARKS})
    return out


def test_go_snapshotter_lazily_runs_our_image(
    registry: RegistryServer, repo: str, tmp_path: pathlib.Path
) -> None:
    src = _seed(registry, repo, tmp_path)
    ours = f"{registry.host}/{repo}:esgz"
    store = tmp_path / "store"
    estargz(store, "i", "convert", "--oci", "--estargz", src, ours)  # pulls the source first
    estargz(store, "i", "push", ours)
    assert_go_runs_lazily(ours)


def assert_go_runs_lazily(ours: str) -> None:
    """The Go snapshotter mounts both layers of the test image ``ours`` lazily and runs it."""
    big = bytes(range(256)) * 40_000
    with go_peer() as peer:
        before = len(peer.stargz_mounts())
        peer.ctr("i", "rpull", "--plain-http", ours)
        mounted = len(peer.stargz_mounts()) - before
        assert mounted == 2, f"expected both layers mounted lazily:\n{peer.log_tail()}"
        script = "cat /etc/hello.txt; test -e /etc/removed-later || echo whiteout-ok; " \
                 "sha256sum /data/big.bin"
        proc = peer.ctr("run", "--rm", "--snapshotter", "stargz", ours,
                        f"t-{uuid.uuid4().hex[:8]}", "/bin/sh", "-c", script)
    assert HELLO.decode() in proc.stdout
    assert "whiteout-ok" in proc.stdout
    assert hashlib.sha256(big).hexdigest() in proc.stdout


def test_we_read_what_go_ctr_remote_converts(
    registry: RegistryServer, repo: str, tmp_path: pathlib.Path
) -> None:
    src = _seed(registry, repo, tmp_path)
    theirs = f"{registry.host}/{repo}:go-esgz"
    with go_peer() as peer:
        peer.ctr("i", "pull", "--plain-http", src)
        peer.ctr("i", "convert", "--oci", "--estargz", src, theirs)
        peer.ctr("i", "push", "--plain-http", theirs)

    store_path = tmp_path / "store"
    estargz(store_path, "i", "pull", theirs)
    report = json.loads(estargz(store_path, "i", "inspect", "--json", theirs).stdout)
    assert [layer["estargz"] for layer in report["layers"]] == [True, True], report
    ours = f"{registry.host}/{repo}:ours"
    estargz(store_path, "i", "convert", "--oci", "--estargz", src, ours)

    store = ImageStore(store_path)
    go_files = _layer_files(store, theirs)
    our_files = _layer_files(store, ours)
    assert go_files == our_files
    assert go_files[1]["etc/hello.txt"] == "sha256:" + hashlib.sha256(HELLO).hexdigest()
