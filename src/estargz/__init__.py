"""estargz: convert container image layers to eStargz, verify them, read them lazily.

The format layer (:mod:`estargz.format`) is the foundation and has no I/O policy of its own.
Names are loaded on first use, so that ``import estargz.cli.client`` (the thin client a resident
service answers) costs nothing beyond the interpreter.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without importing typing at every start)
if TYPE_CHECKING:
    from typing import Any

    from estargz.errors import (
        BuildError,
        ChunkDigestMismatch,
        EstargzError,
        FormatError,
        InvalidFooter,
        InvalidTar,
        InvalidTOC,
        NotFound,
        TOCDigestMismatch,
        UnsafePath,
        VerificationError,
    )
    from estargz.format import BuildOptions, BuildResult, build, open_blob

__version__ = "0.1.0"

_FROM = {
    "estargz.errors": ("BuildError", "ChunkDigestMismatch", "EstargzError", "FormatError",
                       "InvalidFooter", "InvalidTOC", "InvalidTar", "NotFound",
                       "TOCDigestMismatch", "UnsafePath", "VerificationError"),
    "estargz.format": ("BuildOptions", "BuildResult", "build", "open_blob"),
}
_WHERE = {name: module for module, names in _FROM.items() for name in names}

__all__ = [
    "BuildError",
    "BuildOptions",
    "BuildResult",
    "ChunkDigestMismatch",
    "EstargzError",
    "FormatError",
    "InvalidFooter",
    "InvalidTOC",
    "InvalidTar",
    "NotFound",
    "TOCDigestMismatch",
    "UnsafePath",
    "VerificationError",
    "__version__",
    "build",
    "open_blob",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'estargz' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
