"""``estargz demo``: the whole blob-level cycle on a small built-in layer, as a first run."""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
from pathlib import Path

from estargz.cli.output import say
from estargz.format import BuildOptions, build, extract, open_blob

__all__ = ["sample_layer"]


def sample_layer() -> bytes:
    """A small layer with the entry kinds a root filesystem has."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name: str, kind: bytes, data: bytes = b"", **attrs: object) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mtime = kind, len(data), 1_700_000_000
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            for key, value in attrs.items():
                setattr(info, key, value)
            tf.addfile(info, io.BytesIO(data) if data else None)

        add("etc", tarfile.DIRTYPE)
        add("etc/os-release", tarfile.REGTYPE, b'NAME="estargz demo"\n')
        add("bin", tarfile.DIRTYPE)
        add("bin/tool", tarfile.REGTYPE, bytes(range(256)) * 40_000, mode=0o755)
        add("bin/alias", tarfile.SYMTYPE, linkname="tool")
        add("etc/hostname", tarfile.REGTYPE, b"demo\n")
        add("etc/hostname.bak", tarfile.LNKTYPE, linkname="etc/hostname")
    return buf.getvalue()


def _demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        tar = work / "layer.tar"
        tar.write_bytes(sample_layer())
        say(f"sample layer: {tar} ({tar.stat().st_size} bytes)")
        for label, options in (
            ("default", BuildOptions(chunk_size=1 << 20)),
            ("min-chunk-size", BuildOptions(chunk_size=1 << 20, min_chunk_size=64_000)),
            ("external TOC + keep diffID", BuildOptions(external_toc=True, keep_diff_id=True)),
        ):
            out = work / f"layer-{label.split()[0]}.esgz"
            with open(out, "wb") as f:
                result = build(tar, f, options)
            reader = open_blob(str(out), external_toc=result.toc_blob).verify_toc(
                result.toc_digest
            )
            files = reader.verify()
            root = work / f"rootfs-{label.split()[0]}"
            extract(reader, str(root))
            print(
                f"{label:28} {result.size:>8} bytes  {len(files)} files verified  "
                f"TOC {result.toc_digest[:19]}…  diffID {result.diff_id[:19]}…"
            )
        print(f"os-release: {(root / 'etc/os-release').read_text().strip()}")
    return 0
