"""zstd:chunked images end to end: ``i convert --oci --zstdchunked``, push, pull, inspect and
lazy mounts, against a real registry, and with the Go peer both ways (Debian's ``ctr-remote``
converts, we read and mount; the Go snapshotter mounts and runs what we convert).

Layers are checked without our reader where it matters: ``zstd -d`` of each pushed layer must
hash to the config's diff_id, skopeo reads the manifests, umoci unpacks the reference tree.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from clikit import Cli
from estargz.format import BuildOptions, build, open_blob
from estargz.format.types import (
    STORE_UNCOMPRESSED_SIZE_ANNOTATION,
    TOC_JSON_DIGEST_ANNOTATION,
    ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
)
from estargz.registry import Reference, RegistryClient
from imagekit import HELLO, busybox_layers, files_layer
from lazykit import (
    Images,
    Mounts,
    assert_same_tree,
    skopeo,
    snapshot,
    umoci_rootfs,
)
from peer import go_peer
from registry_fixture import RegistryServer, unique_repo
from test_go_harness import run_harness
from test_go_peer import assert_go_runs_lazily
from test_zstdchunked import _sha, _zstd_d

OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LANDMARKS = {".no.prefetch.landmark", ".prefetch.landmark"}
BIG = hashlib.sha256(bytes(range(256)) * 40_000).hexdigest()


def _inspect(ref: str, *flags: str) -> Any:
    return json.loads(skopeo("inspect", "--tls-verify=false", *flags, f"docker://{ref}"))


def _fetch(ref: str, digest: str) -> bytes:
    parsed = Reference.parse(ref)
    with RegistryClient(parsed.registry) as client:
        data = client.get_blob(parsed.repository, digest, max_size=1 << 30)
    assert _sha(data) == digest
    return data


def _convert(images: Images, label: str, *flags: str) -> tuple[str, str]:
    """Convert the extras image with ``--oci --zstdchunked FLAGS`` and push it."""
    cli = Cli.at(images.work, "zstd-store")
    dst = f"{images.host}/{unique_repo('zstd-' + label)}:v1"
    out = cli("convert", "-q", "--oci", "--zstdchunked", *flags, images.source, dst)
    cli("push", "-q", dst)
    return dst, out.split()[-1]


def _layer_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"layer \d+ sha256:", line)]


def check_zstdchunked(ref: str, harness: Path) -> list[dict[str, Any]]:
    """The pushed image, layer by layer: media type, annotations, ``zstd -d`` == diff_id, the
    Go reader verifies it with the annotated TOC digest. Returns the layer descriptors."""
    manifest = _inspect(ref, "--raw")
    config = _inspect(ref, "--config")
    layers: list[dict[str, Any]] = manifest["layers"]
    for i, desc in enumerate(layers):
        assert desc["mediaType"] == OCI_LAYER_ZSTD
        notes = desc["annotations"]
        blob = _fetch(ref, desc["digest"])
        raw = _zstd_d(blob)
        assert _sha(raw) == config["rootfs"]["diff_ids"][i]
        assert int(notes[STORE_UNCOMPRESSED_SIZE_ANNOTATION]) == len(raw)
        off, size, toc_len, kind = map(int, notes[ZSTD_MANIFEST_POSITION_ANNOTATION].split(":"))
        assert kind == 1 and off + size == len(blob) - 48
        assert notes[ZSTD_MANIFEST_CHECKSUM_ANNOTATION] == _sha(blob[off : off + size])
        toc = _zstd_d(blob[off : off + size])
        assert len(toc) == toc_len and _sha(toc) == notes[TOC_JSON_DIGEST_ANNOTATION]
        path = harness.parent / f"layer-{uuid.uuid4().hex}.zst"
        try:
            path.write_bytes(blob)
            go = run_harness(harness, "read", path, notes[TOC_JSON_DIGEST_ANNOTATION])
        finally:
            path.unlink()
        assert go["toc_digest"] == notes[TOC_JSON_DIGEST_ANNOTATION]
    return layers


def test_convert_push_pull_inspect(images: Images, go_harness: Path, tmp_path: Path) -> None:
    dst, digest = _convert(images, "plain")
    assert _inspect(dst)["Digest"] == digest
    layers = check_zstdchunked(dst, go_harness)
    assert len(layers) == 2

    # inspect, from the registry and from a store that pulled it
    cli = Cli.at(tmp_path)
    text = cli("inspect", dst)
    assert text.count(" B  zstd:chunked, lazy\n") == 2 and "NOT lazy" not in text, text
    assert text.count("footer zstdchunked") == 2
    cli("pull", "-q", dst)
    rows = json.loads(cli("inspect", "--json", dst))["layers"]
    assert [(r["estargz"], r["footer"], r["reason"]) for r in rows] == [
        (True, "zstdchunked", "lazy")] * 2
    assert [r["toc_digest"] for r in rows] == [
        d["annotations"][TOC_JSON_DIGEST_ANNOTATION] for d in layers]

    # eStargz from zstd:chunked, and back: the same files
    back = f"{images.host}/{unique_repo('zstd-back')}:v1"
    cli("convert", "-q", "--oci", "--estargz", dst, back)
    rows = json.loads(cli("inspect", "--json", back))["layers"]
    assert [(r["footer"], r["media_type"]) for r in rows] == [("estargz", OCI_LAYER_GZIP)] * 2


def test_flag_spellings_levels_and_record(images: Images, tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"path": "etc/hello.txt", "manifestDigest": "",
                                  "layerIndex": 1}) + "\n")
    new_ref, new = _convert(images, "new", "--zstdchunked-chunk-size", "65536",
                            "--zstdchunked-record-in", str(record))
    _, old = _convert(images, "old", "--estargz-chunk-size", "65536",
                      "--estargz-record-in", str(record))
    assert new == old  # ctr-remote's two spellings of one conversion
    dst, plain = _convert(images, "default")
    best, level19 = _convert(images, "level19", "--zstdchunked-compression-level", "19")
    assert len({new, plain, level19}) == 3
    sizes = [sum(d["size"] for d in _inspect(ref, "--raw")["layers"]) for ref in (dst, best)]
    assert sizes[1] < sizes[0]
    rows = json.loads(Cli.at(tmp_path)("inspect", "--json", new_ref))["layers"]
    assert [r["prefetch_size"] > 0 for r in rows] == [False, True]  # the recorded file first


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--oci", "--estargz", "--zstdchunked"], "--estargz and --zstdchunked cannot be combined"),
        (["--zstdchunked"], "--zstdchunked needs --oci"),
        (["--oci", "--zstdchunked", "--uncompress"], "--zstdchunked and --uncompress cannot"),
        (["--oci", "--zstdchunked-chunk-size", "1000"], "--zstdchunked-chunk-size needs "
                                                         "--zstdchunked"),
        (["--oci", "--zstdchunked-compression-level", "5"], "needs --zstdchunked"),
        (["--oci", "--zstdchunked", "--estargz-external-toc"],
         "--estargz-external-toc needs --estargz"),
        (["--oci", "--zstdchunked", "--estargz-keep-diff-id"], "needs --estargz"),
        (["--oci", "--zstdchunked", "--estargz-chunk-size", "1000",
          "--zstdchunked-chunk-size", "2000"], "disagree"),
    ],
    ids=["estargz", "no-oci", "uncompress", "chunk-size-alone", "level-alone", "external-toc",
         "keep-diff-id", "chunk-sizes-disagree"],
)
def test_conflicting_flags_are_refused_first(registry: RegistryServer, tmp_path: Path,
                                             flags: list[str], reason: str) -> None:
    cli = Cli.at(tmp_path)
    nowhere = f"{registry.host}/{unique_repo('nowhere')}:v1"  # pulling it would fail otherwise
    proc = cli.run("convert", *flags, nowhere, f"{registry.host}/out/never:v1")
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert reason in lines[0], lines[0]
    assert not (cli.root / "blobs").exists() or not any((cli.root / "blobs").rglob("*"))


def test_rpull_mounts_it_lazily(images: Images, mounts: Mounts, tmp_path: Path) -> None:
    dst, _ = _convert(images, "mount")
    proc = mounts.rpull(dst)
    lines = _layer_lines(proc.stderr)
    assert len(lines) == 2 and all(": lazy (TOC sha256:" in line for line in lines), proc.stderr
    assert "2 of 2 layers lazy" in proc.stderr
    mount = Path(proc.stdout.strip())
    want = snapshot(umoci_rootfs(images.source, tmp_path / "umoci"))  # the gzip source
    assert_same_tree(snapshot(mount), want, "zstd:chunked mount")
    script = "cat /etc/hello.txt; sha256sum /data/big.bin"
    run = subprocess.run(["chroot", str(mount), "/bin/sh", "-c", script], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [HELLO.decode().strip(), f"{BIG}  /data/big.bin"]


def _layout_with(layout: Path, layers: list[tuple[bytes, str, dict[str, str]]],
                 diff_ids: list[str]) -> None:
    """An OCI layout naming one image whose layers are given as (blob, type, annotations)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest[7:]).write_bytes(data)
        return digest

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config), "size": len(config)},
        "layers": [{"mediaType": kind, "digest": put(blob), "size": len(blob),
                    **({"annotations": notes} if notes else {})}
                   for blob, kind, notes in layers],
    }).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    (layout / "index.json").write_text(json.dumps(index))


def test_mixed_image_mounts(registry: RegistryServer, mounts: Mounts, tmp_path: Path) -> None:
    """Plain gzip, eStargz, zstd:chunked and plain zstd layers in one image: each read its own
    way (the plain ones pulled whole and converted)."""
    from backports import zstd as backports_zstd

    busybox = busybox_layers()[0]
    middle = files_layer({"etc/esgz.txt": b"from eStargz\n", "etc/shared.txt": b"old\n"})
    top = files_layer({"etc/zstd.txt": b"from zstd:chunked\n", "etc/shared.txt": b"new\n"})
    layers: list[tuple[bytes, str, dict[str, str]]] = [
        (gzip.compress(busybox, mtime=0), OCI_LAYER_GZIP, {})]
    diff_ids = [_sha(busybox)]
    for raw, compression in ((middle, "gzip"), (top, "zstd")):
        out = io.BytesIO()
        result = build(io.BytesIO(raw), out, BuildOptions(compression=compression))
        notes = {TOC_JSON_DIGEST_ANNOTATION: result.toc_digest,
                 STORE_UNCOMPRESSED_SIZE_ANNOTATION: str(result.uncompressed_size),
                 **result.annotations}
        kind = OCI_LAYER_ZSTD if compression == "zstd" else OCI_LAYER_GZIP
        layers.append((out.getvalue(), kind, notes))
        diff_ids.append(result.diff_id)
    last = files_layer({"etc/plain-zstd.txt": b"from plain zstd\n"})
    layers.append((backports_zstd.compress(last, 3), OCI_LAYER_ZSTD, {}))
    diff_ids.append(_sha(last))
    _layout_with(tmp_path / "layout", layers, diff_ids)
    ref = f"{registry.host}/{unique_repo('zstd-mixed')}:v1"
    skopeo("copy", "-q", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:v1",
           f"docker://{ref}")

    proc = mounts.rpull(ref)
    lines = sorted(_layer_lines(proc.stderr), key=lambda line: int(line.split()[1]))
    assert len(lines) == 4, proc.stderr
    assert ["NOT lazy" in line for line in lines] == [True, False, False, True], lines
    assert all(": lazy (TOC" in line for line in lines[1:3]), lines
    mount = Path(proc.stdout.strip())
    assert (mount / "etc/esgz.txt").read_bytes() == b"from eStargz\n"
    assert (mount / "etc/zstd.txt").read_bytes() == b"from zstd:chunked\n"
    assert (mount / "etc/shared.txt").read_bytes() == b"new\n"
    assert (mount / "etc/plain-zstd.txt").read_bytes() == b"from plain zstd\n"
    assert not LANDMARKS & {p.name for p in mount.iterdir()}
    run = subprocess.run(["chroot", str(mount), "/bin/sh", "-c", "cat /etc/zstd.txt"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.stdout == "from zstd:chunked\n", run.stderr


def test_we_pull_verify_and_mount_what_go_ctr_remote_converts(
        images: Images, mounts: Mounts, go_harness: Path, tmp_path: Path) -> None:
    theirs = f"{images.host}/{unique_repo('zstd-go')}:v1"
    with go_peer() as peer:
        peer.ctr("i", "pull", "--plain-http", images.source)
        peer.ctr("i", "convert", "--oci", "--zstdchunked", images.source, theirs)
        peer.ctr("i", "push", "--plain-http", theirs)
    check_zstdchunked(theirs, go_harness)

    cli = Cli.at(tmp_path)
    cli("pull", "-q", theirs)
    rows = json.loads(cli("inspect", "--json", theirs))["layers"]
    assert [(r["estargz"], r["footer"]) for r in rows] == [(True, "zstdchunked")] * 2, rows
    manifest = _inspect(theirs, "--raw")
    for desc in manifest["layers"]:  # every file verified by our reader
        blob = cli.root / "blobs" / "sha256" / desc["digest"][7:]
        reader = open_blob(str(blob), annotations=desc["annotations"]).verify_toc(
            desc["annotations"][TOC_JSON_DIGEST_ANNOTATION])
        assert reader.verify()

    proc = mounts.rpull(theirs)
    assert "2 of 2 layers lazy" in proc.stderr, proc.stderr
    mount = Path(proc.stdout.strip())
    want = snapshot(umoci_rootfs(images.source, tmp_path / "umoci"))
    assert_same_tree(snapshot(mount), want, "Go zstd:chunked mount")


def test_go_snapshotter_lazily_runs_our_zstdchunked_image(images: Images) -> None:
    ours, _ = _convert(images, "for-go")
    assert_go_runs_lazily(ours)
