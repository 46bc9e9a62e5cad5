"""Small real images for the image tests: a busybox-static root filesystem in two layers.

The second layer deletes a file of the first with an OCI whiteout and adds files, so a lazy
mount or an unpack has real layering to get right. Images are written as OCI layouts (which
skopeo can copy into a registry) with OCI or Docker schema 2 media types.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pathlib
import tarfile
from typing import Any

BUSYBOX = pathlib.Path("/bin/busybox")
APPLETS = ("sh", "cat", "ls", "echo", "true", "env", "sleep", "head", "wc", "sha256sum")
MTIME = 1_700_000_000
HELLO = b"hello from layer two\n"

OCI = {
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}
DOCKER = {
    "manifest": "application/vnd.docker.distribution.manifest.v2+json",
    "config": "application/vnd.docker.container.image.v1+json",
    "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            info.mtime = MTIME
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o777 if kind == tarfile.SYMTYPE else 0o644
    return info, None


def busybox_layers() -> list[bytes]:
    """Two uncompressed layer tars: the busybox root, then a change set with a whiteout."""
    one = _tar(
        [
            _dir("bin/"),
            _file("bin/busybox", BUSYBOX.read_bytes(), 0o755),
            *[_link(f"bin/{a}", "busybox") for a in APPLETS],
            _dir("etc/"),
            _file("etc/os-release", b'NAME="estargz test image"\n'),
            _file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            _file("etc/removed-later", b"this file is deleted by layer two\n"),
            _dir("tmp/", 0o1777),
            _dir("root/", 0o700),
            _file("data/big.bin", bytes(range(256)) * 40_000),  # 10 MB: several chunks
        ]
    )
    two = _tar(
        [
            _dir("etc/"),
            _file("etc/.wh.removed-later", b""),
            _file("etc/hello.txt", HELLO),
            _link("etc/hello-hardlink", "etc/hello.txt", tarfile.LNKTYPE),
            _dir("opt/"),
            _dir("opt/app/"),
            _file("opt/app/run.sh", b"#!/bin/sh\necho app\n", 0o755),
        ]
    )
    return [one, two]


def write_oci_layout(
    layout: pathlib.Path, tag: str, layers: list[bytes], *, docker: bool = False
) -> str:
    """Write (or add to) an OCI layout holding one image; returns the manifest digest."""
    types = DOCKER if docker else OCI
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest[7:]).write_bytes(data)
        return digest

    layer_descs = []
    for raw in layers:
        gz = gzip.compress(raw, 6, mtime=0)
        layer_descs.append({"mediaType": types["layer"], "digest": put(gz), "size": len(gz)})
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(raw) for raw in layers]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config_raw = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": types["manifest"],
        "config": {"mediaType": types["config"], "digest": put(config_raw),
                   "size": len(config_raw)},
        "layers": layer_descs,
    }
    manifest_raw = json.dumps(manifest).encode()
    digest = put(manifest_raw)
    index_path = layout / "index.json"
    index = (json.loads(index_path.read_text()) if index_path.exists()
             else {"schemaVersion": 2, "manifests": []})
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                          != tag]
    index["manifests"].append({
        "mediaType": types["manifest"], "digest": digest, "size": len(manifest_raw),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    })
    index_path.write_text(json.dumps(index))
    return digest
