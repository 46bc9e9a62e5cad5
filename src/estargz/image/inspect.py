"""Is this layer lazily pullable, and if not, why not? One answer per layer, with its numbers.

The reasons are the point: a layer that silently falls back to a full pull is the most common
complaint about lazy pulling, so every refusal here says what is missing and what would fix it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from estargz.errors import EstargzError, InvalidTOC
from estargz.format import BlobSource, open_blob
from estargz.format.types import TOC_JSON_DIGEST_ANNOTATION
from estargz.image.mediatypes import LAYER_LAZY_TYPES
from estargz.image.model import Descriptor

__all__ = ["LayerInspection", "inspect_layer"]


@dataclass(slots=True)
class LayerInspection:
    digest: str
    media_type: str
    size: int
    estargz: bool
    reason: str
    toc_digest: str = ""
    entries: int = 0
    files: int = 0
    prefetch_size: int = 0
    footer: str = ""
    inner_offset: bool = False
    source_size: int | None = None

    @property
    def overhead(self) -> float | None:
        """Size relative to the plain gzip layer this one was converted from, when known."""
        if not self.source_size:
            return None
        return self.size / self.source_size - 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["overhead"] = self.overhead
        return out


def inspect_layer(
    source: BlobSource,
    desc: Descriptor,
    *,
    toc_blob: bytes | None = None,
    source_size: int | None = None,
) -> LayerInspection:
    """Open the layer's footer and TOC (reading only those bytes) and judge it."""
    info = LayerInspection(desc.digest, desc.media_type, desc.size, False, "",
                           source_size=source_size)
    if desc.media_type not in LAYER_LAZY_TYPES:
        info.reason = f"media type {desc.media_type} is not a gzip or zstd layer"
        return info
    try:
        blob = open_blob(source, external_toc=toc_blob, annotations=desc.annotations)
    except EstargzError as exc:
        if isinstance(exc, InvalidTOC) and exc.needs_external_toc:
            info.footer = "external"
            info.reason = "external TOC, and no TOC image with this layer was found"
            return info
        info.reason = f"not eStargz or zstd:chunked: {exc}"
        return info
    info.footer = blob.footer.kind
    info.toc_digest = blob.toc_digest
    info.entries = len(blob.entries)
    info.files = sum(1 for e in blob.entries if e.type == "reg")
    info.inner_offset = any(e.inner_offset for e in blob.entries)
    want = desc.annotations.get(TOC_JSON_DIGEST_ANNOTATION)
    if not want:
        info.reason = (
            f"no {TOC_JSON_DIGEST_ANNOTATION} annotation, so the TOC cannot be trusted "
            "(Docker media types drop annotations: convert with --oci)"
        )
        return info
    try:
        reader = blob.verify_toc(want)
    except EstargzError as exc:
        info.reason = f"TOC does not match the annotation: {exc}"
        return info
    info.prefetch_size = reader.prefetch_size
    info.estargz = True
    info.reason = "lazy"
    return info
