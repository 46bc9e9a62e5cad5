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
     ├── ExtractError           the file system refused an entry (no space, a name it cannot hold)
     ├── BuildError             options that cannot work together, or a missing prioritized file
     ├── NotFound               no such entry in the blob
     ├── InvalidReference       not [registry/]repository[:tag][@digest] (also a ValueError)
     ├── InvalidPlatform        not os/arch[/variant] (also a ValueError)
     ├── StoreError             the local image store cannot do what was asked
     │    ├── InvalidImageName  an InvalidReference met by the store
     │    ├── ImageNotFound     no image of that name in the store (also a NotFound)
     │    └── BlobNotFound      no blob of that digest in the store (also a NotFound)
     ├── RegistryError          a registry request failed (status, OCI errors[] code/message, URL)
     │    ├── AuthenticationError  401/403 even after authenticating
     │    ├── RegistryNotFound     404 or a *_UNKNOWN code: no such repository/manifest/blob
     │    └── RegistryUnavailable  unreachable, or retries used up on 429/5xx
     └── CredentialsError       docker config.json or a credential helper cannot be used

Messages name the file, the offset and the got/want values, so that a user can act on them
without a traceback.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BlobNotFound",
    "BuildError",
    "ChunkDigestMismatch",
    "CredentialsError",
    "EstargzError",
    "ExtractError",
    "FormatError",
    "ImageNotFound",
    "InvalidFooter",
    "InvalidImageName",
    "InvalidPlatform",
    "InvalidReference",
    "InvalidTOC",
    "InvalidTar",
    "NotFound",
    "RegistryError",
    "RegistryNotFound",
    "RegistryUnavailable",
    "StoreError",
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
    """The TOC cannot be found, parsed, or trusted to describe this blob.

    ``needs_external_toc`` is set when the blob ends with the external-TOC footer and no TOC
    blob was given: the caller can look for one (the TOC image) and try again.
    """

    def __init__(self, message: str, *, needs_external_toc: bool = False) -> None:
        super().__init__(message)
        self.needs_external_toc = needs_external_toc


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


class ExtractError(EstargzError):
    """Writing an entry of the tree failed in the file system; the entry is named."""


class BuildError(EstargzError):
    """The build options conflict, or the input cannot satisfy them."""


class NotFound(EstargzError, KeyError):
    """The named entry does not exist in the blob."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the plain message
        return str(self.args[0]) if self.args else "not found"


class StoreError(EstargzError):
    """The local image store is unusable or refuses an operation."""


class InvalidReference(EstargzError, ValueError):
    """A string that is not ``[registry/]repository[:tag][@digest]``."""


class InvalidPlatform(EstargzError, ValueError):
    """A platform that is not ``os/arch[/variant]``."""


class InvalidImageName(StoreError, InvalidReference):
    """A name that is not ``[registry/]repository[:tag][@digest]``."""


class ImageNotFound(StoreError, NotFound):
    """No image of that name in the store."""


class BlobNotFound(StoreError, NotFound):
    """No blob of that digest in the store."""


class RegistryError(EstargzError):
    """A registry request failed; carries what the registry said.

    ``errors`` holds the ``(code, message)`` pairs of the OCI error body, ``status`` the HTTP
    status (None when no response came back) and ``url`` the request URL.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        status: int | None = None,
        errors: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.errors = errors

    @property
    def code(self) -> str:
        """The first OCI error code (``MANIFEST_UNKNOWN``, ...), or ``""``."""
        return self.errors[0][0] if self.errors else ""


class AuthenticationError(RegistryError):
    """The registry or its token service refused the credentials (or their absence)."""


class RegistryNotFound(RegistryError):
    """The repository, manifest, blob or upload does not exist."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, or kept failing until the retries ran out."""


class CredentialsError(EstargzError):
    """The docker config or a credential helper is broken, so credentials cannot be looked up."""
