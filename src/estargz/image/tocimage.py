"""The TOC image of external-TOC layers: ``<ref>-esgztoc``, one TOC layer per eStargz layer.

Its manifest has an empty ``{}`` config and one ``tar+gzip`` layer per eStargz layer, holding
only ``stargz.index.json`` and annotated with the eStargz blob's digest; layers are sorted by
their own digest, so the same TOCs always give the same manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from estargz.format.types import TOC_LAYER_DIGEST_ANNOTATION
from estargz.image.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from estargz.image.model import Descriptor, Manifest, parse_document

__all__ = ["TOC_IMAGE_SUFFIX", "TocLayer", "build_toc_image", "find_toc_layer", "toc_image_name"]

TOC_IMAGE_SUFFIX = "-esgztoc"
_EMPTY_CONFIG = b"{}"


class _PutBlob(Protocol):
    def put_blob(self, data: bytes, expected_digest: str | None = None) -> str: ...


@dataclass(frozen=True, slots=True)
class TocLayer:
    layer_digest: str
    """Digest of the eStargz blob this TOC describes."""
    toc_blob: bytes
    """The TOC as a tar.gz holding ``stargz.index.json``."""


def toc_image_name(name: str) -> str:
    """``registry/repo:tag`` -> ``registry/repo:tag-esgztoc`` (the tag carries the suffix)."""
    base, at, _ = name.partition("@")
    if at:
        raise ValueError(
            f"{name!r} is pinned by digest: the TOC image name cannot be derived from it "
            "(give the TOC image reference explicitly)"
        )
    slash = base.rfind("/")
    colon = base.rfind(":")
    if colon > slash:
        return base + TOC_IMAGE_SUFFIX
    return base + ":latest" + TOC_IMAGE_SUFFIX


def build_toc_image(store: _PutBlob, layers: Sequence[TocLayer]) -> Descriptor:
    """Store the TOC layers, the empty config and the manifest; return the manifest."""
    descs = []
    for layer in layers:
        digest = store.put_blob(layer.toc_blob)
        descs.append(
            Descriptor(
                OCI_LAYER_GZIP,
                digest,
                len(layer.toc_blob),
                {TOC_LAYER_DIGEST_ANNOTATION: layer.layer_digest},
            )
        )
    descs.sort(key=lambda d: d.digest)
    config = Descriptor(OCI_CONFIG, store.put_blob(_EMPTY_CONFIG), len(_EMPTY_CONFIG))
    raw = Manifest(OCI_MANIFEST, config, descs).to_bytes()
    return Descriptor(OCI_MANIFEST, store.put_blob(raw), len(raw))


def find_toc_layer(manifest_bytes: bytes, layer_digest: str) -> Descriptor | None:
    """The TOC layer of a TOC image that belongs to the eStargz blob ``layer_digest``."""
    doc = parse_document(manifest_bytes, OCI_MANIFEST, "TOC image manifest")
    if not isinstance(doc, Manifest):
        return None
    for layer in doc.layers:
        if layer.annotations.get(TOC_LAYER_DIGEST_ANNOTATION) == layer_digest:
            return layer
    return None
