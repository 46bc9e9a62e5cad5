"""Every error estargz raises on purpose, as one tree.

::

    EstargzError
     ├── FormatError            the bytes are not what the format says they must be
     │    ├── InvalidFooter     no eStargz / external / legacy footer at the end of the blob
     │    ├── InvalidTOC        the TOC is missing, not JSON, or describes an impossible blob
     │    └── InvalidTar        the input tar cannot be converted
     ├── VerificationError      the bytes are well-formed but not the ones promised
     │    ├── TOCDigestMismatch
     │    └── ChunkDigestMismatch
     ├── UnsafePath             an entry would land outside the extraction directory
     ├── BuildError             options that cannot work together, or a missing prioritized file
     └── NotFound               no such entry in the blob

Messages name the file, the offset and the got/want values, so that a user can act on them
without a traceback.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
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
]


class EstargzError(Exception):
    """Base of every error estargz raises deliberately."""


class FormatError(EstargzError):
    """The blob or the TOC breaks the eStargz format."""


class InvalidFooter(FormatError):
    """None of the known footers is at the end of the blob."""


class InvalidTOC(FormatError):
    """The TOC cannot be found, parsed, or trusted to describe this blob."""


class InvalidTar(FormatError):
    """The input tar stream is malformed or holds an entry we cannot convert."""


class VerificationError(EstargzError):
    """Content does not match the digest that vouches for it."""


class TOCDigestMismatch(VerificationError):
    """The TOC JSON does not hash to the expected digest."""


class ChunkDigestMismatch(VerificationError):
    """A chunk's bytes do not hash to the TOC's chunkDigest."""


class UnsafePath(EstargzError):
    """An entry name or link would place a file outside the extraction root."""


class BuildError(EstargzError):
    """The build options conflict, or the input cannot satisfy them."""


class NotFound(EstargzError, KeyError):
    """The named entry does not exist in the blob."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the plain message
        return str(self.args[0]) if self.args else "not found"
