"""Every flag of ctr-remote's verbs that estargz shares is accepted: implemented, or named in
``cli.compat.INAPPLICABLE`` (containerd-only), whose reason is printed when it is given.

The flag names below are data, read once from the Go sources: stargz-snapshotter's
``cmd/ctr-remote/commands/*.go`` at 7cf47cba (v0.18.2 and the ``--estargz-parallelism`` added
after it), and the flags those commands take from containerd v2.2.3's ``cmd/ctr`` (the
registry, snapshotter and label flags; ``ctr images pull`` and ``push``, which ctr-remote keeps;
the global flags). ``--help``/``-h`` are left out (argparse has them everywhere).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from estargz.cli.compat import INAPPLICABLE
from estargz.cli.main import build_parser, main
from estargz.cli.units import parse_count, parse_size

ROOT = Path(__file__).resolve().parent.parent

_REGISTRY = {  # containerd cmd/ctr/commands: RegistryFlags
    "--skip-verify", "-k", "--plain-http", "--user", "-u", "--refresh", "--hosts-dir",
    "--tlscacert", "--tlscert", "--tlskey", "--http-dump", "--http-trace",
}

UPSTREAM: dict[str, set[str]] = {
    # ctr's global flags (cmd/ctr/app), before the verb
    "": {"--debug", "--address", "-a", "--timeout", "--connect-timeout", "--namespace", "-n"},
    # ctr images pull: RegistryFlags, SnapshotterFlags, LabelFlag and its own
    "pull": _REGISTRY | {
        "--snapshotter", "--label", "--platform", "--all-platforms", "--all-metadata",
        "--skip-metadata", "--print-chainid", "--max-concurrent-downloads", "--local",
        "--sync-fs",
    },
    # ctr images push: RegistryFlags and its own
    "push": _REGISTRY | {
        "--manifest", "--manifest-type", "--platform", "--max-concurrent-uploaded-layers",
        "--local", "--allow-non-distributable-blobs",
    },
    # rpull.go: RegistryFlags, LabelFlag, its own, SnapshotterFlags
    "rpull": _REGISTRY | {
        "--label", "--skip-content-verify", "--ipfs", "--use-containerd-labels", "--snapshotter",
    },
    # convert.go
    "convert": {
        "--estargz", "--estargz-record-in", "--estargz-compression-level",
        "--estargz-chunk-size", "--estargz-min-chunk-size", "--estargz-parallelism",
        "--estargz-external-toc", "--estargz-keep-diff-id", "--estargz-gzip-helper", "--GH",
        "--zstdchunked", "--zstdchunked-record-in", "--zstdchunked-compression-level",
        "--zstdchunked-chunk-size", "--uncompress", "--oci", "--platform", "--all-platforms",
    },
    # get-toc-digest.go
    "get-toc-digest": {"--zstdchunked", "--dump-toc"},
}

_POSITIONALS = {"": ["i", "ls"], "pull": ["r"], "push": ["r"], "rpull": ["r"],
                "convert": ["a", "b"], "get-toc-digest": ["r", "sha256:" + "0" * 64]}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parser_of(verb: str) -> argparse.ArgumentParser:
    parser = build_parser()
    return _subcommands(_subcommands(parser)["i"])[verb] if verb else parser


def _value(action: argparse.Action, flag: str) -> list[str]:
    """A value the flag accepts (none for a switch)."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(next(iter(action.choices)))]
    if action.type in (int, parse_size, parse_count):
        return ["1"]
    return ["linux/amd64" if flag == "--platform" else "x"]


CASES = [(verb, flag) for verb, flags in UPSTREAM.items() for flag in sorted(flags)]


@pytest.mark.parametrize(("verb", "flag"), CASES, ids=[f"{v or 'global'}{f}" for v, f in CASES])
def test_every_upstream_flag_is_accepted(verb: str, flag: str) -> None:
    parser = _parser_of(verb)
    action = parser._option_string_actions.get(flag)
    assert action is not None, f"estargz {'i ' + verb if verb else ''} does not accept {flag}"
    argv = [flag, *_value(action, flag), *_POSITIONALS[verb]]
    if verb:
        argv = ["i", verb, *argv]
    build_parser().parse_args(argv)  # exits (SystemExit) on anything it refuses


def test_the_inapplicable_list_is_short_and_only_upstreams() -> None:
    """Only containerd's own flags are excused, each with a reason, none also implemented."""
    for verb, flags in INAPPLICABLE.items():
        for flag, (_, reason) in flags.items():
            assert flag in UPSTREAM[verb], (verb, flag)
            assert len(reason) > 20, (verb, flag)
    total = sum(len(f) for f in INAPPLICABLE.values())
    assert total <= 25, total


def test_the_readme_lists_every_inapplicable_flag() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("containerd-only flags"):]
    for flags in INAPPLICABLE.values():
        for flag in flags:
            assert re.search(rf"`{re.escape(flag)}[` ]", section), flag


def test_an_inapplicable_flag_says_why_once(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    code = main(["--root", str(tmp_path / "store"), "-n", "k8s.io", "i", "pull",
                 "--snapshotter", "stargz", "--label", "a=b", "--label", "c=d", "--local",
                 "BAD::REF"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[:4] == [
        f"estargz: --namespace ignored: {INAPPLICABLE[''][ '--namespace'][1]}",
        f"estargz: --snapshotter ignored: {INAPPLICABLE['pull']['--snapshotter'][1]}",
        f"estargz: --label ignored: {INAPPLICABLE['pull']['--label'][1]}",
        f"estargz: --local ignored: {INAPPLICABLE['pull']['--local'][1]}",
    ]
    assert lines[4].startswith("estargz: error: invalid image reference 'BAD::REF'")
    assert len(lines) == 5


def test_sizes_take_units_everywhere() -> None:
    """Every flag that takes a size accepts 4M (as ``layer convert --chunk-size`` does)."""
    parser = build_parser()
    sized = []
    stack = [parser]
    while stack:
        p = stack.pop()
        stack += _subcommands(p).values()
        for action in p._actions:
            if any("size" in s or s.endswith("-request") for s in action.option_strings):
                sized.append((p.prog, action.option_strings[0], action.type))
    assert len(sized) >= 6, sized
    assert all(t is parse_size for _, _, t in sized), sized
    args = parser.parse_args(["i", "convert", "--estargz", "--estargz-chunk-size", "4M",
                              "--estargz-min-chunk-size", "64K", "a", "b"])
    assert (args.estargz_chunk_size, args.estargz_min_chunk_size) == (4 << 20, 64 << 10)
