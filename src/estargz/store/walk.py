"""The blobs an image is made of: the graph from an index or manifest down to configs and layers.

Garbage collection, export and import all need the same walk. It works on any source of
documents, so it serves an on-disk layout, a tar archive and the store alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from estargz.image.mediatypes import INDEX_TYPES, MANIFEST_TYPES
from estargz.image.model import Descriptor, Index, parse_document

__all__ = ["DOCUMENT_TYPES", "children", "walk"]

DOCUMENT_TYPES = MANIFEST_TYPES | INDEX_TYPES
"""Media types whose blobs name other blobs."""


def children(desc: Descriptor, data: bytes) -> list[Descriptor]:
    """The descriptors a manifest (config, layers) or an index (manifests) refers to."""
    doc = parse_document(data, desc.media_type, f"{desc.media_type or 'document'} {desc.digest}")
    if isinstance(doc, Index):
        return list(doc.manifests)
    return [doc.config, *doc.layers]


def walk(top: Descriptor, fetch: Callable[[Descriptor], bytes | None]) -> Iterator[Descriptor]:
    """``top`` and every descriptor reachable from it, each digest once, parents first.

    ``fetch`` returns a document's bytes, or None if they are not available; such a document is
    still yielded (it is referenced) but not descended into.
    """
    seen: set[str] = set()
    stack = [top]
    while stack:
        desc = stack.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        yield desc
        if desc.media_type in DOCUMENT_TYPES:
            data = fetch(desc)
            if data is not None:
                stack.extend(reversed(children(desc, data)))
