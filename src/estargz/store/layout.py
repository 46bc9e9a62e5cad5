"""The local image store: an OCI image layout on disk that several processes share safely.

::

    <root>/
      oci-layout                 {"imageLayoutVersion": "1.0.0"}
      index.json                 one descriptor per named image (name, tag, created annotations)
      blobs/<alg>/<hex>          content-addressed, read-only, written once
      ingest/                    temporary files; a crash leaves half-written data only here
      meta/<alg>/<hex>/<key>     small files about a blob (e.g. a cached TOC)
      lock                       held while index.json is read, modified and written back
      gc.lock                    shared by leases, exclusive while gc() deletes

Invariants, kept by the write order rather than by recovery code: a blob is committed (fsynced,
renamed, directory fsynced) before index.json can name it, and index.json is replaced in one
rename. So a process killed at any moment leaves index.json old or new, every named image whole,
and nothing worse than temporaries in ``ingest/`` and unnamed blobs, both of which gc() removes.
Readers take no lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from estargz.digest import check_digest, sha256_digest
from estargz.errors import BlobNotFound, ImageNotFound, StoreError
from estargz.format.source import FileSource
from estargz.image.mediatypes import OCI_INDEX
from estargz.image.model import Descriptor, Index, InvalidDocument, loads, parse_document
from estargz.paths import default_store_root
from estargz.store.fsutil import locked, write_atomic
from estargz.store.ingest import BlobWriter, split_digest
from estargz.store.names import normalize_name, split_name
from estargz.store.walk import DOCUMENT_TYPES, walk

__all__ = [
    "CREATED_ANNOTATION",
    "INGEST_MAX_AGE",
    "NAME_ANNOTATION",
    "REF_NAME_ANNOTATION",
    "GCResult",
    "ImageRecord",
    "ImageStore",
]

NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CREATED_ANNOTATION = "io.estargz.created"
_STORE_ANNOTATIONS = frozenset({NAME_ANNOTATION, REF_NAME_ANNOTATION, CREATED_ANNOTATION})

INGEST_MAX_AGE = 3600.0
"""Seconds after which gc() treats a temporary file as left behind by a dead process."""

_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_OWN_NAMES = frozenset({"oci-layout", "index.json", "blobs", "ingest", "meta", "lock", "gc.lock"})
_META_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_leases = threading.local()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """A named image: its top descriptor (manifest or index) and when the name was set."""

    name: str
    descriptor: Descriptor
    created: datetime | None


@dataclass(frozen=True, slots=True)
class GCResult:
    """What one gc() removed."""

    blobs: int = 0
    freed_bytes: int = 0
    ingest_files: int = 0
    meta_dirs: int = 0


class ImageStore:
    """Blobs and named images under one root directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root)
        self._index = self.root / "index.json"
        self._ingest = self.root / "ingest"
        self._lock = self.root / "lock"
        self._gc_lock = self.root / "gc.lock"
        layout = self.root / "oci-layout"
        if create:
            self._create(layout)
        try:
            version = loads(layout.read_bytes(), str(layout)).get("imageLayoutVersion")
        except (OSError, InvalidDocument):
            version = None
        if not isinstance(version, str) or not version.startswith("1.") or not (
            self._index.is_file() and self._ingest.is_dir()
        ):
            raise StoreError(f"{self.root} is not an estargz image store")

    def _create(self, layout: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not layout.exists():
            strangers = sorted(p.name for p in self.root.iterdir() if p.name not in _OWN_NAMES)
            if strangers:
                raise StoreError(
                    f"{self.root} holds other files ({', '.join(strangers[:3])}); "
                    "not creating an image store there"
                )
        for d in (self.root / "blobs" / "sha256", self._ingest, self.root / "meta"):
            d.mkdir(parents=True, exist_ok=True)
        if not (layout.exists() and self._index.exists()):
            with locked(self._lock):  # another process may be creating the store right now
                if not layout.exists():
                    write_atomic(layout, _LAYOUT, tmpdir=self._ingest)
                if not self._index.exists():
                    self._write_index(Index(OCI_INDEX, []))

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r})"

    @staticmethod
    def default_root() -> Path:
        """``$ESTARGZ_ROOT``, else ``/var/lib/estargz`` for root, else the XDG data dir."""
        return Path(default_store_root())

    # --- blobs ------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob lives (whether or not it is there). Never write to it."""
        algorithm, hexdigest = split_digest(digest)
        return self.root / "blobs" / algorithm / hexdigest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is not in the store") from None

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is not in the store") from None

    def blob_source(self, digest: str) -> FileSource:
        """The blob as a random-access source (for the format reader); close it when done."""
        try:
            return FileSource(self.blob_path(digest))
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is not in the store") from None

    def read_blob(self, digest: str, *, verify: bool = True) -> bytes:
        """The whole blob, checked against its digest: meant for manifests and configs."""
        with self.open_blob(digest) as f:
            data = f.read()
        if verify:
            check_digest(data, digest, f"blob {digest} in {self.root}")
        return data

    @contextmanager
    def ingest(
        self, expected_digest: str | None = None, expected_size: int | None = None
    ) -> Iterator[BlobWriter]:
        """A writer for a new blob; only :meth:`BlobWriter.commit` makes it part of the store.

        Leaving the block without committing, or by an exception, discards the data.
        """
        writer = BlobWriter(self._ingest, self.blob_path, expected_digest, expected_size)
        try:
            yield writer
        finally:
            writer.abort()

    def put_blob(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store ``data`` (verified against ``expected_digest`` if given); returns its digest."""
        if expected_digest is not None:
            check_digest(data, expected_digest, f"blob {expected_digest}")
        digest = expected_digest or sha256_digest(data)
        try:
            if self.blob_path(digest).stat().st_size == len(data):
                return digest
        except FileNotFoundError:
            pass
        with self.ingest(digest, len(data)) as writer:
            writer.write(data)
            return writer.commit()

    # --- per-blob metadata ------------------------------------------------------------------

    def _meta_path(self, digest: str, key: str) -> Path:
        if not _META_KEY.fullmatch(key):
            raise StoreError(f"metadata key {key!r} must match {_META_KEY.pattern}")
        algorithm, hexdigest = split_digest(digest)
        return self.root / "meta" / algorithm / hexdigest / key

    def put_meta(self, digest: str, key: str, data: bytes) -> None:
        """Attach ``data`` to a blob (local or not); gc() drops it once no image uses the blob."""
        path = self._meta_path(digest, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, tmpdir=self._ingest)

    def get_meta(self, digest: str, key: str) -> bytes | None:
        try:
            return self._meta_path(digest, key).read_bytes()
        except FileNotFoundError:
            return None

    # --- named images -----------------------------------------------------------------------

    def _read_index(self) -> Index:
        return Index.from_dict(loads(self._index.read_bytes(), str(self._index)), str(self._index))

    def _write_index(self, index: Index) -> None:
        write_atomic(self._index, index.to_bytes(), tmpdir=self._ingest)

    @contextmanager
    def _transaction(self) -> Iterator[list[Descriptor]]:
        """Read-modify-write of index.json's entries, excluding every other writer."""
        with locked(self._lock):
            index = self._read_index()
            entries = list(index.manifests)
            yield entries
            if entries != index.manifests:
                self._write_index(replace(index, manifests=entries))

    @staticmethod
    def _record(entry: Descriptor) -> ImageRecord | None:
        name = entry.annotations.get(NAME_ANNOTATION)
        if not name:
            return None
        kept = {k: v for k, v in entry.annotations.items() if k not in _STORE_ANNOTATIONS}
        created = _parse_time(entry.annotations.get(CREATED_ANNOTATION))
        return ImageRecord(name, replace(entry, annotations=kept), created)

    def list_images(self) -> list[ImageRecord]:
        records = (self._record(e) for e in self._read_index().manifests)
        return sorted((r for r in records if r is not None), key=lambda r: r.name)

    def get_image(self, name: str) -> Descriptor:
        """The descriptor set for ``name`` (without the store's own annotations)."""
        return self._find(self._read_index().manifests, normalize_name(name)).descriptor

    def _find(self, entries: list[Descriptor], name: str) -> ImageRecord:
        for entry in entries:
            if entry.annotations.get(NAME_ANNOTATION) == name:
                record = self._record(entry)
                assert record is not None
                return record
        raise ImageNotFound(f"no image named {name!r} in {self.root}")

    def set_images(
        self, images: Mapping[str, Descriptor], *, require_layers: bool = True
    ) -> None:
        """Name several images in one atomic update of index.json (replacing older entries).

        Every blob an image needs must already be in the store: its manifest or index, the
        config and, unless ``require_layers`` is false (a lazily pulled image), the layers. The
        manifests of an index may be present in part, one platform for example.
        """
        named = {normalize_name(n): d for n, d in images.items()}
        created = _now()
        with self._transaction() as entries:
            for name, desc in named.items():
                self._check_complete(name, desc, require_layers)
            kept = [e for e in entries if e.annotations.get(NAME_ANNOTATION) not in named]
            for name, desc in named.items():
                annotations = {k: v for k, v in desc.annotations.items()
                               if k not in _STORE_ANNOTATIONS}
                annotations[NAME_ANNOTATION] = name
                tag = split_name(name)[1]
                if tag:
                    annotations[REF_NAME_ANNOTATION] = tag
                annotations[CREATED_ANNOTATION] = created
                kept.append(replace(desc, annotations=annotations))
            entries[:] = sorted(kept, key=lambda e: e.annotations.get(NAME_ANNOTATION, ""))

    def _check_complete(self, name: str, top: Descriptor, require_layers: bool) -> None:
        if not self.has_blob(top.digest):
            raise BlobNotFound(f"image {name}: {top.digest} is not in the store")
        seen: set[str] = set()
        stack = [top]
        while stack:
            desc = stack.pop()
            if desc.digest in seen or desc.media_type not in DOCUMENT_TYPES:
                continue
            seen.add(desc.digest)
            doc = parse_document(self.read_blob(desc.digest), desc.media_type, desc.digest)
            if isinstance(doc, Index):
                stack.extend(m for m in doc.manifests if self.has_blob(m.digest))
                continue
            needed = [doc.config, *doc.layers] if require_layers else [doc.config]
            missing = [d.digest for d in needed if not self.has_blob(d.digest)]
            if missing:
                raise BlobNotFound(
                    f"image {name}: manifest {desc.digest} needs blobs the store does not have: "
                    + ", ".join(missing)
                )

    def remove_image(self, name: str) -> None:
        """Forget the name; the blobs stay until gc()."""
        name = normalize_name(name)
        with self._transaction() as entries:
            self._find(entries, name)
            entries[:] = [e for e in entries if e.annotations.get(NAME_ANNOTATION) != name]

    def tag(self, src: str, dst: str) -> Descriptor:
        """Give the image named ``src`` a second name ``dst`` (replacing what ``dst`` named)."""
        src, dst = normalize_name(src), normalize_name(dst)
        with self._transaction() as entries:
            desc = self._find(entries, src).descriptor
            kept = [e for e in entries if e.annotations.get(NAME_ANNOTATION) != dst]
            annotations = {**desc.annotations, NAME_ANNOTATION: dst, CREATED_ANNOTATION: _now()}
            tag = split_name(dst)[1]
            if tag:
                annotations[REF_NAME_ANNOTATION] = tag
            kept.append(replace(desc, annotations=annotations))
            entries[:] = sorted(kept, key=lambda e: e.annotations.get(NAME_ANNOTATION, ""))
        return desc

    # --- garbage collection -----------------------------------------------------------------

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Protect blobs and metadata written in the block from gc() until an image names them.

        Without a lease, a gc() in another process could delete a freshly committed blob before
        set_images() names it (set_images() would then refuse). gc() waits for every lease to end,
        so calling it inside a lease in the same thread is an error.
        """
        with locked(self._gc_lock, shared=True):
            _leases.depth = getattr(_leases, "depth", 0) + 1
            try:
                yield
            finally:
                _leases.depth -= 1

    def _fetch_present(self, desc: Descriptor) -> bytes | None:
        return self.read_blob(desc.digest) if self.has_blob(desc.digest) else None

    def gc(self, *, ingest_max_age: float = INGEST_MAX_AGE) -> GCResult:
        """Delete blobs and metadata no named image references, and stale temporary files.

        Temporaries younger than ``ingest_max_age`` seconds may belong to a live writer; pass 0
        only when nothing else writes to the store. A named image whose manifest or index is
        corrupt stops gc() (DigestMismatch) rather than let it guess what the image needs.
        """
        if getattr(_leases, "depth", 0):
            raise StoreError("gc() inside lease() would wait for itself")
        with locked(self._gc_lock), locked(self._lock):
            return self._collect(ingest_max_age)

    def collect_if_idle(self) -> GCResult | None:
        """gc(), unless another process holds a lease or collects: then None, at once.

        For the end of a failed or interrupted command, so that what it wrote and no image
        names goes away, without making the failing command wait for others' work (which
        the next gc() or ``i rm`` collects instead).
        """
        if getattr(_leases, "depth", 0):
            return None  # (our own lease: the command has not let go of its blobs yet)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(locked(self._gc_lock, wait=False))
            except BlockingIOError:
                return None
            held.enter_context(locked(self._lock))
            return self._collect(INGEST_MAX_AGE)

    def _collect(self, ingest_max_age: float) -> GCResult:
        """The collection itself; the caller holds both locks."""
        referenced: set[str] = set()
        for entry in self._read_index().manifests:
            referenced.update(d.digest for d in walk(entry, self._fetch_present))
        blobs = freed = metas = stale = 0
        for algorithm_dir in sorted((self.root / "blobs").iterdir()):
            for path in sorted(algorithm_dir.iterdir()):
                if f"{algorithm_dir.name}:{path.name}" not in referenced:
                    freed += path.stat().st_size
                    path.unlink()
                    blobs += 1
        for algorithm_dir in sorted((self.root / "meta").iterdir()):
            for path in sorted(algorithm_dir.iterdir()):
                if f"{algorithm_dir.name}:{path.name}" not in referenced:
                    shutil.rmtree(path)
                    metas += 1
        cutoff = time.time() - ingest_max_age
        for path in self._ingest.iterdir():
            if path.lstat().st_mtime <= cutoff:
                path.unlink(missing_ok=True)
                stale += 1
        return GCResult(blobs, freed, stale, metas)
