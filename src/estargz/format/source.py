"""Random-access byte sources: what the reader reads a blob through, and the writer a tar from.

A source needs two things, a ``size`` and ``read_at(offset, size)``. Local files, byte strings and
(later) registry range readers all fit, so the format code never knows where bytes come from.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from typing import BinaryIO, Protocol, runtime_checkable

from estargz.errors import FormatError

__all__ = [
    "BlobSource",
    "BytesSource",
    "FileSource",
    "SourceFile",
    "as_source",
    "compressed_magic",
    "gzip_magic",
    "read_exact",
    "spool_tar",
]

_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@runtime_checkable
class BlobSource(Protocol):
    """Anything a blob can be read from at arbitrary offsets."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``, fewer only at the end of the source."""
        ...


class BytesSource:
    """A blob held in memory."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = memoryview(data).toreadonly()

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, size: int) -> bytes:
        return bytes(self._data[offset : offset + size])


class FileSource:
    """A local file, read with ``pread`` so that threads can share one descriptor."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._adopt(fd, os.fspath(path), 0)

    @classmethod
    def from_fd(cls, fd: int, base: int = 0) -> FileSource:
        """A source over an open file (its own duplicate descriptor), starting at ``base``."""
        self = cls.__new__(cls)
        self._adopt(os.dup(fd), f"<fd {fd}>", base)
        return self

    def _adopt(self, fd: int, path: str, base: int) -> None:
        self._fd = fd
        self._base = base
        self._size = os.fstat(fd).st_size - base
        self.path = path

    @property
    def size(self) -> int:
        return self._size

    @property
    def fileno(self) -> int:
        return self._fd

    def read_at(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError(f"negative read: offset {offset} size {size}")
        size = max(0, min(size, self._size - offset))
        chunks = []
        pos = offset + self._base
        while size > 0:
            chunk = os.pread(self._fd, size, pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``; returns the number of bytes read."""
        done = 0
        while done < len(buf):
            n = os.preadv(self._fd, [buf[done:]], self._base + offset + done)
            if n <= 0:
                break
            done += n
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SourceFile(io.RawIOBase):
    """A seekable read-only file object over a :class:`BlobSource` (for ``tarfile``)."""

    def __init__(self, source: BlobSource) -> None:
        super().__init__()
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._source.read_at(self._pos, len(buf))
        n = len(data)
        memoryview(buf)[:n] = data
        self._pos += n
        return n


def as_source(blob: BlobSource | bytes | bytearray | str | os.PathLike[str]) -> BlobSource:
    """Accept a path, bytes or a ready source."""
    if isinstance(blob, bytes | bytearray):
        return BytesSource(blob)
    if isinstance(blob, str | os.PathLike):
        return FileSource(blob)
    return blob


def gzip_magic(head: bytes) -> bool:
    return head[:3] == _GZIP_MAGIC


def compressed_magic(head: bytes) -> bool:
    """Whether ``head`` (4 bytes) starts a gzip or a zstd stream rather than a tar."""
    return head[:3] == _GZIP_MAGIC or head[:4] == _ZSTD_MAGIC


class _Prefixed(io.RawIOBase):
    """A stream with some bytes already read from it put back in front."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            memoryview(buf)[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(buf))
        memoryview(buf)[: len(data)] = data
        return len(data)


def _gunzip_with(command: Sequence[str], stream: BinaryIO, head: bytes, out: BinaryIO) -> None:
    """Decompress with an external program (``pigz -d -c`` ...) into ``out``. A regular file
    is its standard input directly; any other stream is copied to it by a thread."""
    fd = _regular_fd(stream, len(head))
    proc = subprocess.Popen(command, stdin=subprocess.PIPE if fd is None else fd, stdout=out,
                            stderr=subprocess.PIPE)
    failed: list[BaseException] = []

    def pump() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(head)
            shutil.copyfileobj(stream, proc.stdin, 1 << 20)
        except BrokenPipeError:
            pass  # the helper stopped reading: its exit status says why
        except BaseException as exc:
            failed.append(exc)
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()

    feeder = threading.Thread(target=pump, daemon=True) if fd is None else None
    if feeder is not None:
        feeder.start()
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait()
    if feeder is not None:
        feeder.join()
    if failed:
        raise failed[0]
    if proc.returncode != 0:
        why = err.decode("utf-8", "replace").strip().splitlines()
        raise EOFError(f"{os.path.basename(command[0])} exited with status {proc.returncode}"
                       + (f": {why[-1]}" if why else ""))


def _regular_fd(stream: BinaryIO, back: int) -> int | None:
    """The descriptor of a regular file, moved ``back`` bytes (the sniffed head) back."""
    try:
        fd = stream.fileno()
        pos = stream.tell() - back
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None
    if pos < 0 or not os.path.isfile(f"/proc/self/fd/{fd}"):
        return None
    os.lseek(fd, pos, os.SEEK_SET)
    return fd


def spool_tar(stream: BinaryIO, head: bytes, tmpdir: str | None,
              gunzip: Sequence[str] | None = None) -> FileSource:
    """Copy a tar (or tar.gz or tar.zst, decompressed on the way) from a stream into an unnamed
    temp file (a zstd:chunked blob gives its tar: its TOC and footer are skippable frames).

    ``head`` holds the bytes already read from the stream to sniff its type; ``gunzip`` is an
    external command that decompresses standard input to standard output (default: zlib-ng
    in this process).
    """
    tmp = tempfile.TemporaryFile(dir=tmpdir)  # noqa: SIM115
    try:
        if gzip_magic(head) and gunzip:
            _gunzip_with(gunzip, stream, head, tmp)
        elif gzip_magic(head):
            from zlib_ng import gzip_ng

            with gzip_ng.GzipFile(fileobj=_Prefixed(head, stream), mode="rb") as gz:  # type: ignore[no-untyped-call]
                shutil.copyfileobj(gz, tmp, 1 << 20)
        elif head[:4] == _ZSTD_MAGIC:
            from estargz.format.zstdchunked import copy_decompressed

            copy_decompressed(_Prefixed(head, stream), tmp)
        else:
            tmp.write(head)
            shutil.copyfileobj(stream, tmp, 1 << 20)
        tmp.flush()
        return FileSource.from_fd(tmp.fileno())
    finally:
        tmp.close()


def read_exact(source: BlobSource, offset: int, size: int, what: str) -> bytes:
    """Exactly ``size`` bytes at ``offset``, or a FormatError naming ``what``."""
    if offset < 0 or size < 0 or offset + size > source.size:
        raise FormatError(
            f"{what}: bytes [{offset}, {offset + size}) are outside the blob ({source.size} bytes)"
        )
    data = source.read_at(offset, size)
    if len(data) != size:
        raise FormatError(f"{what}: short read at offset {offset} ({len(data)} of {size} bytes)")
    return data
