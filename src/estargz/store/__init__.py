"""The local image store: blobs and named images in an OCI image layout on disk.

:class:`ImageStore` owns the layout (blobs, names, per-blob metadata, garbage collection);
:mod:`~estargz.store.transfer` and :mod:`~estargz.store.dockerarchive` move images between it
and OCI layouts or ``docker save`` archives; :func:`normalize_name` gives every name its one
canonical spelling.
"""

from __future__ import annotations

from estargz._exports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from estargz.store.dockerarchive import export_docker_archive, import_docker_archive
    from estargz.store.ingest import BlobWriter
    from estargz.store.layout import (
        CREATED_ANNOTATION,
        NAME_ANNOTATION,
        REF_NAME_ANNOTATION,
        GCResult,
        ImageRecord,
        ImageStore,
    )
    from estargz.store.names import familiar_name, normalize_name, split_name
    from estargz.store.transfer import export_oci_layout, import_oci_layout

__all__ = [
    "CREATED_ANNOTATION",
    "NAME_ANNOTATION",
    "REF_NAME_ANNOTATION",
    "BlobWriter",
    "GCResult",
    "ImageRecord",
    "ImageStore",
    "export_docker_archive",
    "export_oci_layout",
    "familiar_name",
    "import_docker_archive",
    "import_oci_layout",
    "normalize_name",
    "split_name",
]

__getattr__ = lazy_exports(__name__, globals(), {
    "estargz.store.dockerarchive": ("export_docker_archive", "import_docker_archive"),
    "estargz.store.ingest": ("BlobWriter",),
    "estargz.store.layout": (
        "CREATED_ANNOTATION", "NAME_ANNOTATION", "REF_NAME_ANNOTATION", "GCResult", "ImageRecord",
        "ImageStore",
    ),
    "estargz.store.names": ("familiar_name", "normalize_name", "split_name"),
    "estargz.store.transfer": ("export_oci_layout", "import_oci_layout"),
})
