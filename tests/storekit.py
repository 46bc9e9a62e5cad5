"""Small real images for the store tests: layer tars, configs, manifests and indexes.

Shared by the ``test_store_*`` modules (it holds no tests itself).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

from estargz.image.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
)
from estargz.image.model import Descriptor, Index, Manifest, Platform, dumps, parse_document
from estargz.store import ImageStore

__all__ = ["config_bytes", "layer_tar", "make_image", "make_index", "assert_complete", "sha256"]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A deterministic layer: the given regular files (parent directories added)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({n.rsplit("/", 1)[0] for n in files if "/" in n})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_bytes(layers: list[bytes], platform: Platform | None = None) -> bytes:
    platform = platform or Platform("linux", "amd64")
    doc = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in layers]},
        "created": "2024-01-02T03:04:05Z",
        "history": [{"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"}
                    for i in range(len(layers))],
    }
    if platform.variant:
        doc["variant"] = platform.variant
    return dumps(doc)


def make_image(
    store: ImageStore,
    seed: str,
    *,
    layers: int = 2,
    gzipped: bool = True,
    docker: bool = False,
    platform: Platform | None = None,
) -> Descriptor:
    """Put a ``layers``-layer image into ``store`` (unnamed); returns its manifest descriptor."""
    tars = [layer_tar({f"{seed}/file{i}.txt": f"{seed} layer {i}\n".encode() * 50,
                       f"common/{i}": b"shared"}) for i in range(layers)]
    blobs = [gzip.compress(t, mtime=0) if gzipped else t for t in tars]
    if docker:
        layer_type, config_type, manifest_type = DOCKER_LAYER_GZIP, DOCKER_CONFIG, DOCKER_MANIFEST
    else:
        layer_type = OCI_LAYER_GZIP if gzipped else OCI_LAYER_TAR
        config_type, manifest_type = OCI_CONFIG, OCI_MANIFEST
    layer_descs = [Descriptor(layer_type, store.put_blob(b), len(b)) for b in blobs]
    config = config_bytes(tars, platform)
    config_desc = Descriptor(config_type, store.put_blob(config), len(config))
    raw = Manifest(manifest_type, config_desc, layer_descs).to_bytes()
    return Descriptor(manifest_type, store.put_blob(raw), len(raw), platform=platform)


def make_index(store: ImageStore, manifests: list[Descriptor]) -> Descriptor:
    raw = Index(OCI_INDEX, manifests).to_bytes()
    return Descriptor(OCI_INDEX, store.put_blob(raw), len(raw))


def assert_complete(store: ImageStore, top: Descriptor) -> list[str]:
    """Every blob of the image is present and hashes to its digest; returns the digests."""
    seen = []
    stack = [top]
    while stack:
        desc = stack.pop()
        data = store.read_blob(desc.digest)  # verifies the digest
        assert len(data) == desc.size, (desc.digest, len(data), desc.size)
        seen.append(desc.digest)
        if desc.media_type in (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST):
            doc = parse_document(data, desc.media_type)
            stack += doc.manifests if isinstance(doc, Index) else [doc.config, *doc.layers]
    return seen
