"""Interoperability with the Go reference (stargz-snapshotter v0.12), both ways.

(a) Go opens our blobs, verifies the TOC against our digest, and reads every file.
(b) Go builds blobs from the same tars; we open them, verify the TOC with the digest Go
    reports (so our TOC digest is Go's), check every chunk and read identical contents.
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import subprocess
import sys
import tarfile
from typing import Any

import pytest

from estargz.format import BlobReader, BuildOptions, build, open_blob
from test_go_harness import EXPECTED_FILES, make_tar, run_harness

LANDMARKS = {".no.prefetch.landmark", ".prefetch.landmark"}


def _stdlib_tar(path: pathlib.Path, parents: bool = True) -> dict[str, str]:
    """A realistic layer: a slice of this Python's standard library.

    Without ``parents`` the tar has no entries for usr/, usr/lib/ and usr/lib/python3/, as
    tars made from file lists often do.
    """
    root = pathlib.Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    files: dict[str, str] = {}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        if parents:
            for d in ("usr", "usr/lib", "usr/lib/python3"):
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                tf.addfile(info)
        for sub in ("json", "email", "http", "xml"):
            for p in [root / sub, *sorted((root / sub).rglob("*"))]:
                if "__pycache__" in p.parts:
                    continue
                arc = "usr/lib/python3/" + str(p.relative_to(root))
                tf.add(p, arc, recursive=False)
                if p.is_file() and not p.is_symlink():
                    files[arc] = "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def _our_entries(reader: BlobReader) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for info in reader.walk():
        if not info.name:
            continue
        out[info.name] = {
            "type": "hardlink" if info.hardlink_to else info.type,
            "mode": info.mode,
            "uid": info.uid,
            "gid": info.gid,
            "size": 0 if info.hardlink_to else info.size,
            "devMajor": info.dev_major,
            "devMinor": info.dev_minor,
        }
    return out


def _go_entries(go: dict[str, Any]) -> dict[str, dict[str, Any]]:
    keys = ("type", "mode", "uid", "gid", "size", "devMajor", "devMinor")
    return {name: {k: e[k] for k in keys} for name, e in go["entries"].items() if name}


CASES = [
    pytest.param("rich", "", 4096, False, id="rich-chunk4k"),
    pytest.param("rich", "./", 1000, False, id="rich-dotslash-chunk1000"),
    pytest.param("rich", "", 4 << 20, True, id="rich-default-prioritized"),
    pytest.param("stdlib", "", 4 << 20, False, id="stdlib-default"),
    pytest.param("stdlib", "", 16384, True, id="stdlib-chunk16k-prioritized"),
]


def _make_input(
    kind: str, prefix: str, path: pathlib.Path, parents: bool = True
) -> tuple[dict[str, str], list[str]]:
    """The tar, the expected file digests, and a prioritized list for it."""
    if kind == "rich":
        make_tar(path, prefix)
        return dict(EXPECTED_FILES), ["xattr.txt", "d/hard", "small.txt"]
    files = _stdlib_tar(path, parents)
    prio = [n for n in sorted(files) if n.endswith("__init__.py")][:5]
    return files, prio


@pytest.mark.parametrize(("kind", "prefix", "chunk", "prioritize"), CASES)
def test_go_reads_our_blobs(
    go_harness: pathlib.Path,
    tmp_path: pathlib.Path,
    kind: str,
    prefix: str,
    chunk: int,
    prioritize: bool,
) -> None:
    tar = tmp_path / "in.tar"
    files, prio = _make_input(kind, prefix, tar, parents=False)  # Go's builder needs parents
    blob = tmp_path / "ours.esgz"
    options = BuildOptions(chunk_size=chunk, prioritized_files=tuple(prio) if prioritize else ())
    with open(blob, "wb") as f:
        result = build(tar, f, options)

    go = run_harness(go_harness, "read", blob, result.toc_digest)

    assert go["toc_digest"] == result.toc_digest
    go_files = {k: v for k, v in go["files"].items() if k not in LANDMARKS}
    assert go_files == files
    ours = open_blob(str(blob)).verify_toc(result.toc_digest)
    assert _go_entries(go) == _our_entries(ours)
    if prioritize:
        assert ".prefetch.landmark" in go["files"]
        assert ours.prefetch_size > 0


@pytest.mark.parametrize(("kind", "prefix", "chunk", "prioritize"), CASES)
def test_we_read_go_blobs(
    go_harness: pathlib.Path,
    tmp_path: pathlib.Path,
    kind: str,
    prefix: str,
    chunk: int,
    prioritize: bool,
) -> None:
    tar = tmp_path / "in.tar"
    files, prio = _make_input(kind, prefix, tar)
    blob = tmp_path / "go.esgz"
    args: list[str | pathlib.Path] = ["build", tar, blob, "-chunk-size", str(chunk)]
    if prioritize:
        prio_file = tmp_path / "prio.txt"
        prio_file.write_text("\n".join(prio) + "\n")
        args += ["-prioritized", prio_file]
    built = run_harness(go_harness, *args)

    reader = open_blob(str(blob)).verify_toc(built["toc_digest"])  # our digest == Go's
    digests = reader.verify()
    assert {k: v for k, v in digests.items() if k not in LANDMARKS} == files
    for name, want in files.items():
        data = reader.read(name)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == want
        if len(data) > 10:  # a read across the middle of the file, maybe across chunks
            mid = len(data) // 2
            assert reader.read(name, mid - 5, 10) == data[mid - 5 : mid + 5]
    go = run_harness(go_harness, "read", blob, built["toc_digest"])
    assert _go_entries(go) == _our_entries(reader)

    # and a Go blob converted again by us reads the same files
    again = io.BytesIO()
    result = build(io.BytesIO(blob.read_bytes()), again, BuildOptions(chunk_size=chunk))
    reread = open_blob(again.getvalue()).verify_toc(result.toc_digest).verify()
    assert {k: v for k, v in reread.items() if k not in LANDMARKS} == files


def test_prioritized_without_parent_entries(
    go_harness: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The Go builder refuses to prioritize a file whose parent has no tar entry; we do not."""
    tar = tmp_path / "in.tar"
    files, prio = _make_input("stdlib", "", tar, parents=False)
    prio_file = tmp_path / "prio.txt"
    prio_file.write_text("\n".join(prio) + "\n")
    proc = subprocess.run(
        [str(go_harness), "build", str(tar), str(tmp_path / "go.esgz"), "-prioritized",
         str(prio_file)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode != 0 and "not found" in proc.stderr

    out = io.BytesIO()
    result = build(tar, out, BuildOptions(prioritized_files=tuple(prio)))
    reader = open_blob(out.getvalue()).verify_toc(result.toc_digest)
    names = [e.name for e in result.entries if e.type != "chunk"]
    landmark = names.index(".prefetch.landmark")
    assert set(prio) <= set(names[:landmark])
    assert {k: v for k, v in reader.verify().items() if k not in LANDMARKS} == files
    (tmp_path / "ours.esgz").write_bytes(out.getvalue())
    go = run_harness(go_harness, "read", tmp_path / "ours.esgz", result.toc_digest)
    assert {k: v for k, v in go["files"].items() if k not in LANDMARKS} == files
