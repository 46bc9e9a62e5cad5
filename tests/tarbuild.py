"""Tiny in-memory tars for the unit tests, and a one-call conversion."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
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

__all__ = ["MTIME", "Item", "SyntheticLayer", "convert", "make_tar", "member", "synthetic_layer",
           "with_toc", "with_toc_json"]

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


@dataclass(frozen=True)
class SyntheticLayer:
    blob: bytes
    diff_id: str
    toc_digest: str
    entries: int
    deep: str
    """The file at the end of the chain of directories."""
    wide: list[str]
    """The directories of ``per_dir - 1`` files each."""


def synthetic_layer(dirs: int, per_dir: int, depth: int) -> SyntheticLayer:
    """A layer of empty files only: ``dirs`` directories of ``per_dir - 1`` files each and a
    chain of ``depth`` directories with one file at its end. Its TOC is written as text (a
    million entries as objects would take gigabytes here) and there is no data, only the TOC
    member and the footer."""
    stamp = '"modtime":"2023-11-14T22:13:20Z"'
    parts = []
    wide = [f"big{d:03d}" for d in range(dirs)]
    for d in wide:
        parts.append(f'{{"name":"{d}/","type":"dir",{stamp},"mode":493}}')
        parts.extend(f'{{"name":"{d}/f{f:05d}","type":"reg",{stamp},"mode":420}}'
                     for f in range(per_dir - 1))
    chain = [f"n{i:02d}" for i in range(depth)]
    parts.extend(f'{{"name":"{"/".join(chain[:i + 1])}/","type":"dir",{stamp},"mode":493}}'
                 for i in range(depth))
    deep = "/".join([*chain, "leaf"])
    parts.append(f'{{"name":"{deep}","type":"reg",{stamp},"mode":420}}')
    toc_json = ('{"version":1,"entries":[' + ",".join(parts) + "]}").encode()
    blob = build_toc_blob(toc_json, level=1) + estargz_footer(0)
    return SyntheticLayer(
        blob=blob,
        diff_id="sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest(),
        toc_digest="sha256:" + hashlib.sha256(toc_json).hexdigest(),
        entries=len(parts),
        deep=deep,
        wide=wide,
    )
