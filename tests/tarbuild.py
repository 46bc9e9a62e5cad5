"""Tiny in-memory tars for the unit tests, and a one-call conversion."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from typing import Any

from estargz.format import (
    BuildOptions,
    BuildResult,
    build,
    build_toc_blob,
    estargz_footer,
    open_blob,
    parse_footer,
)

__all__ = ["MTIME", "Item", "convert", "make_tar", "member", "with_toc", "with_toc_json"]

MTIME = 1_700_000_000
Item = tuple[tarfile.TarInfo, bytes]


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> Item:
    """One entry: mode 0755 for directories, 0644 otherwise, unless ``attrs`` say else."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, len(data), MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def make_tar(*items: Item) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in items:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def convert(tar: bytes, **options: Any) -> tuple[bytes, BuildResult]:
    """Build ``tar`` with ``BuildOptions(**options)``; returns the blob and the result."""
    out = io.BytesIO()
    result = build(io.BytesIO(tar), out, BuildOptions(**options))
    return out.getvalue(), result


def with_toc(blob: bytes, mutate: Callable[[list[dict[str, Any]]], object]) -> bytes:
    """The same blob with its TOC entries edited: data members kept, TOC member rewritten."""
    doc = json.loads(open_blob(blob).toc_json)
    mutate(doc["entries"])
    return with_toc_json(blob, json.dumps(doc).encode())


def with_toc_json(blob: bytes, toc_json: bytes) -> bytes:
    toc_offset = parse_footer(blob[-51:]).toc_offset
    assert toc_offset is not None
    return blob[:toc_offset] + build_toc_blob(toc_json) + estargz_footer(toc_offset)
