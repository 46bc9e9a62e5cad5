"""What a lazy mount is made of, written by ``rpull`` and read by the daemon and layer servers.

One directory per mount under ``<store>/state/mounts/<id>/``: ``spec.json`` (this), the layer
mountpoints, ``daemon.pid``, ``daemon.log``, ``status.json`` and per-layer ``stats-N.json``.
The spec may hold registry credentials, so it is written with mode 0600.
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from estargz.store.fsutil import write_atomic

__all__ = [
    "CACHE_BYTES",
    "MIN_REQUEST",
    "READ_TIMEOUT",
    "LayerSpec",
    "MountSpec",
    "read_json",
    "receive_layer",
    "send_layer",
    "write_json",
]


@dataclass(slots=True)
class LayerSpec:
    """One layer of a mount. The manifest gives the first fields; the rest are known once the
    layer's footer and TOC are read (until then ``reason`` is ``pending``)."""

    digest: str
    size: int
    mountpoint: str
    toc_digest: str = ""
    footer_kind: str = ""
    footer_size: int = 0
    toc_offset: int | None = None
    data_end: int = 0
    local: bool = False
    """The blob is in the store (pulled whole); otherwise it is read from the registry."""
    reason: str = "pending"


MIN_REQUEST = 64 << 10
"""Smallest range a layer server asks of the registry, by default."""
READ_TIMEOUT = 60.0
"""Seconds a read waits for an unreachable registry before EIO, by default."""
CACHE_BYTES = 4 << 30
"""Bound of the store's on-disk chunk cache (all layers together), by default."""


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
    refresh: str = ""
    tlscacert: str = ""  # absolute paths of the TLS files rpull was given ("": none)
    tlscert: str = ""
    tlskey: str = ""
    upper: bool = False
    background_fetch: bool = True
    min_request: int = MIN_REQUEST
    read_timeout: float = READ_TIMEOUT
    cache_bytes: int = CACHE_BYTES
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


_LENGTH = struct.Struct("!Q")


def send_layer(fd: int, layer: LayerSpec, toc_json: bytes) -> None:
    """Hand a layer server its layer and TOC bytes over a pipe (it starts mounting before
    ``rpull`` has them)."""
    header = orjson.dumps(asdict(layer))
    with os.fdopen(os.dup(fd), "wb") as out:
        out.write(_LENGTH.pack(len(header)) + header + _LENGTH.pack(len(toc_json)))
        out.write(toc_json)


def receive_layer(fd: int, max_toc: int) -> tuple[LayerSpec, bytes]:
    """What :func:`send_layer` sent; EOFError if the sender gave up first."""
    with os.fdopen(os.dup(fd), "rb") as stream:

        def exactly(n: int) -> bytes:
            data = stream.read(n)
            if len(data) != n:
                raise EOFError("rpull stopped before it sent this layer's TOC")
            return data

        length = _LENGTH.unpack(exactly(_LENGTH.size))[0]
        if length > 1 << 20:
            raise ValueError(f"a layer description of {length} bytes is not one")
        header = exactly(length)
        size = _LENGTH.unpack(exactly(_LENGTH.size))[0]
        if size > max_toc:
            raise ValueError(f"a TOC of {size} bytes is larger than allowed ({max_toc})")
        return LayerSpec(**orjson.loads(header)), exactly(size)


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
