"""A containerd snapshotter (``estargz snapshotter``): overlayfs snapshots over gRPC.

containerd talks to it as a proxy plugin through containerd.services.snapshots.v1.Snapshots;
metadata lives in SQLite under the snapshotter's root, layers in directories beside it.
"""

from __future__ import annotations

__all__: list[str] = []
