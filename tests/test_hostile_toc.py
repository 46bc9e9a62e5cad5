"""Every hostile TOC shape gets a clear error or a safe, documented reading: from the library,
through ``layer verify`` and ``layer extract`` (exit 0 or 1, one line, no traceback, nothing
written outside the target), and where the shape is accepted, through the reader's answers."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from estargz.errors import ChunkDigestMismatch, InvalidTOC
from estargz.format import build_toc_blob, estargz_footer, extract, open_blob, parse_footer
from tarbuild import convert, make_tar, member, with_toc, with_toc_json

BASE = make_tar(
    member("a/", tarfile.DIRTYPE),
    member("a/f", data=b"hello" * 100),
    member("h", tarfile.LNKTYPE, linkname="a/f"),
    member("s", tarfile.SYMTYPE, linkname="/etc/passwd"),
)

Mutation = Callable[[list[dict[str, Any]]], object]


def ent(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in entries if e["name"] == name)


@pytest.fixture(scope="module")
def base() -> bytes:
    return convert(BASE)[0]


REFUSED: dict[str, tuple[Mutation, str]] = {
    "nul-in-name": (lambda es: es.append({"name": "a/n\x00x", "type": "dir"}),
                    r"name holds a NUL byte"),
    "nul-in-link": (lambda es: ent(es, "s").update(linkName="x\x00y"),
                    r"\('s'\): linkName holds a NUL byte"),
    "nul-in-xattr": (lambda es: ent(es, "a/f").update(xattrs={"user.a\x00b": "eA=="}),
                     r"\('a/f'\): xattr name .* holds a NUL byte"),
    "name-over-4095": (lambda es: es.append({"name": "a/" + "x/" * 2500, "type": "dir"}),
                       r"name of 5002 bytes is longer than 4095"),
    "component-over-255": (lambda es: es.append({"name": "a/" + "é" * 130, "type": "dir"}),
                           r"name has a component longer than 255 bytes"),
    "nesting-100000": (lambda es: es.append({"name": "/".join(["d"] * 100_000), "type": "dir"}),
                       r"name of 199999 bytes is longer than 4095"),
    "symlink-target-over-4095": (lambda es: ent(es, "s").update(linkName="x" * 5000),
                                 r"\('s'\): linkName of 5000 bytes"),
    "hardlink-to-missing": (lambda es: ent(es, "h").update(linkName="nope"),
                            r"'h' is a hardlink to 'nope', which is not in the TOC"),
    "hardlink-cycle": (lambda es: (ent(es, "h").update(linkName="h2"),
                                   es.append({"name": "h2", "type": "hardlink",
                                              "linkName": "h"})),
                       r"'h' is a hardlink to 'h2', which is not in the TOC"),
    "hardlink-to-itself": (lambda es: ent(es, "h").update(linkName="h"),
                           r"'h' is a hardlink to 'h'"),
    "hardlink-to-directory": (lambda es: ent(es, "h").update(linkName="a"),
                              r"'h' is a hardlink to 'a'"),
    "unknown-type": (lambda es: es.append({"name": "x", "type": "socket"}),
                     r"unknown type 'socket'"),
    "huge-size": (lambda es: ent(es, "a/f").update(size=1 << 62),
                  r"chunk of 4611686018427387904 bytes .* exceeds"),
    "negative-size": (lambda es: ent(es, "a/f").update(size=-1),
                      r"field 'size' out of range: -1"),
    "size-as-string": (lambda es: ent(es, "a/f").update(size="500"),
                       r"field 'size' must be an integer"),
    "uid-over-32-bits": (lambda es: ent(es, "a/f").update(uid=1 << 40),
                         r"field 'uid' out of range"),
    "device-over-31-bits": (lambda es: es.append({"name": "c", "type": "char",
                                                  "devMajor": 1 << 31}),
                            r"field 'devMajor' out of range"),
    "offset-outside-blob": (lambda es: ent(es, "a/f").update(offset=1 << 40),
                            r"chunk offset 1099511627776 is past the end"),
    "xattr-not-base64": (lambda es: ent(es, "a/f").update(xattrs={"user.x": "!!"}),
                         r"xattr 'user.x' is not valid base64"),
    "root-is-a-file": (lambda es: es.append({"name": "./", "type": "reg"}),
                       r"root entry './' is a reg"),
    "file-as-directory": (lambda es: es.append({"name": "a/f/x", "type": "dir"}),
                          r"'a/f' is used as a directory but is a reg"),
    "symlink-as-directory": (lambda es: es.append({"name": "s/x", "type": "dir"}),
                             r"'s' is used as a directory but is a symlink"),
}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "estargz.cli.main", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _one_clean_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_with_the_reason(base: bytes, case: str, tmp_path: Path) -> None:
    mutate, reason = REFUSED[case]
    blob = with_toc(base, mutate)
    with pytest.raises(InvalidTOC, match=reason):
        open_blob(blob).skip_verify()
    (tmp_path / "blob").write_bytes(blob)
    for args in (("verify",), ("extract",)):
        out = tmp_path / "out"
        proc = _cli("layer", *args, str(tmp_path / "blob"),
                    *((str(out),) if args == ("extract",) else ()))
        assert reason.replace("\\", "")[:12] in _one_clean_line(proc).replace("\\", "")
        assert not out.exists()  # refused before anything was written


def test_unicode_that_json_cannot_carry_is_refused(base: bytes) -> None:
    toc = open_blob(base).toc_json.replace(b'"a/f"', b'"a/\\udcff"', 1)
    with pytest.raises(InvalidTOC, match="not valid JSON"):
        open_blob(with_toc_json(base, toc))


@pytest.mark.parametrize("kind", [tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE,
                                  tarfile.LNKTYPE])
def test_toc_member_that_is_not_a_regular_file(base: bytes, kind: bytes,
                                               tmp_path: Path) -> None:
    toc_offset = parse_footer(base[-51:]).toc_offset
    assert toc_offset is not None
    odd = make_tar(member("stargz.index.json", kind, linkname="elsewhere"))
    blob = base[:toc_offset] + gzip.compress(odd) + estargz_footer(toc_offset)
    with pytest.raises(InvalidTOC, match=r"'stargz\.index\.json' is not a regular file"):
        open_blob(blob)
    (tmp_path / "blob").write_bytes(blob)
    assert "is not a regular file" in _one_clean_line(_cli("layer", "verify",
                                                           str(tmp_path / "blob")))


# --- shapes that are read safely, as documented -------------------------------------------


def test_duplicate_names_last_one_wins(base: bytes, tmp_path: Path) -> None:
    def mutate(es: list[dict[str, Any]]) -> None:
        es.append({"name": "s", "type": "symlink", "linkName": "a/f"})

    reader = open_blob(with_toc(base, mutate)).skip_verify()
    assert reader.stat("s").link_name == "a/f"
    extract(reader, str(tmp_path / "out"))
    assert (tmp_path / "out" / "s").readlink() == Path("a/f")


def test_dotdot_names_are_cleaned_for_reading_and_refused_for_writing(
        base: bytes, tmp_path: Path) -> None:
    blob = with_toc(base, lambda es: es.append({"name": "a/../../x", "type": "dir"}))
    reader = open_blob(blob).skip_verify()
    assert reader.stat("x").type == "dir"  # cleaned as the Go reader does: inside the root
    proc = _cli("layer", "extract", str(_write(tmp_path, blob)), str(tmp_path / "out"))
    assert "'a/../../x' has a '..' component" in _one_clean_line(proc)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_symlinks_out_of_the_tree_are_kept_as_symlinks(base: bytes, tmp_path: Path) -> None:
    blob = with_toc(base, lambda es: es.append({"name": "up", "type": "symlink",
                                                "linkName": "../../../../etc"}))
    extract(open_blob(blob).skip_verify(), str(tmp_path / "out"))
    assert (tmp_path / "out" / "up").readlink() == Path("../../../../etc")
    assert (tmp_path / "out" / "s").readlink() == Path("/etc/passwd")


def test_unknown_fields_and_odd_times_are_read(base: bytes, tmp_path: Path) -> None:
    def mutate(es: list[dict[str, Any]]) -> None:
        ent(es, "a/f").update(modtime="not a time", future={"x": 1}, mode=1 << 40)

    reader = open_blob(with_toc(base, mutate)).skip_verify()
    assert reader.read("a/f") == b"hello" * 100
    extract(reader, str(tmp_path / "out"))
    assert (tmp_path / "out" / "a" / "f").stat().st_mode & 0o7777 == 0  # only permission bits


def test_deepest_and_widest_trees_extract_within_the_descriptor_limit(
        base: bytes, tmp_path: Path) -> None:
    deep = "/".join(["d"] * 2040)  # 4079 bytes: as deep as a name may go

    def mutate(es: list[dict[str, Any]]) -> None:
        es.append({"name": deep, "type": "dir"})
        es.extend({"name": f"w/{i}/x", "type": "dir"} for i in range(3000))

    out = tmp_path / "out"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        extract(open_blob(with_toc(base, mutate)).skip_verify(), str(out))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        dirs = subprocess.run(["find", str(out / "d"), "-type", "d"], check=True,
                              capture_output=True, text=True).stdout.split()
        assert len(dirs) == 2040  # (no path this long can be opened from the root at once)
        assert len(list((out / "w").iterdir())) == 3000
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        subprocess.run(["rm", "-rf", str(out)], check=True)  # (pytest's clean-up would recurse)


def test_a_million_entries_in_one_directory(base: bytes) -> None:
    entries = [{"name": "d", "type": "dir", "mode": 0o755}]
    entries += [{"name": f"d/f{i}", "type": "reg", "mode": 0o644} for i in range(1_000_000)]
    blob = with_toc_json(base, json.dumps({"version": 1, "entries": entries}).encode())
    reader = open_blob(blob).skip_verify()
    names = reader.listdir("d")
    assert len(names) == 1_000_000 and names[0] == "f0"
    assert reader.stat("d/f999999").size == 0 and reader.read("d/f123") == b""


def test_a_chunk_that_inflates_far_beyond_its_size_is_not_inflated(tmp_path: Path) -> None:
    """A gzip bomb: a 10-byte file whose member inflates to 1 GiB. Only the bytes the chunk
    needs are inflated; the digest of those bytes decides."""
    blob, _ = convert(make_tar(member("f", data=b"0123456789")))
    chunk = open_blob(blob).skip_verify().chunks("f")[0]
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(squeeze.compress(zeros) for _ in range(1024)) + squeeze.flush()
    data = blob[:chunk.offset] + bomb  # the last member before the TOC
    evil = data + build_toc_blob(open_blob(blob).toc_json) + estargz_footer(len(data))
    assert open_blob(evil).skip_verify().chunks("f")[0].member_end == len(data)
    script = ("import sys; from estargz.format import open_blob\n"
              "open('/proc/self/clear_refs', 'w').write('5')  # the peak starts here\n"
              "r = open_blob(sys.argv[1]).skip_verify()\n"
              "try: r.read('f')\n"
              "except Exception as e: print(type(e).__name__)\n"
              "print(next(l.split()[1] for l in open('/proc/self/status')"
              " if l.startswith('VmHWM')))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(_write(tmp_path, evil))],
                          capture_output=True, text=True, timeout=120, check=True)
    kind, peak_kib = proc.stdout.split()
    assert kind == ChunkDigestMismatch.__name__  # ten zeros are not "0123456789"
    assert int(peak_kib) < 200 * 1024  # far from the 1 GiB the member holds


def _write(tmp_path: Path, blob: bytes) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(blob)
    return path


def test_toc_tar_with_trailing_garbage_is_still_one_toc(base: bytes) -> None:
    """Bytes after the TOC member's end in its tar are ignored, as by the Go reader."""
    toc_offset = parse_footer(base[-51:]).toc_offset
    assert toc_offset is not None
    raw = gzip.decompress(base[toc_offset:-51])
    blob = base[:toc_offset] + gzip.compress(raw + b"\xff" * 1024) + estargz_footer(toc_offset)
    assert open_blob(blob).toc_digest == open_blob(base).toc_digest


def test_memory_limits_are_configurable(tmp_path: Path) -> None:
    """A TOC or a chunk larger than the deployment allows is refused before it is held."""
    files = [member(f"f{i}", data=bytes([i % 256]) * 5000) for i in range(2000)]
    blob = _write(tmp_path, convert(make_tar(*files), chunk_size=4096)[0])
    assert len(open_blob(str(blob)).toc_json) > 100_000
    env = {**os.environ, "ESTARGZ_MAX_TOC_SIZE": "100000"}
    line = _one_clean_line(subprocess.run(
        [sys.executable, "-m", "estargz.cli.main", "layer", "verify", str(blob)],
        capture_output=True, text=True, env=env, timeout=120, check=False))
    assert "exceeds the limit of 100000 (ESTARGZ_MAX_TOC_SIZE)" in line, line
    env = {**os.environ, "ESTARGZ_MAX_CHUNK_SIZE": "1000"}
    line = _one_clean_line(subprocess.run(
        [sys.executable, "-m", "estargz.cli.main", "layer", "verify", str(blob)],
        capture_output=True, text=True, env=env, timeout=120, check=False))
    assert "exceeds the 1000-byte limit (ESTARGZ_MAX_CHUNK_SIZE)" in line, line
    assert _cli("layer", "verify", str(blob)).returncode == 0
