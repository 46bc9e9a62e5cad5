"""Overlayfs snapshots, with containerd's semantics: what its own ``overlayfs`` snapshotter does.

Each snapshot owns ``snapshots/ID/fs`` (the upper directory of an active snapshot, the layer's
content once committed) and ``snapshots/ID/work`` (overlayfs' work directory). A snapshot with
no parent is a bind mount of its ``fs``; an active snapshot with parents is an overlay whose
lower directories are the parents' ``fs``, nearest first; a view of one parent is a read-only
bind mount of that parent. containerd fills an active snapshot by unpacking a layer into the
mounts we return, then commits it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from estargz.snapshot.metadata import (
    FailedPrecondition,
    Kind,
    MetadataStore,
    SnapshotError,
    SnapshotInfo,
    Transaction,
)

__all__ = ["Mount", "OverlaySnapshotter", "disk_usage"]

log = logging.getLogger("estargz.snapshot")


@dataclass(frozen=True, slots=True)
class Mount:
    type: str
    source: str
    options: tuple[str, ...]


def disk_usage(path: Path) -> tuple[int, int]:
    """Bytes allocated and inodes under ``path``, each inode counted once (as containerd)."""
    seen: set[tuple[int, int]] = set()
    size = 0

    def add(st: os.stat_result) -> None:
        nonlocal size
        ident = (st.st_dev, st.st_ino)
        if ident not in seen:
            seen.add(ident)
            size += st.st_blocks * 512

    if not path.exists():
        return 0, 0
    add(path.lstat())
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            add(os.lstat(os.path.join(top, name)))
    return size, len(seen)


class OverlaySnapshotter:
    """The snapshots under ``root``: SQLite records plus one directory per snapshot."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        (root / "snapshots").mkdir(exist_ok=True, mode=0o700)
        self.meta = MetadataStore(root / "metadata.db")

    def close(self) -> None:
        self.meta.close()

    # -- paths and mounts -------------------------------------------------------------------

    def snapshot_dir(self, id_: int) -> Path:
        return self.root / "snapshots" / str(id_)

    def fs_dir(self, id_: int) -> Path:
        return self.snapshot_dir(id_) / "fs"

    def _mounts(self, tx: Transaction, info: SnapshotInfo) -> list[Mount]:
        parents = tx.chain(info.parent) if info.parent else []
        if not parents:
            mode = "ro" if info.kind == Kind.VIEW else "rw"
            return [Mount("bind", str(self.fs_dir(info.id)), (mode, "rbind"))]
        options: list[str] = []
        if info.kind == Kind.ACTIVE:
            work = self.snapshot_dir(info.id) / "work"
            options += [f"workdir={work}", f"upperdir={self.fs_dir(info.id)}"]
        elif len(parents) == 1:
            return [Mount("bind", str(self.fs_dir(parents[0].id)), ("ro", "rbind"))]
        lower = ":".join(str(self.fs_dir(p.id)) for p in parents)
        options.append(f"lowerdir={lower}")
        return [Mount("overlay", "overlay", tuple(options))]

    # -- the snapshots API ------------------------------------------------------------------

    def prepare(self, key: str, parent: str, labels: dict[str, str],
                kind: Kind = Kind.ACTIVE) -> list[Mount]:
        with self.meta.transaction() as tx:
            info = tx.create(key, parent, kind, labels)
            path = self.snapshot_dir(info.id)
            shutil.rmtree(path, ignore_errors=True)  # left by a crash before its row was written
            try:
                path.mkdir(mode=0o700)
                (path / "fs").mkdir(mode=0o755)
                if kind == Kind.ACTIVE:
                    (path / "work").mkdir(mode=0o700)
                return self._mounts(tx, info)
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                raise

    def create_committed(self, name: str, parent: str, labels: dict[str, str],
                         remote: str) -> SnapshotInfo:
        """A committed snapshot whose ``fs`` something else fills (a lazy layer's mount)."""
        with self.meta.transaction() as tx:
            info = tx.create(name, parent, Kind.COMMITTED, labels, remote=remote)
            path = self.snapshot_dir(info.id)
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(mode=0o700)
            (path / "fs").mkdir(mode=0o755)
            return info

    def set_remote(self, name: str, remote: str) -> None:
        with self.meta.transaction() as tx:
            tx.set_remote(name, remote)

    def mounts(self, key: str) -> list[Mount]:
        with self.meta.transaction() as tx:
            info = tx.get(key)
            if info.kind == Kind.COMMITTED:
                raise FailedPrecondition(f"snapshot {key}: committed snapshots have no mounts")
            return self._mounts(tx, info)

    def commit(self, name: str, key: str, labels: dict[str, str]) -> SnapshotInfo:
        with self.meta.transaction() as tx:
            info = tx.get(key)
            size, inodes = disk_usage(self.fs_dir(info.id))
            return tx.commit(key, name, labels, size, inodes)

    def remove(self, key: str, before_delete: Callable[[SnapshotInfo], None] | None = None
               ) -> None:
        """Drop the row, then the directory (``before_delete`` may unmount what it holds)."""
        with self.meta.transaction() as tx:
            info = tx.remove(key)
        if before_delete is not None:
            before_delete(info)
        shutil.rmtree(self.snapshot_dir(info.id), ignore_errors=True)

    def stat(self, key: str) -> SnapshotInfo:
        with self.meta.transaction() as tx:
            return tx.get(key)

    def update(self, key: str, labels: dict[str, str], paths: list[str]) -> SnapshotInfo:
        """As containerd: no paths replaces all labels, ``labels.K`` sets or (empty) drops K."""
        with self.meta.transaction() as tx:
            info = tx.get(key)
            new = dict(info.labels)
            if not paths:
                new = dict(labels)
            for path in paths:
                if path == "labels":
                    new = dict(labels)
                elif path.startswith("labels."):
                    name = path.removeprefix("labels.")
                    if labels.get(name):
                        new[name] = labels[name]
                    else:
                        new.pop(name, None)
                else:
                    raise SnapshotError(f"cannot update field {path!r} of snapshot {key}")
            return tx.set_labels(key, new)

    def usage(self, key: str) -> tuple[int, int]:
        with self.meta.transaction() as tx:
            info = tx.get(key)
        if info.kind == Kind.ACTIVE:
            return disk_usage(self.fs_dir(info.id))
        return info.size, info.inodes

    def walk(self) -> list[SnapshotInfo]:
        with self.meta.transaction() as tx:
            return tx.all()

    def cleanup(self, before_delete: Callable[[Path], None] | None = None) -> list[Path]:
        """Remove the directories that no snapshot names (left by a crash or a removal)."""
        with self.meta.transaction() as tx:
            known = tx.ids()
        removed = []
        for entry in (self.root / "snapshots").iterdir():
            if entry.name.isdigit() and int(entry.name) in known:
                continue
            if before_delete is not None:
                before_delete(entry)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        return removed
