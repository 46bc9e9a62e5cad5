"""``estargz layer``: convert, verify, show and extract single blobs, no image or registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from estargz.cli.output import atomic_output, emit_json, say
from estargz.cli.units import parse_size
from estargz.format import BlobReader, BuildOptions, build, extract, open_blob
from estargz.format.compression import available_engines

__all__ = ["add_layer_commands"]


def _read_list(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.rstrip("\r") for line in lines if line.strip()]


def _convert(args: argparse.Namespace) -> int:
    prioritized = _read_list(args.prioritized_files) if args.prioritized_files else []
    options = BuildOptions(
        chunk_size=args.chunk_size,
        min_chunk_size=args.min_chunk_size,
        prioritized_files=tuple(prioritized),
        allow_missing_prioritized=args.allow_missing_prioritized,
        compression_level=args.compression_level,
        external_toc=args.external_toc is not None,
        keep_diff_id=args.keep_diff_id,
        workers=args.workers,
        engine=args.engine,
    )
    options.check()  # refuse bad combinations before touching the output
    src = sys.stdin.buffer if args.input == "-" else args.input
    with atomic_output(args.output) as dst:
        result = build(src, dst, options)
        if args.external_toc is not None:
            assert result.toc_blob is not None
            with atomic_output(args.external_toc) as toc_out:
                toc_out.write(result.toc_blob)
    for name in result.missed_prioritized:
        say(f"warning: prioritized file {name!r} is not in the layer")
    if args.json:
        emit_json(result.summary(), sys.stderr if args.output == "-" else sys.stdout)
    elif args.output != "-":
        say(
            f"{args.output}: {result.size} bytes, {result.digest}, TOC {result.toc_digest}, "
            f"diffID {result.diff_id} ({result.engine} level {result.compression_level})"
        )
    return 0


def _open(args: argparse.Namespace) -> BlobReader:
    external = Path(args.external_toc).read_bytes() if args.external_toc else None
    blob = open_blob(args.blob, external_toc=external)
    digest = getattr(args, "toc_digest", None)
    return blob.verify_toc(digest) if digest else blob.skip_verify()


def _verify(args: argparse.Namespace) -> int:
    reader = _open(args)
    files = reader.verify()
    if args.json:
        emit_json({"toc_digest": reader.toc_digest, "files": files})
    else:
        chunks = sum(len(reader.chunks(name)) for name in files)
        trusted = "matches the given digest" if args.toc_digest else "not checked (no --toc-digest)"
        say(f"OK: {len(files)} files, {chunks} chunks verified; TOC {reader.toc_digest} {trusted}")
    return 0


def _toc(args: argparse.Namespace) -> int:
    reader = _open(args)
    sys.stdout.buffer.write(reader.toc_json + b"\n")
    return 0


def _extract(args: argparse.Namespace) -> int:
    reader = _open(args)
    report = extract(reader, args.dir, strip_leading_slash=args.strip_leading_slash)
    for warning in report.warnings:
        say(f"warning: {warning}")
    say(f"extracted {report.entries} entries ({report.bytes} bytes) to {args.dir}")
    return 0


def _blob_args(p: argparse.ArgumentParser, digest: bool = True) -> None:
    p.add_argument("blob", help="eStargz blob file")
    p.add_argument("--external-toc", metavar="TOC", help="TOC blob of an external-TOC layer")
    if digest:
        p.add_argument("--toc-digest", metavar="D", help="expected TOC digest (sha256:...)")


def add_layer_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    layer = sub.add_parser("layer", help="work on single layer blobs")
    cmds = layer.add_subparsers(dest="layer_command", required=True, metavar="COMMAND")

    p = cmds.add_parser("convert", help="tar or tar.gz to eStargz")
    p.add_argument("input", metavar="IN", help="tar or tar.gz ('-' for stdin)")
    p.add_argument("output", metavar="OUT", help="eStargz blob ('-' for stdout)")
    p.add_argument("--chunk-size", type=parse_size, default=4 << 20, metavar="N")
    p.add_argument("--min-chunk-size", type=parse_size, default=0, metavar="N",
                   help="pack small payloads into shared gzip members (innerOffset)")
    p.add_argument("--prioritized-files", metavar="FILE", help="paths to put first, one a line")
    p.add_argument("--allow-missing-prioritized", action="store_true",
                   help="warn instead of failing when a prioritized path is not in the tar")
    p.add_argument("--compression-level", type=int, default=9, metavar="L", choices=range(1, 10))
    p.add_argument("--external-toc", metavar="TOC_OUT", help="write the TOC blob here")
    p.add_argument("--keep-diff-id", action="store_true",
                   help="keep the uncompressed tar byte-identical (needs --external-toc)")
    p.add_argument("--workers", type=int, metavar="N", help="compression threads")
    p.add_argument("--engine", choices=available_engines(), help="deflate implementation")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_convert)

    p = cmds.add_parser("verify", help="check the TOC and every chunk")
    _blob_args(p)
    p.add_argument("--json", action="store_true", help="print file digests as JSON")
    p.set_defaults(func=_verify)

    p = cmds.add_parser("toc", help="print the TOC JSON")
    _blob_args(p)
    p.set_defaults(func=_toc)

    p = cmds.add_parser("extract", help="unpack the blob into a directory")
    _blob_args(p)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--strip-leading-slash", action="store_true",
                   help="extract absolute names inside DIR instead of refusing them")
    p.set_defaults(func=_extract)
