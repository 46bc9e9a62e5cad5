"""The image config, edited surgically: only ``rootfs.diff_ids`` changes in a conversion.

The config is kept as a parsed JSON object whose other keys (history, labels, ...) are written
back unchanged in their original order.
"""

from __future__ import annotations

from typing import Any

from estargz.image.model import InvalidDocument, dumps, loads

__all__ = ["chain_id", "diff_ids", "with_diff_ids"]


def diff_ids(config: bytes) -> list[str]:
    doc = loads(config, "image config")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise InvalidDocument("image config: no 'rootfs' object")
    ids = rootfs.get("diff_ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidDocument("image config: 'rootfs.diff_ids' must be a list of digests")
    return list(ids)


def with_diff_ids(config: bytes, new_ids: list[str]) -> bytes:
    """The config with ``rootfs.diff_ids`` replaced; the bytes are unchanged if the ids are."""
    if diff_ids(config) == new_ids:
        return config
    doc: dict[str, Any] = loads(config, "image config")
    doc["rootfs"] = {**doc["rootfs"], "diff_ids": new_ids}
    return dumps(doc)


def chain_id(ids: list[str]) -> str:
    """The OCI chain ID of a layer stack: the first diffID, then for each further layer
    ``sha256(previous chain ID + " " + diffID)`` ("" for no layers)."""
    import hashlib

    chain = ids[0] if ids else ""
    for diff in ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff}".encode()).hexdigest()
    return chain
