"""``estargz store check | gc``: the store after a crash, a full disk or a damaged file."""

from __future__ import annotations

import argparse
import sys

from estargz.cli.common import open_store
from estargz.cli.output import emit_json

__all__: list[str] = []


def _cmd_check(args: argparse.Namespace) -> int:
    from estargz.lazy.mount import leftover_mounts, stale_mounts
    from estargz.store.check import check_store

    store = open_store(args)
    report = check_store(store)
    problems = list(report.problems)
    problems += [f"mount {m.spec.id} at {m.spec.mountpoint}: {m.state} (left by a crash; "
                 "'store gc' or 'i umount' removes it)" for m in stale_mounts(store)]
    leftovers = len(leftover_mounts(store))
    if args.json:
        emit_json({"consistent": not problems, "problems": problems, "blobs": report.blobs,
                   "images": report.images, "lazy_layers": report.lazy_layers,
                   "unreferenced_blobs": report.unreferenced,
                   "temporaries": report.temporaries, "mount_leftovers": leftovers})
    else:
        for problem in problems:
            print(problem)
        print(f"{'consistent' if not problems else f'{len(problems)} problems'}: "
              f"{report.images} images, {report.blobs} blobs ({report.unreferenced} unnamed, "
              f"{report.lazy_layers} layers fetched on demand), {report.temporaries} "
              f"temporaries, {leftovers} mount leftovers", file=sys.stderr)
    return 0 if not problems else 1


def _cmd_gc(args: argparse.Namespace) -> int:
    from estargz.lazy.mount import leftover_mounts, stale_mounts, umount

    store = open_store(args)
    stale = stale_mounts(store) + leftover_mounts(store)
    for info in stale:
        umount(store, info.spec.id)
    freed = store.gc(ingest_max_age=args.ingest_max_age)
    print(f"removed {freed.blobs} unreferenced blobs ({freed.freed_bytes} bytes), "
          f"{freed.ingest_files} temporaries, {freed.meta_dirs} metadata directories, "
          f"{len(stale)} stale mounts", file=sys.stderr)
    return 0
