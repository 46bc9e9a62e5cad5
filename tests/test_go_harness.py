"""Tests of the Go interop harness on its own: Go builds, Go reads.

Nothing here imports the Python estargz package; these tests pin down what the
harness reports so that the interop tests built on it can be trusted.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import pathlib
import random
import subprocess
import tarfile
import zlib
from typing import Any

import pytest

CHUNK = 4096
MTIME = 1_700_000_000
MTIME_3339 = "2023-11-14T22:13:20Z"

BIG = random.Random(1234).randbytes(3 * CHUNK + 123)
SMALL = b"hello, estargz\n"
XATTR_DATA = b"has an xattr\n"
UID_DATA = b"owned by 1000:2000\n"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run_harness(harness: pathlib.Path, *args: str | pathlib.Path) -> dict[str, Any]:
    proc = subprocess.run(
        [str(harness), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"esgzharness {args} failed ({proc.returncode}):\n{proc.stderr}"
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def make_tar(path: pathlib.Path, prefix: str = "") -> None:
    """A layer with one entry of every kind the harness must report."""

    def info(name: str, typ: bytes, **kw: Any) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(prefix + name)
        ti.type = typ
        ti.mtime = MTIME
        ti.mode = 0o644
        for k, v in kw.items():
            setattr(ti, k, v)
        return ti

    def reg(tf: tarfile.TarFile, name: str, data: bytes, **kw: Any) -> None:
        ti = info(name, tarfile.REGTYPE, size=len(data), **kw)
        tf.addfile(ti, io.BytesIO(data))

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(info("d/", tarfile.DIRTYPE, mode=0o755))
        reg(tf, "d/big.bin", BIG)
        reg(tf, "d/empty", b"")
        reg(tf, "small.txt", SMALL, mode=0o600)
        reg(tf, "owned.txt", UID_DATA, uid=1000, gid=2000, uname="u", gname="g")
        reg(tf, "xattr.txt", XATTR_DATA, pax_headers={"SCHILY.xattr.user.foo": "bar"})
        tf.addfile(info("d/sym", tarfile.SYMTYPE, linkname="big.bin", mode=0o777))
        tf.addfile(info("d/hard", tarfile.LNKTYPE, linkname=prefix + "d/big.bin"))
        tf.addfile(info("fifo", tarfile.FIFOTYPE))
        tf.addfile(info("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666))
        tf.addfile(info("loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660))


EXPECTED_FILES = {
    "d/big.bin": _sha(BIG),
    "d/empty": _sha(b""),
    "small.txt": _sha(SMALL),
    "owned.txt": _sha(UID_DATA),
    "xattr.txt": _sha(XATTR_DATA),
}
EXPECTED_TYPES = {
    "d": "dir",
    "d/big.bin": "reg",
    "d/empty": "reg",
    "small.txt": "reg",
    "owned.txt": "reg",
    "xattr.txt": "reg",
    "d/sym": "symlink",
    "d/hard": "hardlink",
    "fifo": "fifo",
    "null": "char",
    "loop0": "block",
}


def raw_toc(blob: bytes) -> dict[str, Any]:
    """Decode the TOC JSON straight from the blob (footer -> gzip -> tar -> JSON)."""
    footer = blob[-51:]
    assert footer[32:38] == b"STARGZ"
    toc_off = int(footer[16:32], 16)
    tar_bytes = zlib.decompressobj(31).decompress(blob[toc_off : len(blob) - 51])
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        member = tf.extractfile("stargz.index.json")
        assert member is not None
        toc: dict[str, Any] = json.loads(member.read())
    return toc


def decompress_all(blob: bytes) -> bytes:
    """Concatenated payload of every gzip member in the blob."""
    out = bytearray()
    while blob:
        d = zlib.decompressobj(31)
        out += d.decompress(blob)
        assert d.eof
        blob = d.unused_data
    return bytes(out)


@pytest.mark.parametrize("prefix", ["", "./"])
def test_build_then_read_chunked(
    go_harness: pathlib.Path, tmp_path: pathlib.Path, prefix: str
) -> None:
    src = tmp_path / "in.tar"
    make_tar(src, prefix)
    blob_path = tmp_path / "out.esgz"
    built = run_harness(go_harness, "build", src, blob_path, "-chunk-size", str(CHUNK))
    blob = blob_path.read_bytes()

    assert set(built) == {"toc_digest", "diff_id", "size", "seconds", "missed", "annotations"}
    assert built["annotations"] == {}  # (zstd:chunked's manifest position and checksum)
    assert built["size"] == len(blob)
    assert built["missed"] == []
    assert built["seconds"] >= 0
    assert built["diff_id"] == _sha(decompress_all(blob))

    # The blob really is chunked at 4 KiB, and the TOC digest is of the TOC JSON bytes.
    toc = raw_toc(blob)
    chunks = [e for e in toc["entries"] if e["type"] == "chunk"]
    assert len(chunks) == 3  # 3*4096+123 bytes: a "reg" and three "chunk" entries
    assert [c["chunkOffset"] for c in chunks] == [CHUNK, 2 * CHUNK, 3 * CHUNK]

    got = run_harness(go_harness, "read", blob_path, built["toc_digest"])
    assert set(got) == {"toc_digest", "files", "entries"}
    assert got["toc_digest"] == built["toc_digest"]

    files = dict(got["files"])
    assert files.pop(".no.prefetch.landmark") == _sha(b"\x0f")
    assert files == EXPECTED_FILES

    entries = got["entries"]
    types = {k: v["type"] for k, v in entries.items()}
    types.pop(".no.prefetch.landmark")
    if prefix == "./":
        # Build gives the root "./" no entry of its own here (the tar has none), but
        # "./"-prefixed names must come out cleaned, exactly like the unprefixed ones.
        assert "" not in types
    assert types == EXPECTED_TYPES

    for e in entries.values():
        assert set(e) == {
            "type",
            "mode",
            "uid",
            "gid",
            "linkName",
            "size",
            "devMajor",
            "devMinor",
            "xattrs",
            "modtime",
        }
    assert entries["d"]["mode"] == 0o755
    assert entries["small.txt"]["mode"] == 0o600
    assert entries["d/big.bin"]["size"] == len(BIG)
    assert entries["d/empty"]["size"] == 0
    assert entries["d/sym"]["linkName"] == "big.bin"
    assert entries["d/hard"]["linkName"] == prefix + "d/big.bin"  # kept verbatim
    assert (entries["owned.txt"]["uid"], entries["owned.txt"]["gid"]) == (1000, 2000)
    assert (entries["null"]["devMajor"], entries["null"]["devMinor"]) == (1, 3)
    assert (entries["loop0"]["devMajor"], entries["loop0"]["devMinor"]) == (7, 0)
    assert entries["xattr.txt"]["xattrs"] == {"user.foo": base64.b64encode(b"bar").decode()}
    assert entries["small.txt"]["xattrs"] == {}
    assert entries["small.txt"]["modtime"] == MTIME_3339


def test_build_prioritized(go_harness: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "in.tar"
    make_tar(src)
    prio = tmp_path / "prio.txt"
    prio.write_text("xattr.txt\n/d/big.bin\n\n")
    blob_path = tmp_path / "out.esgz"
    built = run_harness(
        go_harness, "build", src, blob_path, "-chunk-size", str(CHUNK), "-prioritized", prio
    )
    assert built["missed"] == []

    # Prioritized files first, in list order (with their parent dirs), then the landmark.
    names = [e["name"] for e in raw_toc(blob_path.read_bytes())["entries"] if e["type"] != "chunk"]
    assert names[:4] == ["xattr.txt", "d/", "d/big.bin", ".prefetch.landmark"]

    got = run_harness(go_harness, "read", blob_path, built["toc_digest"])
    files = dict(got["files"])
    assert files.pop(".prefetch.landmark") == _sha(b"\x0f")
    assert files == EXPECTED_FILES
    assert {k: v["type"] for k, v in got["entries"].items() if "landmark" not in k} == (
        EXPECTED_TYPES
    )


def test_build_prioritized_missing(go_harness: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "in.tar"
    make_tar(src)
    prio = tmp_path / "prio.txt"
    prio.write_text("small.txt\nno/such/file\n")
    blob_path = tmp_path / "out.esgz"

    proc = subprocess.run(
        [str(go_harness), "build", str(src), str(blob_path), "-prioritized", str(prio)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "not found" in proc.stderr

    built = run_harness(go_harness, "build", "-allow-missing", src, blob_path, "-prioritized", prio)
    assert built["missed"] == ["no/such/file"]
    got = run_harness(go_harness, "read", blob_path, built["toc_digest"])
    assert ".prefetch.landmark" in got["files"]


def test_build_gzip_input_and_level(go_harness: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "in.tar"
    make_tar(src)
    src_gz = tmp_path / "in.tar.gz"
    src_gz.write_bytes(gzip.compress(src.read_bytes()))

    plain = run_harness(go_harness, "build", src, tmp_path / "a.esgz", "-level", "1")
    from_gz = run_harness(go_harness, "build", src_gz, tmp_path / "b.esgz", "-level", "1")
    assert plain["diff_id"] == from_gz["diff_id"]
    assert plain["toc_digest"] == from_gz["toc_digest"]
    assert (tmp_path / "a.esgz").read_bytes() == (tmp_path / "b.esgz").read_bytes()

    best = run_harness(go_harness, "build", src, tmp_path / "c.esgz")  # default level 9
    assert best["diff_id"] != plain["diff_id"]  # the TOC records other compressed offsets
    got = run_harness(go_harness, "read", tmp_path / "b.esgz", from_gz["toc_digest"])
    assert got["files"]["d/big.bin"] == _sha(BIG)


def test_read_wrong_digest_fails(go_harness: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "in.tar"
    make_tar(src)
    blob_path = tmp_path / "out.esgz"
    built = run_harness(go_harness, "build", src, blob_path, "-chunk-size", str(CHUNK))
    wrong = "sha256:" + "0" * 64
    assert wrong != built["toc_digest"]
    proc = subprocess.run(
        [str(go_harness), "read", str(blob_path), wrong],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "VerifyTOC" in proc.stderr


def test_read_corrupt_chunk_fails(go_harness: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A blob whose data no longer matches its chunk digests is rejected."""
    src = tmp_path / "in.tar"
    make_tar(src)
    blob_path = tmp_path / "out.esgz"
    built = run_harness(
        go_harness, "build", src, blob_path, "-chunk-size", str(CHUNK), "-level", "0"
    )
    blob = bytearray(blob_path.read_bytes())
    # At level 0 the data is stored: flip one byte of the big file's second chunk.
    second = BIG[CHUNK : 2 * CHUNK]
    pos = blob.find(second[:64])
    assert pos > 0
    blob[pos + 10] ^= 0xFF
    # Keep the gzip member valid (fix its CRC) so only the digest check can notice.
    member_start = next(
        e["offset"] for e in raw_toc(bytes(blob))["entries"] if e.get("chunkOffset") == CHUNK
    )
    assert blob[member_start : member_start + 4] == b"\x1f\x8b\x08\x00"  # no optional fields
    d = zlib.decompressobj(-15)  # raw deflate: zlib would refuse the stale CRC
    payload = d.decompress(bytes(blob[member_start + 10 :]))
    crc_pos = len(blob) - len(d.unused_data)
    blob[crc_pos : crc_pos + 4] = zlib.crc32(payload).to_bytes(4, "little")
    blob_path.write_bytes(bytes(blob))
    proc = subprocess.run(
        [str(go_harness), "read", str(blob_path), built["toc_digest"]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout
    assert "d/big.bin" in proc.stderr
    assert "does not match its chunkDigest" in proc.stderr


def test_gzip9(go_harness: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(BIG * 4)
    out = tmp_path / "out.gz"
    got = run_harness(go_harness, "gzip9", src, out)
    assert set(got) == {"seconds", "size"}
    assert got["size"] == out.stat().st_size
    assert got["seconds"] >= 0
    assert gzip.decompress(out.read_bytes()) == BIG * 4


def test_usage_errors(go_harness: pathlib.Path) -> None:
    for args in ([], ["nope"], ["read", "only-one"], ["build", "x"], ["gzip9"]):
        proc = subprocess.run([str(go_harness), *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 2, args
        assert "usage" in proc.stderr
