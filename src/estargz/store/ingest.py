"""Writing one blob: into a temporary file first, into the store only once it is verified.

The temporary file lives in the store's ``ingest/`` directory, on the same file system as the
blobs, so that publishing it is a single rename.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from estargz.digest import DigestMismatch, Hasher, parse_digest
from estargz.errors import StoreError
from estargz.store.fsutil import fsync_dir

__all__ = ["BlobWriter", "split_digest"]


def split_digest(digest: str) -> tuple[str, str]:
    """``(algorithm, hex)``; a malformed digest (it would become a path) is a StoreError."""
    try:
        return parse_digest(digest)
    except ValueError:
        raise StoreError(f"not a valid digest: {digest!r}") from None


class BlobWriter:
    """A blob being written into ``ingest/``; it becomes visible only through :meth:`commit`.

    Get one from :meth:`ImageStore.ingest`, which removes the temporary file however the block
    ends, so an abandoned or failed write leaves nothing behind.
    """

    def __init__(
        self,
        ingest_dir: Path,
        blob_path: Callable[[str], Path],
        expected_digest: str | None,
        expected_size: int | None,
    ) -> None:
        algorithm = split_digest(expected_digest)[0] if expected_digest else "sha256"
        self._blob_path = blob_path
        self._expected_digest = expected_digest
        self._expected_size = expected_size
        self._hasher = Hasher(algorithm)
        fd, name = tempfile.mkstemp(dir=ingest_dir, prefix="blob-", suffix=".part")
        self._tmp = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._committed: str | None = None

    @property
    def digest(self) -> str:
        """Digest of what was written so far."""
        return self._hasher.digest

    @property
    def size(self) -> int:
        return self._hasher.size

    def _what(self) -> str:
        return f"blob {self._expected_digest or '(new)'}"

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if self._file is None:
            raise StoreError(f"{self._what()}: write after commit or abort")
        n = memoryview(data).nbytes
        if self._expected_size is not None and self._hasher.size + n > self._expected_size:
            self.abort()
            raise DigestMismatch(
                f"{self._what()}: more than the expected {self._expected_size} bytes"
            )
        self._file.write(data)
        self._hasher.update(data)
        return n

    def commit(self) -> str:
        """Verify size and digest, then move the blob into place; returns its digest.

        On a mismatch, raises :class:`DigestMismatch` and keeps nothing. Committing content the
        store already has is cheap: the copy is dropped.
        """
        if self._committed is not None:
            return self._committed
        if self._file is None:
            raise StoreError(f"{self._what()}: commit after abort")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            digest, size = self.digest, self.size
            if self._expected_size is not None and size != self._expected_size:
                raise DigestMismatch(
                    f"{self._what()}: got {size} bytes, expected {self._expected_size}"
                )
            if self._expected_digest is not None and digest != self._expected_digest:
                raise DigestMismatch(
                    f"{self._what()}: content has digest {digest}, expected "
                    f"{self._expected_digest}"
                )
            dest = self._blob_path(digest)
            try:
                present = dest.stat().st_size == size
            except FileNotFoundError:
                present = False
            if present:
                self._tmp.unlink()
            else:
                if not dest.parent.is_dir():  # a digest algorithm seen for the first time
                    dest.parent.mkdir(exist_ok=True)
                    fsync_dir(dest.parent.parent)
                os.chmod(self._tmp, 0o444)
                os.replace(self._tmp, dest)
                fsync_dir(dest.parent)
        except BaseException:
            self.abort()
            raise
        self._committed = digest
        return digest

    def abort(self) -> None:
        """Throw the data away (no-op after a successful commit)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._committed is None:
            self._tmp.unlink(missing_ok=True)
