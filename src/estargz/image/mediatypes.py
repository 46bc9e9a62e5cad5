"""Media types of OCI and Docker schema 2 images, and how they map onto each other."""

from __future__ import annotations

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_TAR",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "LAYER_GZIP_TYPES",
    "LAYER_LAZY_TYPES",
    "LAYER_TAR_TYPES",
    "LAYER_ZSTD_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_TAR",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "to_oci",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
LAYER_GZIP_TYPES = frozenset({OCI_LAYER_GZIP, DOCKER_LAYER_GZIP})
LAYER_TAR_TYPES = frozenset({OCI_LAYER_TAR, DOCKER_LAYER_TAR})
LAYER_ZSTD_TYPES = frozenset({OCI_LAYER_ZSTD})
LAYER_LAZY_TYPES = LAYER_GZIP_TYPES | LAYER_ZSTD_TYPES
"""Layers that can be eStargz (gzip) or zstd:chunked (zstd), so may be pulled lazily."""

_TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER_TAR: OCI_LAYER_TAR,
}


def to_oci(media_type: str) -> str:
    """The OCI equivalent of a Docker media type (OCI and unknown types are returned as is)."""
    return _TO_OCI.get(media_type, media_type)
