"""Build an eStargz blob from a tar (or tar.gz): plan gzip members, compress them in parallel.

With ``compression="zstd"`` the same plan makes a zstd:chunked blob: each member is a zstd
frame instead, and the TOC and footer are those of :mod:`estargz.format.zstdchunked`.

The blob's shape is decided up front by a single pass over the tar index (which bytes go into
which gzip member, and where each payload chunk starts), so it never depends on the number of
threads: members are then compressed independently by a thread pool (deflate releases the GIL)
and written in order, while this thread hashes the uncompressed stream for the diffID.
Memory holds the TOC plus a bounded number of members in flight, never the layer.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from estargz.errors import BuildError, InvalidTar
from estargz.format.codec import Codec, get_codec
from estargz.format.compression import INFLATE_ERRORS, get_engine
from estargz.format.footer import estargz_footer, external_footer
from estargz.format.order import order_members
from estargz.format.source import (
    BlobSource,
    FileSource,
    SourceFile,
    compressed_magic,
    spool_tar,
)
from estargz.format.tarscan import TarMember, clean_name, entry_for, scan_tar
from estargz.format.toc import encode_toc, toc_digest
from estargz.format.types import (
    CHUNK_SIZE_DEFAULT,
    LANDMARK_CONTENTS,
    MAX_CHUNK_SIZE,
    NO_PREFETCH_LANDMARK,
    PREFETCH_LANDMARK,
    TOC_TAR_NAME,
    TOCEntry,
)

__all__ = ["BuildOptions", "BuildResult", "build", "build_toc_blob"]

_BLOCK = 512
_END_OF_ARCHIVE = b"\x00" * (2 * _BLOCK)
_INFLIGHT_BYTES_PER_WORKER = 24 << 20
_BATCH_BYTES = 1 << 20
"""Members go to the compression threads in batches of at least this many bytes."""
_HEADER_RUN_LIMIT = 32 << 20
"""A member holding only headers is closed past this size, to bound memory on huge tars."""


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """How to build a blob. Defaults and conflicts are those of the Go builder.

    - ``chunk_size``: largest payload piece per gzip member (default 4 MiB); files larger
      than this are split into ``chunk`` entries.
    - ``min_chunk_size``: 0 starts a gzip member at every payload; N > 0 keeps adding payloads
      to the open member until it holds N uncompressed bytes (TOC ``innerOffset``). Readers
      older than Go's v0.13 cannot read such blobs.
    - ``prioritized_files``: written first, with their parents and hardlink targets, followed
      by ``.prefetch.landmark``; with none, ``.no.prefetch.landmark`` comes first. A name not
      in the tar is an error unless ``allow_missing_prioritized`` (then reported in
      :attr:`BuildResult.missed_prioritized`).
    - ``compression``: ``"gzip"`` (eStargz) or ``"zstd"`` (zstd:chunked, which keeps its TOC
      inside: no external TOC, no keep-diff-id, no deflate engine).
    - ``compression_level``: gzip 1 (fast) to 9 (small, the default as upstream); zstd 1 to
      22 (default 3, as upstream).
    - ``external_toc``: the blob ends with the 46-byte footer; the TOC is returned as
      :attr:`BuildResult.toc_blob` (a tar.gz holding ``stargz.index.json``).
    - ``keep_diff_id``: the tar bytes pass through unchanged (no landmark, no TOC entry,
      no reordering) so that gunzip gives back the input exactly. Needs ``external_toc``;
      refuses ``prioritized_files`` and an input that already holds a TOC.
    - ``workers``: compression threads (default: CPU count). Output bytes do not depend on it.
    - ``engine``: ``"libdeflate"``, ``"zlib-ng"`` or ``"zlib"`` (default: the first installed
      in that order, the fastest).
    - ``tmpdir``: where a compressed or streamed input is unpacked before conversion.
    - ``gunzip``: an external command that decompresses a gzip input from standard input to
      standard output (``("igzip", "-d", "-c")``); default: zlib-ng in this process.
    """

    chunk_size: int = CHUNK_SIZE_DEFAULT
    min_chunk_size: int = 0
    prioritized_files: Sequence[str] = ()
    allow_missing_prioritized: bool = False
    compression_level: int | None = None
    compression: str = "gzip"
    external_toc: bool = False
    keep_diff_id: bool = False
    workers: int | None = None
    engine: str | None = None
    tmpdir: str | None = None
    gunzip: tuple[str, ...] | None = None

    def check(self) -> None:
        """Refuse option combinations that cannot work, before any byte is read."""
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise BuildError(f"chunk size must be between 1 and {MAX_CHUNK_SIZE} bytes")
        if self.min_chunk_size < 0:
            raise BuildError("min chunk size must not be negative")
        self.codec()
        if self.compression == "zstd" and (self.external_toc or self.keep_diff_id):
            raise BuildError(
                "zstd:chunked keeps its TOC inside the blob: no external TOC, no keep-diff-id"
            )
        if self.workers is not None and self.workers < 1:
            raise BuildError("workers must be at least 1")
        if self.keep_diff_id and not self.external_toc:
            raise BuildError(
                "keep-diff-id needs an external TOC: a TOC inside the blob would change the "
                "uncompressed tar"
            )
        if self.keep_diff_id and self.prioritized_files:
            raise BuildError(
                "keep-diff-id cannot reorder files: prioritized files and landmarks would "
                "change the uncompressed tar"
            )

    def codec(self) -> Codec:
        """The compression, level and engine these options ask for (raises if unknown)."""
        return get_codec(self.compression, self.compression_level, self.engine)


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build produced; ``engine`` and ``compression_level`` say how to reproduce it.

    ``annotations``: the layer annotations the format itself asks for beyond the TOC digest
    and uncompressed size (zstd:chunked's manifest checksum and position).
    """

    toc_digest: str
    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    toc_json: bytes
    toc_blob: bytes | None
    entries: list[TOCEntry]
    engine: str
    compression_level: int
    missed_prioritized: list[str] = field(default_factory=list)
    compression: str = "gzip"
    annotations: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "toc_digest": self.toc_digest,
            "diff_id": self.diff_id,
            "digest": self.digest,
            "size": self.size,
            "uncompressed_size": self.uncompressed_size,
            "engine": self.engine,
            "compression": self.compression,
            "compression_level": self.compression_level,
            "missed_prioritized": self.missed_prioritized,
            **({"annotations": self.annotations} if self.annotations else {}),
        }


# --- planning -----------------------------------------------------------------------------


@dataclass(slots=True)
class _ChunkRef:
    """A payload chunk inside a member: fills its TOC entry once the member is written."""

    entry: TOCEntry
    raw_start: int
    length: int
    file_entry: TOCEntry
    file_hash: hashlib._Hash | None  # set when the file spans several chunks
    last: bool


@dataclass(slots=True)
class _MemberPlan:
    pieces: list[bytes | tuple[int, int]]
    size: int
    chunks: list[_ChunkRef]


class _Planner:
    """Turns a sequence of tar pieces into gzip member plans, cutting where the format says."""

    def __init__(self, min_chunk_size: int) -> None:
        self.min_chunk_size = min_chunk_size
        self.ready: deque[_MemberPlan] = deque()
        self._pieces: list[bytes | tuple[int, int]] = []
        self._size = 0
        self._chunks: list[_ChunkRef] = []
        self.total = 0

    def add_bytes(self, data: bytes) -> None:
        if data:
            self._pieces.append(data)
            self._size += len(data)

    def add_range(self, offset: int, length: int) -> None:
        if length > 0:
            self._pieces.append((offset, length))
            self._size += length

    def cut(self) -> None:
        if self._pieces:
            self.ready.append(_MemberPlan(self._pieces, self._size, self._chunks))
            self.total += self._size
        self._pieces, self._size, self._chunks = [], 0, []

    def before_header(self) -> None:
        if self._size >= max(_HEADER_RUN_LIMIT, self.min_chunk_size):
            self.cut()

    def add_chunk(self, ref: _ChunkRef, offset: int | None, data: bytes = b"", force: bool = False
                  ) -> None:
        """Start a payload chunk: in a new member, or (min chunk size) in the open one."""
        if force or self.min_chunk_size <= 0 or self._size >= self.min_chunk_size:
            self.cut()
        ref.raw_start = self._size
        self._chunks.append(ref)
        if offset is None:
            self.add_bytes(data)
        else:
            self.add_range(offset, ref.length)


def _padding(size: int) -> bytes:
    return b"\x00" * (-size % _BLOCK)


def _file_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


class _Names:
    """userName/groupName are written only when they change for a uid/gid (as Go does)."""

    def __init__(self) -> None:
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}

    def apply(self, entry: TOCEntry, info: tarfile.TarInfo) -> None:
        if info.uname and self._users.get(info.uid) != info.uname:
            self._users[info.uid] = info.uname
            entry.user_name = info.uname
        if info.gname and self._groups.get(info.gid) != info.gname:
            self._groups[info.gid] = info.gname
            entry.group_name = info.gname


def _plan_payload(
    planner: _Planner,
    entries: list[TOCEntry],
    entry: TOCEntry,
    data_offset: int | None,
    size: int,
    chunk_size: int,
    data: bytes = b"",
    force_cut: bool = False,
) -> None:
    """Add a regular file's payload as one or more chunks, appending its TOC entries."""
    entries.append(entry)
    if size == 0:
        entry.digest = "sha256:" + hashlib.sha256(b"").hexdigest()
        return
    multi = size > chunk_size
    file_hash = hashlib.sha256() if multi else None
    written = 0
    current = entry
    while written < size:
        n = min(chunk_size, size - written)
        if n == chunk_size:
            current.chunk_size = n
        current.chunk_offset = written
        ref = _ChunkRef(current, 0, n, entry, file_hash, written + n == size)
        planner.add_chunk(
            ref,
            None if data_offset is None else data_offset + written,
            data,
            force=force_cut and written == 0,
        )
        written += n
        if written < size:
            current = TOCEntry(name=entry.name, type="chunk")
            entries.append(current)


def _plan_normal(
    members: list[TarMember], options: BuildOptions, planner: _Planner, missed: list[str]
) -> Iterable[list[TOCEntry]]:
    ordering = order_members(
        members, options.prioritized_files, allow_missing=options.allow_missing_prioritized
    )
    missed.extend(ordering.missed)
    names = _Names()
    landmark = PREFETCH_LANDMARK if options.prioritized_files else NO_PREFETCH_LANDMARK
    groups: list[list[TarMember] | None] = (
        [ordering.prioritized, None, ordering.rest]
        if options.prioritized_files
        else [None, ordering.rest]
    )
    for group in groups:
        if group is None:
            planner.before_header()
            planner.add_bytes(_file_header(landmark, len(LANDMARK_CONTENTS)))
            entries: list[TOCEntry] = []
            entry = TOCEntry(name=landmark, type="reg", size=len(LANDMARK_CONTENTS), mode=0o644)
            _plan_payload(planner, entries, entry, None, 1, options.chunk_size,
                          LANDMARK_CONTENTS, force_cut=True)
            planner.add_bytes(_padding(1))
            yield entries
            continue
        for m in group:
            planner.before_header()
            if m.header_is_raw:
                planner.add_range(m.header_start, m.data_start - m.header_start)
            else:
                planner.add_bytes(m.info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            entry = entry_for(m)
            names.apply(entry, m.info)
            entries = []
            if m.type == "reg":
                size = m.info.size
                _plan_payload(planner, entries, entry, m.data_start, size, options.chunk_size)
                planner.add_bytes(_padding(size))
            else:
                entries.append(entry)
            yield entries


def _plan_lossless(
    members: list[TarMember], size: int, options: BuildOptions, planner: _Planner
) -> Iterable[list[TOCEntry]]:
    names = _Names()
    pos = 0
    for m in members:
        if clean_name(m.name) == TOC_TAR_NAME:
            raise BuildError(
                f"the input already holds {TOC_TAR_NAME}: keep-diff-id cannot drop it "
                "without changing the tar"
            )
        entry = entry_for(m)
        names.apply(entry, m.info)
        entries: list[TOCEntry] = []
        planner.add_range(pos, m.data_start - pos)
        pos = m.data_start
        if m.type == "reg":
            _plan_payload(planner, entries, entry, m.data_start, m.info.size, options.chunk_size)
            pos = m.data_start + m.info.size
        else:
            entries.append(entry)
        yield entries
    planner.add_range(pos, size - pos)


# --- compression --------------------------------------------------------------------------


@dataclass(slots=True)
class _MemberResult:
    raw: bytearray
    compressed: bytes
    chunk_digests: list[str]


def _compress_batch(plans: list[_MemberPlan], source: FileSource, codec: Codec
                    ) -> list[_MemberResult]:
    return [_compress(plan, source, codec) for plan in plans]


def _compress(plan: _MemberPlan, source: FileSource, codec: Codec) -> _MemberResult:
    raw = bytearray(plan.size)
    view = memoryview(raw)
    pos = 0
    for piece in plan.pieces:
        if isinstance(piece, tuple):
            offset, length = piece
            got = source.read_into(offset, view[pos : pos + length])
            if got != length:
                raise InvalidTar(f"tar truncated: wanted {length} bytes at offset {offset}")
            pos += length
        else:
            view[pos : pos + len(piece)] = piece
            pos += len(piece)
    digests = [
        "sha256:" + hashlib.sha256(view[c.raw_start : c.raw_start + c.length]).hexdigest()
        for c in plan.chunks
    ]
    return _MemberResult(raw, codec.compress(view), digests)


class _Output:
    """Writes members in order and keeps the digests and offsets the TOC needs."""

    def __init__(self, dst: BinaryIO) -> None:
        self.dst = dst
        self.offset = 0
        self.blob_hash = hashlib.sha256()
        self.diff_hash = hashlib.sha256()
        self.uncompressed = 0

    def write_member(self, plan: _MemberPlan, result: _MemberResult) -> None:
        view = memoryview(result.raw)
        self.diff_hash.update(view)
        self.uncompressed += len(view)
        for ref, chunk_digest in zip(plan.chunks, result.chunk_digests, strict=True):
            ref.entry.offset = self.offset
            ref.entry.inner_offset = ref.raw_start
            ref.entry.chunk_digest = chunk_digest
            if ref.file_hash is None:
                ref.file_entry.digest = chunk_digest
            else:
                ref.file_hash.update(view[ref.raw_start : ref.raw_start + ref.length])
                if ref.last:
                    ref.file_entry.digest = "sha256:" + ref.file_hash.hexdigest()
        self.write_raw(result.compressed)

    def write_raw(self, data: bytes) -> None:
        self.dst.write(data)
        self.blob_hash.update(data)
        self.offset += len(data)


def _run(
    plans: Iterable[None],
    planner: _Planner,
    out: _Output,
    source: FileSource,
    codec: Codec,
    workers: int,
) -> None:
    """Drive the planner, compress what it makes ready, write results in order."""
    if workers == 1:
        for _ in plans:
            while planner.ready:
                plan = planner.ready.popleft()
                out.write_member(plan, _compress(plan, source, codec))
        return
    Batch = list[_MemberPlan]
    inflight: deque[tuple[Batch, int, Future[list[_MemberResult]]]] = deque()
    # Results are written in order, so one slow member holds the others back: keep enough
    # queued that every thread stays busy, bounded in bytes to bound memory. Small members go
    # to the pool in batches: a small file's zstd frame takes less time than a task's round
    # trip through the pool, which left the threads idle.
    max_batches = 8 * workers
    max_bytes = _INFLIGHT_BYTES_PER_WORKER * workers
    queued = 0
    batch: Batch = []
    batch_bytes = 0

    def write_oldest() -> int:
        plans, size, fut = inflight.popleft()
        for plan, result in zip(plans, fut.result(), strict=True):
            out.write_member(plan, result)
        return size

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="estargz-deflate") as pool:
        try:
            for _ in plans:
                while planner.ready:
                    plan = planner.ready.popleft()
                    batch.append(plan)
                    batch_bytes += plan.size
                    if batch_bytes < _BATCH_BYTES:
                        continue
                    inflight.append((batch, batch_bytes,
                                     pool.submit(_compress_batch, batch, source, codec)))
                    queued += batch_bytes
                    batch, batch_bytes = [], 0
                    while len(inflight) > max_batches or (queued > max_bytes and len(inflight) > 1):
                        queued -= write_oldest()
            if batch:
                inflight.append((batch, batch_bytes,
                                 pool.submit(_compress_batch, batch, source, codec)))
            while inflight:
                write_oldest()
        finally:
            for _, _, fut in inflight:
                fut.cancel()


def _toc_tar(toc_json: bytes) -> bytes:
    return _file_header(TOC_TAR_NAME, len(toc_json)) + toc_json + _padding(len(toc_json))


def build_toc_blob(toc_json: bytes, level: int = 9, engine: str | None = None) -> bytes:
    """The external TOC: a tar.gz holding only ``stargz.index.json``."""
    return get_engine(engine).gzip_member(_toc_tar(toc_json) + _END_OF_ARCHIVE, level)


# --- input --------------------------------------------------------------------------------


def _open_tar(src: str | os.PathLike[str] | BinaryIO | BlobSource, tmpdir: str | None,
              gunzip: tuple[str, ...] | None = None) -> FileSource:
    """A positional-read view of the uncompressed tar, unpacking gzip or zstd input to a temp
    file (``gunzip``: an external gzip decompressor)."""
    import gzip

    corrupt: tuple[type[Exception], ...] = (EOFError, gzip.BadGzipFile, *INFLATE_ERRORS)

    try:
        if isinstance(src, str | os.PathLike):
            source = FileSource(src)
            if not compressed_magic(source.read_at(0, 4)):
                return source
            source.close()
            with open(src, "rb") as f:
                return spool_tar(f, f.read(4), tmpdir, gunzip)
        if isinstance(src, FileSource) and not compressed_magic(src.read_at(0, 4)):
            return FileSource.from_fd(src.fileno)
        if isinstance(src, BlobSource):
            stream = io.BufferedReader(SourceFile(src))
            # the head tells what it is
            return spool_tar(stream, stream.read(4), tmpdir, gunzip)
        head = src.read(4)
        if not compressed_magic(head):
            try:
                fd = src.fileno()
                base = src.tell() - len(head)
                if os.path.isfile(f"/proc/self/fd/{fd}") and base >= 0:
                    return FileSource.from_fd(fd, base)
            except (OSError, AttributeError, io.UnsupportedOperation):
                pass
        return spool_tar(src, head, tmpdir, gunzip)
    except corrupt as exc:
        raise InvalidTar(f"compressed input is corrupt or truncated: {exc}") from exc


# --- entry point --------------------------------------------------------------------------


def build(
    src: str | os.PathLike[str] | BinaryIO | BlobSource,
    dst: BinaryIO,
    options: BuildOptions | None = None,
) -> BuildResult:
    """Convert the tar or tar.gz ``src`` to an eStargz blob written to ``dst``.

    ``dst`` only needs ``write``; nothing is seeked, so a pipe works.
    """
    options = options or BuildOptions()
    options.check()
    codec = options.codec()
    zstd = codec.name == "zstd"
    workers = options.workers or os.cpu_count() or 1
    source = _open_tar(src, options.tmpdir, options.gunzip)
    try:
        with io.BufferedReader(SourceFile(source), 1 << 16) as tar_file:
            members, _end = scan_tar(tar_file, source.size)
        planner = _Planner(options.min_chunk_size)
        entries: list[TOCEntry] = []
        missed: list[str] = []
        if options.keep_diff_id:
            groups = _plan_lossless(members, source.size, options, planner)
        else:
            groups = _plan_normal(members, options, planner, missed)

        def steps() -> Iterable[None]:
            for group in groups:
                entries.extend(group)
                yield None
            if (options.external_toc and not options.keep_diff_id) or zstd:
                planner.add_bytes(_END_OF_ARCHIVE)  # keep the tar well-formed without a TOC
            planner.cut()
            yield None

        out = _Output(dst)
        _run(steps(), planner, out, source, codec, workers)
    finally:
        source.close()

    toc_json = encode_toc(entries)
    toc_blob: bytes | None = None
    annotations: dict[str, str] = {}
    if zstd:
        from estargz.format.zstdchunked import toc_tail

        tail = toc_tail(toc_json, out.offset, codec.level)
        out.write_raw(tail.data)
        annotations = tail.annotations
    elif options.external_toc:
        toc_blob = build_toc_blob(toc_json, codec.level, options.engine)
        out.write_raw(external_footer())
    else:
        toc_offset = out.offset
        toc_raw = _toc_tar(toc_json) + _END_OF_ARCHIVE
        out.diff_hash.update(toc_raw)
        out.uncompressed += len(toc_raw)
        out.write_raw(codec.compress(toc_raw))
        out.write_raw(estargz_footer(toc_offset))
    return BuildResult(
        toc_digest=toc_digest(toc_json),
        diff_id="sha256:" + out.diff_hash.hexdigest(),
        digest="sha256:" + out.blob_hash.hexdigest(),
        size=out.offset,
        uncompressed_size=out.uncompressed,
        toc_json=toc_json,
        toc_blob=toc_blob,
        entries=entries,
        engine=codec.label,
        compression_level=codec.level,
        missed_prioritized=missed,
        compression=codec.name,
        annotations=annotations,
    )
