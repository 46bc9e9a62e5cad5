"""The snapshotter containerd talks to: overlayfs snapshots, with lazy layers where it can.

A Prepare that names an eStargz layer of a registry image (see :mod:`.remote`) becomes a
committed snapshot under the requested target name, its directory the lazily mounted layer,
and the answer is ALREADY_EXISTS: containerd then neither downloads nor unpacks the layer.
Anything else, and any layer that cannot be mounted lazily, is an ordinary overlayfs
snapshot that containerd fills by unpacking.
"""

from __future__ import annotations

import logging
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from estargz.errors import EstargzError
from estargz.lazy.daemon import is_mounted
from estargz.snapshot.metadata import AlreadyExists, Kind, SnapshotInfo
from estargz.snapshot.overlay import Mount, OverlaySnapshotter
from estargz.snapshot.remote import REMOTE_LABEL, RemoteLayers, RemoteRequest, remote_request

__all__ = ["Snapshotter"]

log = logging.getLogger("estargz.snapshot")
_PENDING = "pending"


class Snapshotter:
    """:class:`OverlaySnapshotter` plus :class:`RemoteLayers` for the snapshots API."""

    def __init__(self, root: Path, store_root: str, *, background_fetch: bool = True) -> None:
        self.overlay = OverlaySnapshotter(root)
        self.remote = RemoteLayers(store_root, background_fetch=background_fetch)
        self.root = root

    def close(self) -> None:
        self.overlay.close()

    def restore(self) -> None:
        """Mount again the lazy layers recorded (after a restart or a crash); a layer that
        cannot be mounted is logged, its reads fail, the other snapshots work."""
        infos = [i for i in self.overlay.walk() if i.remote and i.remote != _PENDING]

        def one(info: SnapshotInfo) -> None:
            try:
                self.remote.ensure(info.remote)
            except (EstargzError, OSError) as exc:
                log.error("snapshot %s: its lazy layer cannot be mounted again: %s",
                          info.key, exc)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, infos))

    def prepare(self, key: str, parent: str, labels: dict[str, str],
                kind: Kind = Kind.ACTIVE) -> list[Mount]:
        request = remote_request(labels) if kind == Kind.ACTIVE else None
        if request is not None and self._prepare_remote(parent, labels, request):
            raise AlreadyExists(f"target snapshot {request.target!r}")
        return self.overlay.prepare(key, parent, labels, kind)

    def _prepare_remote(self, parent: str, labels: dict[str, str],
                        request: RemoteRequest) -> bool:
        """True once the target exists as a lazily mounted layer; False to fall back."""
        target = request.target
        try:
            info = self.overlay.create_committed(
                target, parent, {**labels, REMOTE_LABEL: "remote snapshot"}, _PENDING)
        except AlreadyExists:
            return True  # (as the Go snapshotter: an existing target is a success)
        try:
            spec = self.remote.mount(request, self.overlay.fs_dir(info.id), bottom=not parent)
        except Exception as exc:
            log.warning("layer %s of %s: not mounted lazily (%s); containerd unpacks it",
                        request.layer_digest, request.image, exc)
            self.overlay.remove(target)
            return False
        self.overlay.set_remote(target, spec.state_dir)
        log.info("layer %s of %s: mounted lazily as %s", request.layer_digest, request.image,
                 target)
        return True

    def mounts(self, key: str) -> list[Mount]:
        return self.overlay.mounts(key)

    def commit(self, name: str, key: str, labels: dict[str, str]) -> SnapshotInfo:
        return self.overlay.commit(name, key, labels)

    def remove(self, key: str) -> None:
        self.overlay.remove(key, before_delete=self._release)

    def _release(self, info: SnapshotInfo) -> None:
        if info.remote and info.remote != _PENDING:
            self.remote.unmount(info.remote)
        self._unmount_below(self.overlay.snapshot_dir(info.id))

    @staticmethod
    def _unmount_below(path: Path) -> None:
        """Nothing is deleted through a mount: detach what is still mounted in ``path``."""
        with open("/proc/self/mounts") as f:
            inside = [line.split()[1] for line in f if line.split()[1].startswith(f"{path}/")]
        for target in sorted(inside, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
            if is_mounted(target):
                raise EstargzError(f"{target}: still mounted, not removing {path}")

    def stat(self, key: str) -> SnapshotInfo:
        return self.overlay.stat(key)

    def update(self, key: str, labels: dict[str, str], paths: list[str]) -> SnapshotInfo:
        return self.overlay.update(key, labels, paths)

    def usage(self, key: str) -> tuple[int, int]:
        return self.overlay.usage(key)

    def walk(self) -> list[SnapshotInfo]:
        return self.overlay.walk()

    def cleanup(self) -> None:
        self.overlay.cleanup(before_delete=self._unmount_below)
