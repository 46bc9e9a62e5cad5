"""``estargz snapshotter``: containerd's snapshots API on a unix socket, in the foreground.

containerd reaches it as a proxy plugin (``[proxy_plugins.estargz] type = "snapshot"``); the
process runs until SIGTERM or SIGINT, logging to stderr (a service manager keeps the log).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from estargz.paths import default_store_root

__all__: list[str] = []


def _cmd_snapshotter(args: argparse.Namespace) -> int:
    from estargz.snapshot.daemon import SnapshotterDaemon, default_root

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, force=True,
                        format="%(asctime)s [%(process)d] %(levelname)s %(name)s %(message)s")
    store_root = args.root or default_store_root()
    root = Path(args.snapshotter_root) if args.snapshotter_root else default_root(store_root)
    SnapshotterDaemon(args.address, root, store_root,
                      background_fetch=args.background_fetch).serve()
    return 0
