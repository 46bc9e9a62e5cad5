"""``estargz layer``: convert, verify, show and extract single blobs, no image or registry."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from estargz.cli.output import atomic_output, emit_json, say
from estargz.errors import InvalidFooter, InvalidTar, InvalidTOC
from estargz.format import BlobReader, BuildOptions, build, extract, open_blob

__all__: list[str] = []


def _read_list(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.rstrip("\r") for line in lines if line.strip()]


def _not_a_directory(path: str) -> None:
    """A directory given as a file fails here, named (reading it would fail without a name)."""
    if path != "-" and Path(path).is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)


def _convert(args: argparse.Namespace) -> int:
    prioritized = _read_list(args.prioritized_files) if args.prioritized_files else []
    options = BuildOptions(
        chunk_size=args.chunk_size,
        min_chunk_size=args.min_chunk_size,
        prioritized_files=tuple(prioritized),
        allow_missing_prioritized=args.allow_missing_prioritized,
        compression_level=args.compression_level,
        compression="zstd" if args.zstdchunked else "gzip",
        external_toc=args.external_toc is not None,
        keep_diff_id=args.keep_diff_id,
        workers=args.workers,
        engine=args.engine,
    )
    options.check()  # refuse bad combinations before touching the output
    _not_a_directory(args.input)
    src = sys.stdin.buffer if args.input == "-" else args.input
    with atomic_output(args.output) as dst:
        try:
            result = build(src, dst, options)
        except InvalidTar as exc:
            raise InvalidTar(f"{'standard input' if args.input == '-' else args.input}: {exc}"
                             ) from exc
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
    _not_a_directory(args.blob)
    try:
        blob = open_blob(args.blob, external_toc=external)
    except InvalidFooter as exc:
        raise InvalidFooter(f"{args.blob}: not an eStargz layer: {exc}; `estargz layer "
                            "convert` makes one from a tar or tar.gz") from exc
    except InvalidTOC as exc:
        raise InvalidTOC(f"{args.blob}: {exc}",
                         needs_external_toc=exc.needs_external_toc) from exc
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
