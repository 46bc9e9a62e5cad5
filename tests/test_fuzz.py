"""Property tests: valid inputs round-trip, damaged ones give a project error and nothing else,
and for any tar our build then read agrees with the tar and with Go's reader.

The long run of the same targets is ``python3 -m estargz.testing.fuzz TARGET --time 600``;
what it finds lands in ``REGRESSIONS``.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import subprocess
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estargz.format import BuildOptions, build, estargz_footer, open_blob, parse_footer
from estargz.format.toc import decode_toc, encode_toc
from estargz.format.types import MAX_DEVICE, MAX_ID, TOCEntry
from estargz.testing import assert_matches_tar, dir_, file_, hardlink, payload, symlink, tar_of
from estargz.testing.fuzz import TARGETS, replay, seeds
from estargz.testing.mutate import mutated

SUITE = settings(derandomize=True, database=None, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BUDGET = {"docker-archive": 40, "extract": 100}

REGRESSIONS = [  # inputs the fuzzer found, each once a traceback
    ("document", b'{"schemaVersion": 2, "mediaType": {"a": {}}, "layers": []}'),
    ("credentials", '{"auths": {"r.test:5000": {"auth": "\U0007f9b1\u00b4}"}}}'.encode()),
    ("docker-archive", b'[{"Config": "config.json", "RepoTags": 3, "Layers": ["layer.tar"]}]'),
    ("docker-archive", b'[{"Config": "config.json", "RepoTags": [["x"]], '
                       b'"Layers": ["layer.tar"]}]'),
    ("tar", bytes.fromhex(
        "1f8b08046574632f0000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000000000000000000000000000000000000000000000"
    )),
]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_are_accepted(target: str) -> None:
    for data in seeds(target):
        TARGETS[target](data)  # valid by construction: not even a project error


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_damaged_inputs_give_project_errors_only(target: str) -> None:
    @settings(SUITE, max_examples=BUDGET.get(target, 200))
    @given(mutated(seeds(target)))
    def check(data: bytes) -> None:
        bug = replay(target, data)
        assert bug is None, f"{target}: {type(bug).__name__}: {bug}"

    check()


@pytest.mark.parametrize(("target", "data"), REGRESSIONS, ids=[t for t, _ in REGRESSIONS])
def test_found_by_the_fuzzer(target: str, data: bytes) -> None:
    assert replay(target, data) is None


@SUITE
@given(st.integers(0, (1 << 64) - 1))
def test_footer_round_trip(offset: int) -> None:
    assert parse_footer(estargz_footer(offset)).toc_offset == offset


_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1,
                 max_size=30).filter(lambda n: n not in (".", ".."))
_entries = st.builds(
    TOCEntry, name=_names, type=st.sampled_from(["dir", "reg", "symlink", "fifo"]),
    size=st.integers(0, 1 << 40), mode=st.integers(0, 0o7777), uid=st.integers(0, MAX_ID),
    gid=st.integers(0, MAX_ID), dev_major=st.integers(0, MAX_DEVICE),
    modtime=st.just("2024-01-02T03:04:05Z"), link_name=_names,
    xattrs=st.dictionaries(st.text("abcuser.", min_size=1, max_size=8), st.binary(max_size=8)),
)


@SUITE
@given(st.lists(_entries, max_size=20))
def test_toc_round_trip(entries: list[TOCEntry]) -> None:
    assert decode_toc(encode_toc(entries)) == entries


_MEMBERS = st.lists(
    st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink"]),
              st.sampled_from(["a", "b", "a/c", "a/d", "e/f/g"]),
              st.integers(0, 20_000), st.integers(0, 9)),
    min_size=1, max_size=12,
)


def _tar(spec: list[tuple[str, str, int, int]]) -> bytes:
    """A tar from the spec; links point at an earlier regular file (or are left out)."""
    members, files, seen = [], [], set()
    for kind, name, size, seed in spec:
        if name in seen:
            continue  # (duplicates are the reader's business, tested elsewhere)
        if kind == "file":
            members.append(file_(name, payload(size, seed), mode=0o600 + seed))
            files.append(name)
        elif kind == "dir" and not any(n.startswith(name + "/") for n in seen):
            members.append(dir_(name + "/"))
        elif kind == "symlink":
            members.append(symlink(name, "../" * seed + "target"))
        elif kind == "hardlink" and files:
            members.append(hardlink(name, files[seed % len(files)]))
        else:
            continue
        seen.add(name)
    return tar_of(*members)


def _nests_a_file(tar: bytes) -> bool:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        names = {m.name.rstrip("/"): m.isdir() for m in tf}
    return any(not is_dir and any(n.startswith(name + "/") for n in names)
               for name, is_dir in names.items())


def _build(tar: bytes, chunk_size: int, min_chunk_size: int) -> bytes:
    out = io.BytesIO()
    build(io.BytesIO(tar), out, BuildOptions(chunk_size=chunk_size, min_chunk_size=min_chunk_size))
    return out.getvalue()


@settings(SUITE, max_examples=60)
@given(_MEMBERS, st.sampled_from([4096, 8192, 1 << 20]), st.sampled_from([0, 2048, 65536]))
def test_any_tar_reads_back_as_it_was(spec: list[tuple[str, str, int, int]], chunk_size: int,
                                      min_chunk_size: int) -> None:
    tar = _tar(spec)
    if _nests_a_file(tar):
        return  # a file used as a directory: refused, as test_hostile_toc shows
    reader = open_blob(_build(tar, chunk_size, min_chunk_size)).skip_verify()
    assert_matches_tar(reader, tar, chunk_size=chunk_size)


@settings(SUITE, max_examples=20)
@given(_MEMBERS)
def test_go_reads_what_we_build_from_any_tar(go_harness: pathlib.Path, tmp_path_factory:
                                             pytest.TempPathFactory,
                                             spec: list[tuple[str, str, int, int]]) -> None:
    """(Without min-chunk-size: Go 0.12's reader predates innerOffset.)"""
    tar = _tar(spec)
    if _nests_a_file(tar):
        return
    blob = _build(tar, 4096, 0)
    ours = open_blob(blob).skip_verify()
    path = tmp_path_factory.mktemp("go-diff") / "blob"
    path.write_bytes(blob)
    proc = subprocess.run([str(go_harness), "read", str(path), ours.toc_digest],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == ours.verify()


@settings(SUITE, max_examples=40)
@given(mutated(seeds("blob")))
def test_the_cli_fed_damaged_blobs_says_one_line(tmp_path_factory: pytest.TempPathFactory,
                                                 data: bytes) -> None:
    from estargz.cli.main import run

    work = tmp_path_factory.mktemp("cli-fuzz")
    (work / "blob").write_bytes(data)
    for args in (["layer", "verify", str(work / "blob")],
                 ["layer", "extract", str(work / "blob"), str(work / "out")]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = run(args)
        lines = err.getvalue().splitlines()
        assert code in (0, 1), (args, err.getvalue())
        assert code == 0 or (len(lines) == 1 and lines[0].startswith("estargz: error")), lines
    assert sorted(p.name for p in work.iterdir()) in (["blob"], ["blob", "out"])
