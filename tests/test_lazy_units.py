"""The lazy-mount parts that need no FUSE: LayerFS over real eStargz blobs built in memory, the
on-disk chunk cache, and ResilientSource over a small source that fails on purpose.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest

from estargz.errors import ChunkDigestMismatch, FormatError, RegistryError, RegistryUnavailable
from estargz.format import BlobReader, BuildOptions, build, open_blob
from estargz.lazy.cache import DiskChunkCache
from estargz.lazy.layerfs import OPAQUE_XATTR, LayerFS
from estargz.lazy.remote import ResilientSource, SourceUnavailable

# -- LayerFS -------------------------------------------------------------------------------


def _layer_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "",
                pax: dict[str, str] | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mtime = kind, link, 1_700_000_000
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.pax_headers = dict(pax or {})
            tf.addfile(info, io.BytesIO(data) if info.size else None)

        add("etc/", tarfile.DIRTYPE)
        add("etc/file", data=b"the file\n")
        add("etc/link", tarfile.LNKTYPE, link="etc/file")
        add("etc/sym", tarfile.SYMTYPE, link="file")
        add("etc/.wh.gone")
        add("etc/other", data=b"other\n", pax={"SCHILY.xattr.user.k": "v"})
        add("opq/", tarfile.DIRTYPE)
        add("opq/.wh..wh..opq")
        add("opq/keep", data=b"kept\n")
        add(".wh.rootgone")
    return buf.getvalue()


def _reader(data: bytes, prioritized: list[str]) -> BlobReader:
    out = io.BytesIO()
    build(io.BytesIO(data), out, BuildOptions(prioritized_files=prioritized))
    return open_blob(out.getvalue()).skip_verify()


@pytest.fixture(scope="module")
def blob_reader() -> BlobReader:
    return _reader(_layer_tar(), ["etc/file"])


def _walk(fs: LayerFS, path: str = "/") -> dict[str, int]:
    """Every path's inode number, found through readdir as the kernel would."""
    out = {}
    for name in fs.readdir(path) or []:
        child = path.rstrip("/") + "/" + name
        st = fs.getattr(child)
        assert st is not None, child
        out[child] = st.st_ino
        if stat.S_ISDIR(st.st_mode):
            out.update(_walk(fs, child))
    return out


def test_whiteouts_become_overlay_whiteouts(blob_reader: BlobReader) -> None:
    fs = LayerFS(blob_reader)
    assert sorted(fs.readdir("/") or []) == ["etc", "opq", "rootgone"]
    assert sorted(fs.readdir("/etc") or []) == ["file", "gone", "link", "other", "sym"]
    for path in ("/etc/gone", "/rootgone"):
        st = fs.getattr(path)
        assert st is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
        assert fs.listxattr(path) == []
    typed = {name: mode for name, mode, _ in fs.readdir_typed("/etc") or []}
    assert stat.S_ISCHR(typed["gone"]) and stat.S_ISREG(typed["file"])
    for marker in ("/etc/.wh.gone", "/.wh.rootgone", "/opq/.wh..wh..opq"):
        assert fs.lookup(marker) is None and fs.getattr(marker) is None


def test_the_bottom_layer_leaves_whiteouts_out(blob_reader: BlobReader) -> None:
    fs = LayerFS(blob_reader, bottom=True)
    assert sorted(fs.readdir("/") or []) == ["etc", "opq"]
    assert sorted(fs.readdir("/etc") or []) == ["file", "link", "other", "sym"]
    assert fs.getattr("/etc/gone") is None and fs.getattr("/rootgone") is None
    assert fs.readdir("/opq") == ["keep"] and fs.listxattr("/opq") == []
    assert fs.getxattr("/opq", OPAQUE_XATTR) is None


def test_opaque_directory_gets_the_overlay_xattr(blob_reader: BlobReader) -> None:
    fs = LayerFS(blob_reader)
    assert fs.readdir("/opq") == ["keep"]
    assert OPAQUE_XATTR in (fs.listxattr("/opq") or [])
    assert fs.getxattr("/opq", OPAQUE_XATTR) == b"y"
    assert OPAQUE_XATTR not in (fs.listxattr("/etc") or [])
    assert fs.getxattr("/etc", OPAQUE_XATTR) is None
    assert fs.getxattr("/etc/other", "user.k") == b"v"
    assert fs.listxattr("/etc/other") == ["user.k"]


def test_landmarks_are_hidden() -> None:
    for prioritized, landmark in ((["etc/file"], ".prefetch.landmark"),
                                  ([], ".no.prefetch.landmark")):
        reader = _reader(_layer_tar(), prioritized)
        assert reader.lookup(landmark) is not None  # in the blob ...
        fs = LayerFS(reader)
        assert landmark not in (fs.readdir("/") or [])  # ... but not in the tree
        assert fs.getattr("/" + landmark) is None


def test_hardlinks_share_an_inode_and_the_rest_do_not(blob_reader: BlobReader) -> None:
    fs = LayerFS(blob_reader)
    inodes = _walk(fs)
    root = fs.getattr("/")
    assert root is not None and root.st_ino == 1
    assert inodes["/etc/file"] == inodes["/etc/link"]
    st = fs.getattr("/etc/link")
    assert st is not None and st.st_nlink == 2 and st.st_size == len(b"the file\n")
    others = [ino for path, ino in inodes.items() if path != "/etc/link"]
    assert len(set(others)) == len(others) and 1 not in others
    assert fs.statfs()["f_files"] >= len(others) + 1


def test_inode_numbers_do_not_depend_on_the_order_of_calls(blob_reader: BlobReader) -> None:
    """FUSE asks from many threads in any order; numbers handed out on first sight would
    differ between runs and could collide between threads."""
    forward = LayerFS(blob_reader)
    backward = LayerFS(blob_reader)
    paths = sorted(_walk(forward))
    for path in reversed(paths):
        backward.getattr(path)
    assert _walk(backward) == _walk(forward)

    fs = LayerFS(blob_reader)
    seen: list[dict[str, int]] = []

    def look() -> None:
        seen.append({p: st.st_ino for p in paths if (st := fs.getattr(p)) is not None})

    threads = [threading.Thread(target=look) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s == seen[0] for s in seen) and seen[0] == _walk(forward)


def test_bad_data_is_reported_to_the_source() -> None:
    out = io.BytesIO()
    build(io.BytesIO(_layer_tar()), out)
    blob = bytearray(out.getvalue())
    reader = open_blob(bytes(blob)).skip_verify()
    (chunk,) = reader.chunks("etc/other")
    blob[chunk.offset + 12] ^= 0xFF
    calls: list[int] = []
    fs = LayerFS(open_blob(bytes(blob)).skip_verify(), on_bad_data=lambda: calls.append(1))
    with pytest.raises((ChunkDigestMismatch, FormatError)):
        fs.read("/etc/other", 4096, 0)
    assert calls == [1]
    assert fs.read("/etc/file", 4096, 0) == b"the file\n" and calls == [1]


# -- DiskChunkCache ------------------------------------------------------------------------


def test_cache_stays_within_its_bound_evicting_the_least_recently_used(tmp_path: Path) -> None:
    cache = DiskChunkCache(tmp_path, "layer", max_bytes=100)
    cache.put("a", b"a" * 40)
    cache.put("b", b"b" * 40)
    assert cache.get("a") == b"a" * 40  # now b is the oldest
    cache.put("c", b"c" * 40)
    assert cache.size == 80
    assert cache.get("b") is None and not (tmp_path / "layer" / "b").exists()
    assert "a" in cache and "c" in cache and "b" not in cache
    assert sorted(p.name for p in (tmp_path / "layer").iterdir()) == ["a", "c"]

    cache.put("c", b"C" * 10)  # replaced: counted once
    assert cache.size == 50 and cache.get("c") == b"C" * 10
    cache.put("huge", b"h" * 101)  # larger than the whole cache: not kept
    assert cache.get("huge") is None and cache.size == 50


def test_cache_generation_moves_only_when_its_keys_change(tmp_path: Path) -> None:
    """The layer server recounts cached chunks only when this number moves."""
    cache = DiskChunkCache(tmp_path, "layer", max_bytes=100)
    start = cache.generation
    assert "x" not in cache and cache.get("x") is None and cache.generation == start
    cache.put("a", b"a" * 60)
    assert cache.generation == start + 1
    assert cache.get("a") == b"a" * 60 and cache.generation == start + 1  # a read changes nothing
    cache.put("b", b"b" * 60)  # evicts a
    assert cache.generation == start + 2 and "a" not in cache


def test_the_bound_holds_for_every_layer_together(tmp_path: Path) -> None:
    """Layer servers share the cache root: the bound is for all of it, and the least recently
    used file goes first, whichever layer it belongs to."""
    one = DiskChunkCache(tmp_path, "one", max_bytes=100)
    two = DiskChunkCache(tmp_path, "two", max_bytes=100)
    one.put("x", b"x" * 50)
    two.put("y", b"y" * 30)
    assert one.get("x") == b"x" * 50  # now y is the least recently used of all
    two.put("z", b"z" * 40)  # 120 bytes in all: y goes
    assert sorted(p.name for p in tmp_path.glob("*/*")) == ["x", "z"]
    two.put("w", b"w" * 45)  # 135: x, another layer's, is the oldest now
    assert sorted(p.name for p in tmp_path.glob("*/*")) == ["w", "z"]
    assert "x" in one  # (not yet noticed) ...
    generation = one.generation
    assert one.get("x") is None and "x" not in one and one.size == 0  # ... noticed on use
    assert one.generation == generation + 1
    assert sum(p.stat().st_size for p in tmp_path.glob("*/*")) <= 100


def test_cache_reopens_with_what_is_on_disk(tmp_path: Path) -> None:
    cache = DiskChunkCache(tmp_path, "layer", max_bytes=100)
    cache.put("old", b"o" * 30)
    time.sleep(0.01)
    cache.put("new", b"n" * 30)
    os.utime(tmp_path / "layer" / "old", (1, 1))  # atime order decides the LRU order
    (tmp_path / "layer" / ".tmpXYZ").write_bytes(b"half a put")
    again = DiskChunkCache(tmp_path, "layer", max_bytes=100)
    assert again.size == 60 and "old" in again and "new" in again
    assert not (tmp_path / "layer" / ".tmpXYZ").exists()
    again.put("more", b"m" * 50)
    assert "old" not in again and again.get("new") == b"n" * 30 and again.size == 80


# -- ResilientSource -----------------------------------------------------------------------


class FlakySource:
    """A BlobSource over bytes whose first ``failures`` reads raise ``error``."""

    def __init__(self, data: bytes, failures: int = 0,
                 error: Exception | None = None) -> None:
        self.data = data
        self.failures = failures
        self.error = error or RegistryUnavailable("registry away")
        self.calls: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, size: int) -> bytes:
        self.calls.append((offset, size))
        if self.failures is None or self.failures > 0:
            if self.failures is not None:
                self.failures -= 1
            raise self.error
        return self.data[offset : offset + size]


DATA = bytes(range(256)) * 20


@pytest.mark.parametrize("error", [
    RegistryUnavailable("connection refused"),
    ConnectionResetError("reset"),
    RegistryError("bad gateway", status=502),
    RegistryError("too many requests", status=429),
])
def test_transient_failures_are_retried(error: Exception) -> None:
    inner = FlakySource(DATA, failures=2, error=error)
    source = ResilientSource(inner, timeout=10)
    assert source.read_at(100, 50) == DATA[100:150]
    assert len(inner.calls) == 3
    assert (source.stats.retries, source.stats.requests, source.stats.fetched_bytes) == (2, 1, 50)


@pytest.mark.parametrize("error", [RegistryError("no such blob", status=404), ValueError("bug")])
def test_other_failures_are_not_retried(error: Exception) -> None:
    inner = FlakySource(DATA, failures=1, error=error)
    source = ResilientSource(inner, timeout=10)
    with pytest.raises(type(error)):
        source.read_at(0, 10)
    assert len(inner.calls) == 1 and source.stats.retries == 0


def test_a_registry_away_for_longer_than_the_timeout_fails_the_read() -> None:
    inner = FlakySource(DATA, failures=None)  # type: ignore[arg-type]
    source = ResilientSource(inner, timeout=1.0, name="layer 3")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as failed:
        source.read_at(64, 16)
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed <= 2.0, elapsed  # the whole timeout, not more
    assert "layer 3" in str(failed.value) and "[64, 80)" in str(failed.value)
    assert len(inner.calls) >= 2 and source.stats.requests == 0

    calls = len(inner.calls)  # known away now: the next read asks once and fails at once
    started = time.monotonic()
    with pytest.raises(SourceUnavailable):
        source.read_at(0, 16)
    assert time.monotonic() - started < 0.5 and len(inner.calls) == calls + 1
    inner.failures = 0  # back: the first answer ends the waiting-free mode
    assert source.read_at(0, 16) == DATA[:16]
    inner.failures = 1
    assert source.read_at(16, 16) == DATA[16:32]  # (a failure is ridden out again)


def test_small_reads_become_min_request_reads_served_from_the_buffer() -> None:
    inner = FlakySource(DATA)
    source = ResilientSource(inner, min_request=1000)
    assert source.read_at(0, 10) == DATA[:10]
    assert source.read_at(10, 100) == DATA[10:110]
    assert source.read_at(990, 10) == DATA[990:1000]
    assert inner.calls == [(0, 1000)]
    assert source.read_at(len(DATA) - 20, 10) == DATA[-20:-10]  # clipped at the end
    assert inner.calls[-1] == (len(DATA) - 20, 20)
    assert source.read_at(2000, 2000) == DATA[2000:4000]  # large reads pass straight through
    assert inner.calls[-1] == (2000, 2000)

    source.forget()  # bytes that failed verification are fetched again
    assert source.read_at(10, 100) == DATA[10:110]
    assert inner.calls[-1] == (10, 1000)
