"""estargz: convert container image layers to eStargz, verify them, read them lazily.

The format layer (:mod:`estargz.format`) is the foundation and has no I/O policy of its own.
"""

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
