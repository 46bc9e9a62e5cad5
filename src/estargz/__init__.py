"""estargz: convert container image layers to eStargz, verify them, read them lazily.

The format layer (:mod:`estargz.format`) is the foundation and has no I/O policy of its own.
Names are loaded on first use, so that ``import estargz.cli.client`` (the thin client a resident
service answers) costs nothing beyond the interpreter.
"""

from __future__ import annotations

from estargz._exports import lazy_exports

TYPE_CHECKING = False  # (typing.TYPE_CHECKING, without importing typing at every start)
if TYPE_CHECKING:
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


__getattr__ = lazy_exports(__name__, globals(), _FROM)
