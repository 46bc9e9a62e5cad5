"""Copying images between the store and OCI image layouts (a directory, or one inside a tar).

Blobs are copied as they are, verified against their descriptors on the way in, so manifests
keep their digests. An image is named only after all its blobs are in the store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Protocol

from estargz.digest import parse_digest
from estargz.errors import BlobNotFound, StoreError
from estargz.image.mediatypes import OCI_INDEX
from estargz.image.model import Descriptor, Index, InvalidDocument, loads
from estargz.store.fsutil import atomic_file, write_atomic
from estargz.store.layout import (
    CREATED_ANNOTATION,
    NAME_ANNOTATION,
    REF_NAME_ANNOTATION,
    ImageStore,
)
from estargz.store.names import normalize_name, split_name
from estargz.store.walk import DOCUMENT_TYPES, walk

__all__ = ["DirFiles", "LayoutFiles", "export_oci_layout", "import_layout", "import_oci_layout"]

_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_NAMING = (NAME_ANNOTATION, REF_NAME_ANNOTATION, CREATED_ANNOTATION)


class LayoutFiles(Protocol):
    """Read access to the files of a layout, wherever they are kept."""

    def open(self, name: str) -> IO[bytes] | None:
        """The file ``name`` (relative, ``/``-separated), or None if there is none."""
        ...


class DirFiles:
    """A layout in a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, name: str) -> IO[bytes] | None:
        try:
            return open(self.root / name, "rb")
        except FileNotFoundError:
            return None


def _blob_name(digest: str) -> str:
    algorithm, hexdigest = parse_digest(digest)
    return f"blobs/{algorithm}/{hexdigest}"


def _read(files: LayoutFiles, name: str) -> bytes | None:
    f = files.open(name)
    if f is None:
        return None
    with f:
        return f.read()


def _read_layout_index(files: LayoutFiles, what: str) -> Index:
    layout = _read(files, "oci-layout")
    raw = _read(files, "index.json")
    if layout is None or raw is None:
        raise StoreError(f"{what} is not an OCI image layout (no oci-layout or index.json)")
    version = loads(layout, f"{what}/oci-layout").get("imageLayoutVersion")
    if not isinstance(version, str) or not version.startswith("1."):
        raise StoreError(f"{what}: unsupported imageLayoutVersion {version!r}")
    return Index.from_dict(loads(raw, f"{what}/index.json"), f"{what}/index.json")


def _layout_name(entry: Descriptor) -> str | None:
    """The image name an index entry carries; a bare tag (``latest``) does not name an image."""
    name = entry.annotations.get(NAME_ANNOTATION)
    if name:
        return name
    ref = entry.annotations.get(REF_NAME_ANNOTATION, "")
    return ref if ("/" in ref or ":" in ref or "@" in ref) else None


def _unnamed(desc: Descriptor) -> Descriptor:
    return replace(desc, annotations={k: v for k, v in desc.annotations.items()
                                      if k not in _NAMING})


def import_layout(
    store: ImageStore, files: LayoutFiles, names: Sequence[str] | None, what: str
) -> dict[str, Descriptor]:
    """Copy the images of a layout into ``store`` and name them; returns ``{name: descriptor}``.

    With ``names``, the layout's index entries get those names, in order; without, each entry
    keeps the name its annotations give, and entries without one are skipped.
    """
    entries = _read_layout_index(files, what).manifests
    if names is not None:
        if len(names) != len(entries):
            raise StoreError(
                f"{what} holds {len(entries)} images but {len(names)} names were given"
            )
        chosen = [(normalize_name(n), e) for n, e in zip(names, entries, strict=True)]
    else:
        chosen = [(normalize_name(n), e) for e in entries if (n := _layout_name(e))]
        if not chosen:
            raise StoreError(f"{what}: no image in the layout carries a name; give names")

    def copy(desc: Descriptor) -> bool:
        if store.has_blob(desc.digest):
            return True
        src = files.open(_blob_name(desc.digest))
        if src is None:
            return False
        with src, store.ingest(desc.digest, desc.size) as writer:
            shutil.copyfileobj(src, writer, 1 << 20)
            writer.commit()
        return True

    def fetch(desc: Descriptor) -> bytes | None:
        return store.read_blob(desc.digest) if store.has_blob(desc.digest) else None

    images: dict[str, Descriptor] = {}
    with store.lease():
        for name, entry in chosen:
            top = _unnamed(entry)
            for desc in walk(top, fetch):
                # a missing manifest of an index is a platform the layout does not carry
                if not copy(desc) and (desc is top or desc.media_type not in DOCUMENT_TYPES):
                    raise BlobNotFound(f"{what}: blob {desc.digest} of {name} is missing")
            images[name] = top
        store.set_images(images)
    return images


def import_oci_layout(
    store: ImageStore, src: str | os.PathLike[str], names: Sequence[str] | None = None
) -> dict[str, Descriptor]:
    """Copy the images of the OCI layout directory ``src`` into ``store`` (see import_layout)."""
    return import_layout(store, DirFiles(Path(src)), names, os.fspath(src))


def export_oci_layout(
    store: ImageStore, names: Sequence[str], dst: str | os.PathLike[str]
) -> None:
    """Write the named images to the OCI layout ``dst``, creating it or adding to it.

    Each entry carries the full name (``io.containerd.image.name``) and the tag
    (``org.opencontainers.image.ref.name``), so ``skopeo ... oci:DST:TAG`` finds it; an existing
    entry with the same name or tag is replaced.
    """
    root = Path(dst)
    tops = {normalize_name(n): store.get_image(n) for n in names}
    root.mkdir(parents=True, exist_ok=True)
    try:
        index = _read_layout_index(DirFiles(root), os.fspath(root))
    except StoreError:
        if any(root.iterdir()):
            raise
        index = Index(OCI_INDEX, [])
    except InvalidDocument as exc:
        raise StoreError(f"{root}: {exc}") from exc

    def fetch(desc: Descriptor) -> bytes | None:
        return store.read_blob(desc.digest) if store.has_blob(desc.digest) else None

    new: list[Descriptor] = []
    for name, top in tops.items():
        for desc in walk(top, fetch):
            path = root / _blob_name(desc.digest)
            if path.exists():
                continue
            if not store.has_blob(desc.digest):
                if desc.media_type in DOCUMENT_TYPES and desc is not top:
                    continue  # a platform of an index that the store does not hold
                raise BlobNotFound(f"image {name}: blob {desc.digest} is not in the store")
            path.parent.mkdir(parents=True, exist_ok=True)
            with store.open_blob(desc.digest) as src, atomic_file(
                path, tmpdir=path.parent
            ) as out:
                shutil.copyfileobj(src, out, 1 << 20)
        tag = split_name(name)[1]
        annotations = {**top.annotations, NAME_ANNOTATION: name}
        if tag:
            annotations[REF_NAME_ANNOTATION] = tag
        new.append(replace(top, annotations=annotations))
    new_names = {d.annotations[NAME_ANNOTATION] for d in new}
    new_tags = {d.annotations.get(REF_NAME_ANNOTATION) for d in new} - {None}
    kept = [
        e for e in index.manifests
        if e.annotations.get(NAME_ANNOTATION) not in new_names
        and e.annotations.get(REF_NAME_ANNOTATION) not in new_tags
    ]
    layout = root / "oci-layout"
    if not layout.exists():
        write_atomic(layout, _LAYOUT, tmpdir=root)
    write_atomic(root / "index.json", replace(index, manifests=kept + new).to_bytes(),
                 tmpdir=root)
