"""A consistency check of the store: what a crash or a damaged disk could have left.

The write order of :mod:`estargz.store.layout` promises that a process killed at any moment
leaves every named image whole and nothing worse than temporaries and unnamed blobs. This
check verifies the promise from the files alone, reading every blob: each blob's content
matches its digest, every name leads to a manifest or index that is present and parses, every
manifest present has its config, and (unless the image was pulled lazily) its layers.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from estargz.errors import EstargzError
from estargz.image.model import Descriptor, Index, parse_document
from estargz.store.layout import ImageStore
from estargz.store.walk import DOCUMENT_TYPES

__all__ = ["StoreReport", "check_store"]


@dataclass
class StoreReport:
    """``problems`` make the store inconsistent; the counts only describe it."""

    blobs: int = 0
    images: int = 0
    lazy_layers: int = 0
    """Layers named images refer to but the store does not hold (fetched on demand)."""
    unreferenced: int = 0
    """Blobs no name reaches: gc removes them."""
    temporaries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.problems


def _blob_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _check_blobs(store: ImageStore, report: StoreReport) -> set[str]:
    present: set[str] = set()
    blobs = store.root / "blobs"
    for algorithm in sorted(os.listdir(blobs)):
        for name in sorted(os.listdir(blobs / algorithm)):
            digest = f"{algorithm}:{name}"
            report.blobs += 1
            if algorithm != "sha256":
                report.problems.append(f"blob {digest}: unknown digest algorithm")
                continue
            got = _blob_digest(str(blobs / algorithm / name))
            if got != digest:
                report.problems.append(f"blob {digest}: content hashes to {got} (corrupt)")
                continue
            present.add(digest)
    return present


def _check_image(store: ImageStore, name: str, top: Descriptor, present: set[str],
                 report: StoreReport, reached: set[str]) -> None:
    if top.digest not in present:
        report.problems.append(f"image {name}: {top.digest} is missing (a dangling name)")
        return
    stack = [top]
    while stack:
        desc = stack.pop()
        if desc.digest in reached:
            continue
        reached.add(desc.digest)
        try:
            doc = parse_document(store.read_blob(desc.digest), desc.media_type, desc.digest)
        except EstargzError as exc:
            report.problems.append(f"image {name}: {exc}")
            continue
        if isinstance(doc, Index):  # (an index may hold some platforms only)
            stack.extend(m for m in doc.manifests if m.digest in present)
            continue
        if doc.config.digest not in present:
            report.problems.append(f"image {name}: config {doc.config.digest} is missing")
        reached.add(doc.config.digest)
        for layer in doc.layers:
            reached.add(layer.digest)
            if layer.digest not in present:
                report.lazy_layers += 1
            elif layer.media_type in DOCUMENT_TYPES:
                stack.append(layer)


def check_store(store: ImageStore) -> StoreReport:
    """Read everything the store holds and report what is wrong (nothing is changed)."""
    report = StoreReport()
    present = _check_blobs(store, report)
    reached: set[str] = set()
    try:
        images = store.list_images()
    except EstargzError as exc:
        report.problems.append(f"index.json: {exc}")
        images = []
    for record in images:
        report.images += 1
        _check_image(store, record.name, record.descriptor, present, report, reached)
    report.unreferenced = len(present - reached)
    ingest = store.root / "ingest"
    report.temporaries = len(os.listdir(ingest)) if ingest.is_dir() else 0
    return report
