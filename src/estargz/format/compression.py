"""Deflate engines: the fastest available one compresses, any one inflates.

zlib-ng is a dependency and preferred; the stdlib ``zlib`` is the fallback. The engine's name,
version and level are reported with every blob, because two engines do not produce the same
bytes: reproducing a blob means using the same engine and level.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from estargz.errors import FormatError

__all__ = ["Engine", "available_engines", "default_engine", "get_engine", "inflate_member"]


class _Compressor(Protocol):
    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...
    def flush(self, mode: int = ..., /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Engine:
    """A deflate implementation able to write gzip members."""

    name: str
    version: str
    module: ModuleType

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def gzip_member(self, pieces: Iterable[bytes | bytearray | memoryview], level: int) -> bytes:
        """One complete gzip member (header MTIME 0, no name) holding ``pieces`` in order."""
        comp: _Compressor = self.module.compressobj(level, zlib.DEFLATED, 31)
        out = [comp.compress(p) for p in pieces]
        out.append(comp.flush())
        return b"".join(out)


def _load() -> dict[str, Engine]:
    engines = {"zlib": Engine("zlib", zlib.ZLIB_RUNTIME_VERSION, zlib)}
    try:
        from zlib_ng import zlib_ng
    except ImportError:  # pragma: no cover - zlib-ng is a dependency, but stay usable without
        pass
    else:
        engines["zlib-ng"] = Engine("zlib-ng", str(zlib_ng.ZLIBNG_VERSION), zlib_ng)
    return engines


_ENGINES = _load()


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def default_engine() -> Engine:
    """zlib-ng when installed (several times faster at level 9), else zlib."""
    return _ENGINES.get("zlib-ng") or _ENGINES["zlib"]


def get_engine(name: str | None) -> Engine:
    if name is None:
        return default_engine()
    try:
        return _ENGINES[name]
    except KeyError:
        raise ValueError(
            f"unknown compression engine {name!r}; available: {', '.join(available_engines())}"
        ) from None


def inflate_member(data: bytes | memoryview, limit: int, where: str) -> bytes:
    """Inflate the first gzip member of ``data``, returning at most ``limit`` bytes.

    The limit keeps a hostile blob from expanding without bound: callers ask for exactly the
    bytes they need (``innerOffset + chunkSize``).
    """
    inflater = zlib.decompressobj(31)
    try:
        out = inflater.decompress(data, limit) if limit > 0 else b""
    except zlib.error as exc:
        raise FormatError(f"{where}: gzip member does not inflate: {exc}") from exc
    return out
