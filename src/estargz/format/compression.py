"""Deflate engines: the fastest available one compresses, any one inflates.

libdeflate (the ``deflate`` package) is preferred: on a Debian root filesystem at level 9 it
needs about two thirds of zlib-ng's CPU time and writes smaller members, because each member is
compressed whole, in one call, which is the case libdeflate is built for. zlib-ng is the second
choice and the stdlib ``zlib`` the fallback. The engine's name, version and level are reported
with every blob, because two engines do not produce the same bytes: reproducing a blob means
using the same engine and level.

Inflating is the other way round: any engine reads any member, so the fastest installed one
does it. ISA-L (the ``isal`` package) inflates a 1.8 MB TOC in a third of zlib's time, and every
lazy read inflates the members it fetches.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from estargz.errors import FormatError

__all__ = [
    "INFLATERS",
    "INFLATE_ERRORS",
    "Engine",
    "available_engines",
    "default_engine",
    "get_engine",
    "inflate_member",
]

Buffer = bytes | bytearray | memoryview
_PREFERENCE = ("libdeflate", "zlib-ng", "zlib")


@dataclass(frozen=True, slots=True)
class Engine:
    """A deflate implementation able to write one complete gzip member in one call."""

    name: str
    version: str
    compress: Callable[[Buffer, int], bytes]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def gzip_member(self, data: Buffer, level: int) -> bytes:
        """A gzip member (MTIME 0, no file name) holding ``data``; releases the GIL."""
        return self.compress(data, level)


def _streaming(module: object) -> Callable[[Buffer, int], bytes]:
    def compress(data: Buffer, level: int) -> bytes:
        comp = module.compressobj(level, zlib.DEFLATED, 31)  # type: ignore[attr-defined]
        return b"".join((comp.compress(data), comp.flush()))

    return compress


def _load() -> dict[str, Engine]:
    engines = {"zlib": Engine("zlib", zlib.ZLIB_RUNTIME_VERSION, _streaming(zlib))}
    try:
        from zlib_ng import zlib_ng
    except ImportError:  # pragma: no cover - a dependency, but stay usable without it
        pass
    else:
        engines["zlib-ng"] = Engine("zlib-ng", str(zlib_ng.ZLIBNG_VERSION), _streaming(zlib_ng))
    try:
        import deflate
    except ImportError:  # pragma: no cover - a dependency, but stay usable without it
        pass
    else:

        def libdeflate(data: Buffer, level: int) -> bytes:
            return bytes(deflate.gzip_compress(data, level))  # a bytearray: freeze it

        engines["libdeflate"] = Engine(
            "libdeflate", f"(deflate {deflate.__version__})", libdeflate
        )
    return engines


_ENGINES = _load()


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def default_engine() -> Engine:
    """The first installed of libdeflate, zlib-ng and zlib."""
    return next(_ENGINES[name] for name in _PREFERENCE if name in _ENGINES)


def get_engine(name: str | None) -> Engine:
    if name is None:
        return default_engine()
    try:
        return _ENGINES[name]
    except KeyError:
        raise ValueError(
            f"unknown compression engine {name!r}; available: {', '.join(available_engines())}"
        ) from None


def _inflaters() -> dict[str, object]:
    """Modules with zlib's ``decompressobj`` API, fastest first."""
    found: dict[str, object] = {}
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - a dependency, but stay usable without it
        pass
    else:
        found["isal"] = isal_zlib
    try:
        from zlib_ng import zlib_ng
    except ImportError:  # pragma: no cover
        pass
    else:
        found["zlib-ng"] = zlib_ng
    found["zlib"] = zlib
    return found


INFLATERS = _inflaters()
"""Every installed inflater by name; the first one is used."""
_INFLATER = next(iter(INFLATERS.values()))
INFLATE_ERRORS: tuple[type[Exception], ...] = tuple(
    {m.error for m in INFLATERS.values()})  # type: ignore[attr-defined]
"""What the installed inflaters raise on bad data (each module has its own class)."""


def inflate_member(data: bytes | memoryview, limit: int, where: str,
                   inflater: object | None = None) -> bytes:
    """Inflate the first gzip member of ``data``, returning at most ``limit`` bytes.

    The limit keeps a hostile blob from expanding without bound: callers ask for exactly the
    bytes they need (``innerOffset + chunkSize``). ``inflater``: one of :data:`INFLATERS`
    (default: the fastest).
    """
    module: Any = inflater or _INFLATER
    try:
        out: bytes = module.decompressobj(31).decompress(data, limit) if limit > 0 else b""
    except INFLATE_ERRORS as exc:
        raise FormatError(f"{where}: gzip member does not inflate: {exc}") from exc
    return out
