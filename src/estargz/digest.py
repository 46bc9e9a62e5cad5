"""Content digests (``sha256:<hex>``): computing, parsing and checking them in one place."""

from __future__ import annotations

import hashlib
import re

from estargz.errors import VerificationError

__all__ = ["DigestMismatch", "Hasher", "check_digest", "parse_digest", "sha256_digest"]

_DIGEST = re.compile(r"^(sha256):([0-9a-f]{64})$|^(sha512):([0-9a-f]{128})$")


class DigestMismatch(VerificationError):
    """Content fetched or stored does not hash to the digest that names it."""


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_digest(digest: str) -> tuple[str, str]:
    """``(algorithm, hex)``; raises ValueError for anything that is not a valid digest."""
    m = _DIGEST.match(digest)
    if not m:
        raise ValueError(f"not a valid digest: {digest!r}")
    return (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))


class Hasher:
    """Streaming digest of one algorithm, named like the digest it checks."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self._h.hexdigest()}"


def check_digest(data: bytes | bytearray | memoryview, expected: str, what: str) -> None:
    algorithm, _ = parse_digest(expected)
    got = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    if got != expected:
        raise DigestMismatch(f"{what}: content has digest {got}, expected {expected}")
