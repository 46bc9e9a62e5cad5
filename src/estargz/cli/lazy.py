"""``estargz i rpull | umount | mounts``: lazy mounts of registry images."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from estargz.cli.common import open_store, registry_client, tls_files
from estargz.cli.output import emit_json
from estargz.image.model import Platform
from estargz.lazy.mount import list_mounts, rpull, umount
from estargz.registry import Reference

__all__: list[str] = []


def _cmd_rpull(args: argparse.Namespace) -> int:
    store = open_store(args)
    ref = Reference.parse(args.ref)
    platform = Platform.parse(args.platform) if args.platform else None
    with registry_client(args, ref) as client:
        spec = rpull(
            store, client, ref, mountpoint=args.mount, toc_image=args.toc_image,
            platform=platform, upper=args.upper, background_fetch=not args.no_background_fetch,
            plain_http=args.plain_http, skip_verify=args.skip_verify, user=args.user or "",
            refresh=args.refresh or "", tls_files=tls_files(args),
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
