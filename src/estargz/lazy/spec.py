"""What a lazy mount is made of, written by ``rpull`` and read by the daemon and layer servers.

One directory per mount under ``<store>/state/mounts/<id>/``: ``spec.json`` (this), the layer
mountpoints, ``daemon.pid``, ``daemon.log``, ``status.json`` and per-layer ``stats-N.json``.
The spec may hold registry credentials, so it is written with mode 0600.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from estargz.store.fsutil import write_atomic

__all__ = ["LayerSpec", "MountSpec", "read_json", "write_json"]


@dataclass(slots=True)
class LayerSpec:
    digest: str
    size: int
    toc_digest: str
    footer_kind: str
    footer_size: int
    toc_offset: int | None
    data_end: int
    local: bool
    """The blob is in the store (pulled whole); otherwise it is read from the registry."""
    reason: str
    mountpoint: str
    prefetch_size: int = 0


@dataclass(slots=True)
class MountSpec:
    id: str
    image: str
    image_digest: str
    state_dir: str
    mountpoint: str
    store_root: str
    registry: str
    repository: str
    plain_http: bool = False
    skip_verify: bool = False
    user: str = ""
    upper: bool = False
    background_fetch: bool = True
    min_request: int = 64 << 10
    read_timeout: float = 60.0
    cache_bytes: int = 4 << 30
    layers: list[LayerSpec] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        return Path(self.state_dir)

    def save(self) -> None:
        write_json(self.dir / "spec.json", asdict(self), mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MountSpec:
        doc = read_json(Path(path))
        if doc is None:
            raise FileNotFoundError(path)
        layers = [LayerSpec(**layer) for layer in doc.pop("layers")]
        return cls(**doc, layers=layers)


def write_json(path: Path, value: Any, mode: int = 0o644) -> None:
    """Atomic replace, so readers never see half a file; not fsynced: mounts do not outlive a
    reboot, and neither need the files that describe them."""
    write_atomic(path, orjson.dumps(value, option=orjson.OPT_INDENT_2), tmpdir=path.parent,
                 mode=mode, durable=False)


def read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
