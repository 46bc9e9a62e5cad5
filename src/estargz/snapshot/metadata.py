"""The snapshotter's records in SQLite: one row per snapshot, changed only inside transactions.

A snapshot has a numeric id (its directory under ``snapshots/``), a key (an active snapshot's
or a view's key, a committed snapshot's name), a parent key, a kind, labels and timestamps.
Directories are created and removed by the caller around these transactions; a crash between
the two leaves a directory that no row names, which ``Cleanup`` removes.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from estargz.errors import EstargzError

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "Kind",
    "MetadataStore",
    "NotFound",
    "SnapshotError",
    "SnapshotInfo",
]


class SnapshotError(EstargzError):
    """A request the snapshotter refuses (the gRPC layer maps subclasses to status codes)."""


class NotFound(SnapshotError):
    """No snapshot has that key."""


class AlreadyExists(SnapshotError):
    """A snapshot already has that key."""


class FailedPrecondition(SnapshotError):
    """The snapshot is not in a state that allows the request (wrong kind, has children)."""


class Kind(enum.IntEnum):
    """As containerd numbers them (``Kind`` in the snapshots API)."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3


@dataclass(slots=True)
class SnapshotInfo:
    id: int
    key: str
    parent: str
    kind: Kind
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    size: int = 0
    inodes: int = 0
    remote: str = ""
    """A lazily mounted layer: the state directory of its mount (its spec); else empty."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    key     TEXT NOT NULL UNIQUE,
    parent  TEXT NOT NULL,
    kind    INTEGER NOT NULL,
    labels  TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    size    INTEGER NOT NULL DEFAULT 0,
    inodes  INTEGER NOT NULL DEFAULT 0,
    remote  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
"""
_COLUMNS = "id, key, parent, kind, labels, created, updated, size, inodes, remote"


def _row(row: tuple[int, str, str, int, str, float, float, int, int, str]) -> SnapshotInfo:
    id_, key, parent, kind, labels, created, updated, size, inodes, remote = row
    return SnapshotInfo(id_, key, parent, Kind(kind), json.loads(labels), created, updated,
                        size, inodes, remote)


class MetadataStore:
    """The SQLite file ``metadata.db``; one connection, used under a lock by gRPC's threads."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All reads and writes of the block, committed together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


class Transaction:
    """The operations on rows; only valid inside :meth:`MetadataStore.transaction`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def find(self, key: str) -> SnapshotInfo | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM snapshots WHERE key = ?",
                               (key,)).fetchone()
        return _row(row) if row else None

    def get(self, key: str) -> SnapshotInfo:
        info = self.find(key)
        if info is None:
            raise NotFound(f"snapshot {key}: not found")
        return info

    def all(self) -> list[SnapshotInfo]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM snapshots ORDER BY id").fetchall()
        return [_row(r) for r in rows]

    def chain(self, key: str) -> list[SnapshotInfo]:
        """``key``'s snapshot followed by its parents, nearest first."""
        out: list[SnapshotInfo] = []
        while key:
            info = self.get(key)
            out.append(info)
            key = info.parent
        return out

    def create(self, key: str, parent: str, kind: Kind, labels: dict[str, str],
               remote: str = "") -> SnapshotInfo:
        if not key:
            raise SnapshotError("a snapshot key must not be empty")
        if self.find(key) is not None:
            raise AlreadyExists(f"snapshot {key}: already exists")
        if parent and self.get(parent).kind != Kind.COMMITTED:
            raise FailedPrecondition(f"parent {parent}: not a committed snapshot")
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO snapshots (key, parent, kind, labels, created, updated, remote)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, parent, int(kind), json.dumps(labels, sort_keys=True), now, now, remote),
        )
        assert cur.lastrowid is not None
        return SnapshotInfo(cur.lastrowid, key, parent, kind, dict(labels), now, now,
                            remote=remote)

    def set_remote(self, key: str, remote: str) -> None:
        self._db.execute("UPDATE snapshots SET remote = ? WHERE key = ?", (remote, key))

    def commit(self, key: str, name: str, labels: dict[str, str], size: int,
               inodes: int) -> SnapshotInfo:
        """The active snapshot ``key`` becomes the committed ``name`` (same id and directory)."""
        info = self.get(key)
        if info.kind != Kind.ACTIVE:
            raise FailedPrecondition(f"snapshot {key}: not active")
        if self.find(name) is not None:
            raise AlreadyExists(f"snapshot {name}: already exists")
        now = time.time()
        self._db.execute(
            "UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated = ?, size = ?,"
            " inodes = ? WHERE id = ?",
            (name, int(Kind.COMMITTED), json.dumps(labels, sort_keys=True), now, size, inodes,
             info.id),
        )
        return SnapshotInfo(info.id, name, info.parent, Kind.COMMITTED, dict(labels),
                            info.created, now, size, inodes)

    def remove(self, key: str) -> SnapshotInfo:
        info = self.get(key)
        child = self._db.execute("SELECT key FROM snapshots WHERE parent = ? LIMIT 1",
                                 (key,)).fetchone()
        if child:
            raise FailedPrecondition(f"snapshot {key}: has a child {child[0]}")
        self._db.execute("DELETE FROM snapshots WHERE id = ?", (info.id,))
        return info

    def set_labels(self, key: str, labels: dict[str, str]) -> SnapshotInfo:
        info = self.get(key)
        info.labels = dict(labels)
        info.updated = time.time()
        self._db.execute("UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?",
                         (json.dumps(labels, sort_keys=True), info.updated, info.id))
        return info

    def ids(self) -> set[int]:
        return {r[0] for r in self._db.execute("SELECT id FROM snapshots")}
