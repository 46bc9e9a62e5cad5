"""``estargz i rpull | umount | mounts``: lazy mounts of registry images."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from estargz.cli.common import add_registry_flags, open_store, registry_client
from estargz.cli.output import emit_json
from estargz.cli.units import parse_seconds, parse_size
from estargz.image.model import Platform
from estargz.lazy.mount import list_mounts, rpull, umount
from estargz.lazy.spec import CACHE_BYTES, MIN_REQUEST, READ_TIMEOUT
from estargz.registry import Reference

__all__ = ["add_lazy_commands"]


def _cmd_rpull(args: argparse.Namespace) -> int:
    store = open_store(args)
    ref = Reference.parse(args.ref)
    platform = Platform.parse(args.platform) if args.platform else None
    with registry_client(args, ref) as client:
        spec = rpull(
            store, client, ref, mountpoint=args.mount, toc_image=args.toc_image,
            platform=platform, upper=args.upper, background_fetch=not args.no_background_fetch,
            plain_http=args.plain_http, skip_verify=args.skip_verify, user=args.user or "",
            min_request=args.min_request, read_timeout=args.read_timeout,
            cache_bytes=args.cache_size,
            say=lambda m: None if args.quiet else print(m, file=sys.stderr),
        )
    lazy = sum(1 for layer in spec.layers if not layer.local)
    if not args.quiet:
        print(f"{lazy} of {len(spec.layers)} layers lazy", file=sys.stderr)
    print(spec.mountpoint)
    return 0


def _cmd_umount(args: argparse.Namespace) -> int:
    spec = umount(open_store(args), args.dir)
    print(spec.mountpoint)
    return 0


def _cmd_mounts(args: argparse.Namespace) -> int:
    infos = list_mounts(open_store(args))
    rows: list[dict[str, Any]] = []
    for info in infos:
        layers = []
        for layer, stats in zip(info.spec.layers, info.stats, strict=True):
            chunks = int(str(stats.get("chunks", 0)) or 0)
            cached = int(str(stats.get("cached_chunks", 0)) or 0)
            layers.append({
                "digest": layer.digest,
                "lazy": not layer.local,
                "reason": layer.reason,
                "size": layer.size,
                "fetched_bytes": stats.get("fetched_bytes", 0),
                "fetched_percent": round(100 * int(str(stats.get("fetched_bytes", 0))) /
                                         layer.size, 1) if layer.size else 0.0,
                # None until the layer server has counted (not 100: nothing is cached yet)
                "cached_chunks_percent": None if "chunks" not in stats else
                round(100 * cached / chunks, 1) if chunks else 100.0,
            })
        rows.append({"id": info.spec.id, "image": info.spec.image, "state": info.state,
                     "mountpoint": info.spec.mountpoint, "layers": layers})
    if args.json:
        emit_json(rows)
        return 0
    for row in rows:
        print(f"{row['mountpoint']}  {row['image']}  [{row['state']}]")
        for layer in row["layers"]:
            kind = "lazy" if layer["lazy"] else "local"
            cached = layer["cached_chunks_percent"]
            print(f"  {layer['digest'][:19]}  {kind:5}  fetched {layer['fetched_bytes']} of "
                  f"{layer['size']} bytes ({layer['fetched_percent']}%), "
                  f"{'?' if cached is None else cached}% of chunks cached")
    return 0


def add_lazy_commands(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("rpull", help="mount an image lazily (fetch only what is read)")
    p.add_argument("--quiet", "-q", action="store_true")
    add_registry_flags(p)
    p.add_argument("--mount", metavar="DIR", help="where the root filesystem appears")
    p.add_argument("--toc-image", metavar="REF",
                   help="TOC image of an external-TOC image (default: REF-esgztoc)")
    p.add_argument("--platform", metavar="P", help="os/arch[/variant] (default: this machine's)")
    p.add_argument("--upper", action="store_true", help="add a writable upper directory")
    p.add_argument("--no-background-fetch", action="store_true",
                   help="fetch only what is read (and the prefetch landmark range)")
    p.add_argument("--min-request", type=parse_size, default=MIN_REQUEST,
                   metavar="SIZE", help="smallest range asked of the registry; the bytes past "
                   "what a read needs serve the next reads (default: 64K)")
    p.add_argument("--read-timeout", type=parse_seconds, default=READ_TIMEOUT,
                   metavar="SECONDS", help="how long a read waits for an unreachable registry "
                   "before it fails with EIO (default: 60)")
    p.add_argument("--cache-size", type=parse_size, default=CACHE_BYTES,
                   metavar="SIZE", help="verified chunks kept on disk, all layers of the store "
                   "together (default: 4G)")
    p.add_argument("ref", metavar="REF")
    p.set_defaults(func=_cmd_rpull, collect_on_failure=True)

    p = cmds.add_parser("umount", help="unmount a lazy mount and stop its daemon")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=_cmd_umount)

    p = cmds.add_parser("mounts", help="list lazy mounts with bytes fetched per layer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_mounts)
