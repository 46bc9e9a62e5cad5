"""Lazy pulling: per-layer FUSE servers over verified range reads, stacked with overlayfs.

Layout: :mod:`layerfs` (a layer as a filesystem, no FUSE), :mod:`fuse` (the mfusepy adapter),
:mod:`remote` (the resilient registry source), :mod:`cache` (verified chunks on disk),
:mod:`server` (one process per layer), :mod:`daemon` (one per image mount), :mod:`mount`
(``rpull``/``umount``/``mounts`` for the CLI).
"""

__all__: list[str] = []
