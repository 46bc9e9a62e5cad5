"""Fuzz targets: every parser that reads bytes from outside, fed anything.

A target takes one input and either returns or raises an :class:`~estargz.errors.EstargzError`;
any other exception is a bug. The same targets serve the test suite (hypothesis, a small budget)
and a long run started by hand::

    python3 -m estargz.testing.fuzz blob --time 600        # or: all

which mutates valid seeds (bytes flipped, inserted, cut; spliced between seeds) with hypothesis,
writes each crashing input to ``fuzz-crashes/TARGET-SHA.bin`` and prints a line per crash, so
that it can become a regression test (:func:`replay`).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from estargz.errors import EstargzError
from estargz.testing.tarkit import dir_, file_, hardlink, payload, symlink, tar_of

__all__ = ["TARGETS", "main", "replay", "seeds"]

Target = Callable[[bytes], None]


@functools.cache
def _seed_tar() -> bytes:
    return tar_of(dir_("etc/"), file_("etc/os-release", b"ID=test\n"),
                  file_("bin/tool", payload(9000, seed=3), mode=0o755),
                  symlink("bin/sh", "tool"), hardlink("bin/tool2", "bin/tool"),
                  file_("empty"))


@functools.cache
def _seed_blob(compression: str = "gzip") -> bytes:
    """The seed layer as eStargz, or as zstd:chunked."""
    from estargz.format import BuildOptions, build

    out = io.BytesIO()
    build(io.BytesIO(_seed_tar()), out, BuildOptions(chunk_size=4096, min_chunk_size=0,
                                                     compression=compression))
    return out.getvalue()


def _read_everything(blob: bytes) -> None:
    from estargz.format import open_blob

    reader = open_blob(blob).skip_verify()
    for info in reader.walk():
        if info.type == "reg":
            reader.read(info.name)
    reader.verify()


def footer(data: bytes) -> None:
    from estargz.format import parse_footer

    parse_footer(data)


def toc(data: bytes) -> None:
    """The TOC JSON, inside a valid blob: decoding, indexing, and reading what it says."""
    from estargz.format import build_toc_blob, estargz_footer, parse_footer

    blob = _seed_blob()
    offset = parse_footer(blob[-51:]).toc_offset
    assert offset is not None
    _read_everything(blob[:offset] + build_toc_blob(data, level=1) + estargz_footer(offset))


def blob(data: bytes) -> None:
    _read_everything(data)


def tar(data: bytes) -> None:
    """A layer tar to convert, then the blob read back."""
    from estargz.format import BuildOptions, build

    out = io.BytesIO()
    build(io.BytesIO(data), out, BuildOptions(chunk_size=4096))
    _read_everything(out.getvalue())


def extract(data: bytes) -> None:
    """Extraction writes inside its directory only, whatever the blob says."""
    from estargz.format import extract as extract_tree
    from estargz.format import open_blob

    with tempfile.TemporaryDirectory(prefix="estargz-fuzz-") as box:
        dest = os.path.join(box, "dest")
        try:
            extract_tree(open_blob(data).skip_verify(), dest)
        finally:
            if os.listdir(box) not in ([], ["dest"]):
                raise AssertionError(f"extraction wrote outside its directory: {os.listdir(box)}")


def document(data: bytes) -> None:
    """A manifest or an index, as a registry or a store serves it."""
    from estargz.image.model import parse_document

    parse_document(data)


def config(data: bytes) -> None:
    from estargz.image.config import diff_ids, with_diff_ids

    with_diff_ids(data, [*diff_ids(data), "sha256:" + "0" * 64])


def docker_archive(data: bytes) -> None:
    """``manifest.json`` of a ``docker save`` archive, imported into a fresh store."""
    from estargz.store import ImageStore
    from estargz.store.dockerarchive import import_docker_archive

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, content in (("manifest.json", data), ("layer.tar", _seed_tar()),
                              ("config.json", _seed_config())):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    with tempfile.TemporaryDirectory(prefix="estargz-fuzz-") as box:
        path = Path(box, "image.tar")
        path.write_bytes(buf.getvalue())
        import_docker_archive(ImageStore(Path(box, "store")), path)


def credentials(data: bytes) -> None:
    """A docker ``config.json``: no credential helper is run for this host."""
    from estargz.registry.credentials import credentials_for

    with tempfile.TemporaryDirectory(prefix="estargz-fuzz-") as box:
        path = Path(box, "config.json")
        path.write_bytes(data.replace(b"credsStore", b"credsStorX")
                         .replace(b"credHelpers", b"credHelperX"))
        credentials_for("registry.test:5000", config_path=path)


def reference(data: bytes) -> None:
    from estargz.reference import Reference

    Reference.parse(data.decode("utf-8", "replace"))


TARGETS: dict[str, Target] = {
    "footer": footer, "toc": toc, "blob": blob, "tar": tar, "extract": extract,
    "document": document, "config": config, "docker-archive": docker_archive,
    "credentials": credentials, "reference": reference,
}



@functools.cache
def _seed_config() -> bytes:
    diff_id = hashlib.sha256(_seed_tar()).hexdigest().encode()
    return (b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":'
            b'["sha256:' + diff_id + b'"]},"config":{"Env":["PATH=/bin"]}}')


def seeds(target: str) -> list[bytes]:
    """Valid inputs of ``target``, for mutation."""
    from estargz.format import estargz_footer, open_blob

    blob_seed = _seed_blob()
    digest = "sha256:" + "a" * 64
    manifest = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
                b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'
                + digest.encode() + b'","size":10},"layers":[{"mediaType":'
                b'"application/vnd.oci.image.layer.v1.tar+gzip","digest":"' + digest.encode()
                + b'","size":20,"annotations":{"containerd.io/snapshot/stargz/toc.digest":"'
                + digest.encode() + b'"}}]}')
    index = (b'{"schemaVersion":2,"manifests":[{"mediaType":'
             b'"application/vnd.oci.image.manifest.v1+json","digest":"' + digest.encode()
             + b'","size":30,"platform":{"os":"linux","architecture":"amd64"}}]}')
    return {
        "footer": [estargz_footer(12345), blob_seed[-51:]],
        "toc": [open_blob(blob_seed).toc_json],
        "blob": [blob_seed, _seed_blob("zstd")],
        "tar": [_seed_tar()],
        "extract": [blob_seed, _seed_blob("zstd")],
        "document": [manifest, index],
        "config": [_seed_config()],
        "docker-archive": [b'[{"Config":"config.json","RepoTags":["fuzz:latest"],'
                           b'"Layers":["layer.tar"]}]'],
        "credentials": [b'{"auths":{"registry.test:5000":{"auth":"dXNlcjpwYXNz"}}}'],
        "reference": [b"registry.test:5000/team/app:v1@" + digest.encode(), b"busybox"],
    }[target]


def replay(target: str, data: bytes) -> BaseException | None:
    """Run one input; the exception that is a bug, or None."""
    try:
        TARGETS[target](data)
    except EstargzError:
        return None
    except Exception as exc:  # (anything else is what we are looking for)
        return exc
    return None


def _run(target: str, seconds: float, out_dir: Path) -> tuple[int, int]:
    """Mutate seeds with hypothesis until the time is up; returns (inputs, crashes)."""
    from hypothesis import HealthCheck, given, settings

    from estargz.testing.mutate import mutated

    stop = time.monotonic() + seconds
    counts = [0, 0]
    seen: set[str] = set()

    @settings(max_examples=500, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(mutated(seeds(target)))
    def one(data: bytes) -> None:
        if time.monotonic() > stop:
            return
        counts[0] += 1
        bug = replay(target, data)
        if bug is None:
            return
        key = "".join(traceback.format_exception_only(bug))
        if key in seen:
            return
        seen.add(key)
        counts[1] += 1
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{target}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
        path.write_bytes(data)
        print(f"{target}: {type(bug).__name__}: {bug} -> {path}", flush=True)

    while time.monotonic() < stop:
        one()
    return counts[0], counts[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m estargz.testing.fuzz",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--time", type=float, default=60, help="seconds per target (60)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-crashes"),
                        help="where crashing inputs go (./fuzz-crashes)")
    args = parser.parse_args(argv)
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("the fuzzer needs hypothesis: pip install 'estargz[dev]'", file=sys.stderr)
        return 2
    total = 0
    for name in TARGETS if args.target == "all" else [args.target]:
        inputs, crashes = _run(name, args.time, args.out)
        total += crashes
        print(f"{name}: {inputs} inputs, {crashes} distinct crashes")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
