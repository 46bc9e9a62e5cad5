"""Helpers for the lazy-mount tests: the CLI as a subprocess, mounts that are always undone, and
root filesystem trees compared entry by entry (names, types, modes, owners, sizes, links,
hardlink groups, xattrs and contents).

Every ``rpull`` goes through :class:`Mounts`, whose ``undo`` runs at fixture teardown even when
a test fails: ``estargz i umount`` first, then ``umount -l`` for whatever is still mounted under
the store, then SIGKILL for daemons that are still alive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clikit import Cli
from estargz.digest import sha256_digest
from estargz.format.types import TOC_JSON_DIGEST_ANNOTATION
from estargz.image.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from estargz.registry import RegistryClient
from imagekit import busybox_layers, write_oci_layout
from peer import go_peer
from registry_fixture import unique_repo

__all__ = [
    "ESTARGZ_ONLY",
    "FLAGS",
    "Cli",
    "Images",
    "Mounts",
    "Node",
    "Tree",
    "assert_same_tree",
    "lazy_mounts",
    "mounted_under",
    "push_layer",
    "skopeo",
    "snapshot",
    "umoci_rootfs",
    "wait_for",
]

ESTARGZ_ONLY = frozenset({"stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"})
"""Root entries a plain unpack of an eStargz layer has and a lazy mount hides."""


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def mounted_under(prefix: str | Path) -> list[str]:
    """Mountpoints at or below ``prefix`` (octal escapes of /proc/mounts undone)."""
    prefix = str(prefix)
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                out.append(point)
    return out


def push_layer(host: str, blob: bytes, diff_id: str, toc_digest: str, name: str) -> str:
    """A one-layer image of the eStargz ``blob`` in the registry at ``host``, its TOC digest
    annotated as converters do; returns its reference."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(blob),
                    "size": len(blob), "annotations": {TOC_JSON_DIGEST_ANNOTATION: toc_digest}}],
    }).encode()
    repo = unique_repo(name)
    with RegistryClient(host) as client:
        for data in (config, blob):
            client.push_blob(repo, sha256_digest(data), len(data), data)
        client.put_manifest(repo, "v1", manifest, OCI_MANIFEST)
    return f"{host}/{repo}:v1"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0,
             interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Mounts:
    """Lazy mounts of one store, all undone by :meth:`undo`."""

    cli: Cli
    points: list[str] = field(default_factory=list)

    def rpull(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """``i rpull ARGS``; on success the mountpoint is remembered for :meth:`undo`."""
        proc = self.cli.run("rpull", *args)
        if proc.returncode == 0:
            self.points.append(proc.stdout.strip())
        if ok:
            assert proc.returncode == 0, f"rpull {' '.join(args)}:\n{proc.stderr}"
            assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def mount(self, *args: str) -> Path:
        return Path(self.rpull(*args).stdout.strip())

    def state_dir(self, mountpoint: str | Path) -> Path:
        for d in (self.cli.root / "state" / "mounts").iterdir():
            spec = json.loads((d / "spec.json").read_text())
            if spec["mountpoint"] == str(mountpoint):
                return d
        raise AssertionError(f"no state directory for {mountpoint}")

    def undo(self) -> None:
        problems = []
        for point in self.points:
            if mounted_under(point):
                proc = self.cli.run("umount", point, timeout=60)
                if proc.returncode != 0:
                    problems.append(f"umount {point}: {proc.stderr}")
        state = self.cli.root / "state" / "mounts"
        for pid_file in state.glob("*/daemon.pid"):  # daemons our rpulls started
            with contextlib.suppress(ValueError, ProcessLookupError, FileNotFoundError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        for point in self._left():
            problems.append(f"still mounted: {point}")
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        assert not self._left(), self._left()
        assert not problems, "\n".join(problems)

    def _left(self) -> list[str]:
        """What is still mounted, overlays before the layers under them."""
        points = [*mounted_under(self.cli.root), *(p for point in self.points
                                                   for p in mounted_under(point))]
        return sorted(set(points), key=lambda p: (not any(p == q for q in self.points), p))


@contextlib.contextmanager
def lazy_mounts(tmp: Path) -> Iterator[Mounts]:
    """A :class:`Mounts` on a fresh store under ``tmp``; every mount is gone afterwards."""
    mounts = Mounts(Cli.at(tmp))
    try:
        yield mounts
    finally:
        mounts.undo()


# -- trees ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    rdev: tuple[int, int]
    link: str
    mtime: int
    xattrs: tuple[tuple[str, bytes], ...]
    sha256: str


@dataclass
class Tree:
    nodes: dict[str, Node]
    hardlinks: set[frozenset[str]]
    """Groups of two or more paths that are one file (same st_dev and st_ino)."""


_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "reg", stat.S_IFLNK: "symlink",
          stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
          stat.S_IFSOCK: "socket"}


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    names = [n for n in os.listxattr(path, follow_symlinks=False)
             if not n.startswith("trusted.overlay.")]
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def snapshot(root: Path, skip: frozenset[str] = frozenset()) -> Tree:
    """Every entry below ``root`` (``""`` is the root itself); ``skip`` names root entries."""
    nodes: dict[str, Node] = {}
    inodes: dict[tuple[int, int], set[str]] = {}

    def visit(rel: str) -> None:
        path = os.path.join(root, rel) if rel else str(root)
        st = os.lstat(path)
        kind = _KINDS[stat.S_IFMT(st.st_mode)]
        nodes[rel] = Node(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind in ("reg", "symlink") else 0,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block")
            else (0, 0),
            link=os.readlink(path) if kind == "symlink" else "",
            mtime=0 if kind == "dir" else int(st.st_mtime),  # implicit parents have no mtime
            xattrs=_xattrs(path),
            sha256=_digest(path) if kind == "reg" else "",
        )
        if kind == "reg":
            inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
        if kind == "dir":
            for name in sorted(os.listdir(path)):
                if not rel and name in skip:
                    continue
                visit(f"{rel}/{name}" if rel else name)

    visit("")
    return Tree(nodes, {frozenset(g) for g in inodes.values() if len(g) > 1})


def assert_same_tree(got: Tree, want: Tree, what: str = "mount") -> None:
    """Same paths, same attributes per path, same hardlink groups; names the differences."""
    missing = sorted(want.nodes.keys() - got.nodes.keys())
    extra = sorted(got.nodes.keys() - want.nodes.keys())
    assert not missing and not extra, f"{what}: missing {missing}, unexpected {extra}"
    diffs = []
    for path in sorted(want.nodes):
        g, w = got.nodes[path], want.nodes[path]
        if g != w:
            fields = [f"{k}: {getattr(g, k)!r} != {getattr(w, k)!r}"
                      for k in Node.__dataclass_fields__ if getattr(g, k) != getattr(w, k)]
            diffs.append(f"/{path}: " + "; ".join(fields))
    assert not diffs, f"{what} differs from the unpacked image:\n" + "\n".join(diffs)
    assert got.hardlinks == want.hardlinks, (got.hardlinks, want.hardlinks)


# -- images ----------------------------------------------------------------------------------

RECORD = [{"path": "etc/passwd", "layerIndex": 0}, {"path": "etc/hello.txt", "layerIndex": 1}]
"""Prioritized files, as ``optimize --record-out`` writes them (one JSON object a line)."""
FLAGS: dict[str, list[str] | None] = {
    "plain-gzip": None,
    "default": [],
    "min-chunk-size": ["--estargz-min-chunk-size=50000"],
    "external-toc": ["--estargz-external-toc"],
    "keep-diff-id": ["--estargz-external-toc", "--estargz-keep-diff-id"],
    "prioritized": ["--estargz-record-in", "RECORD"],
    "go-ctr-remote": None,
}
"""Variants of the extras image: our converter's flags; None for the plain gzip source and the
Go ``ctr-remote i convert --oci --estargz``."""


@dataclass
class Images:
    """The extras image in the registry, converted on first use per variant."""

    host: str
    source: str
    work: Path
    refs: dict[str, str] = field(default_factory=dict)

    def get(self, variant: str) -> str:
        if variant not in self.refs:
            self.refs[variant] = self._make(variant)
        return self.refs[variant]

    @classmethod
    def seed(cls, host: str, work: Path) -> Images:
        """Push the extras image (plain gzip) to the registry at ``host``."""
        write_oci_layout(work / "layout", "v1", busybox_layers(extras=True))
        source = f"{host}/{unique_repo('lazy-source')}:v1"
        skopeo("copy", "-q", "--dest-tls-verify=false", f"oci:{work / 'layout'}:v1",
               f"docker://{source}")
        return cls(host, source, work)

    def _make(self, variant: str) -> str:
        if variant == "plain-gzip":
            return self.source
        dst = f"{self.host}/{unique_repo('lazy-' + variant)}:v1"
        if variant == "go-ctr-remote":
            with go_peer() as peer:
                peer.ctr("i", "pull", "--plain-http", self.source)
                peer.ctr("i", "convert", "--oci", "--estargz", self.source, dst)
                peer.ctr("i", "push", "--plain-http", dst)
            return dst
        cli = Cli.at(self.work, "convert-store")
        flags = list(FLAGS[variant] or [])
        if "RECORD" in flags:
            record = self.work / "record.json"
            record.write_text("".join(json.dumps(r) + "\n" for r in RECORD))
            flags[flags.index("RECORD")] = str(record)
        cli("convert", "-q", "--oci", "--estargz", *flags, self.source, dst)
        cli("push", "-q", dst)
        if "--estargz-external-toc" in flags:
            cli("push", "-q", dst + "-esgztoc")
        return dst


def umoci_rootfs(ref: str, work: Path) -> Path:
    """``skopeo copy`` the image to an OCI layout and ``umoci unpack`` it; returns the rootfs."""
    work.mkdir(parents=True, exist_ok=True)
    skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{work / 'oci'}:img")
    proc = subprocess.run(["umoci", "unpack", "--image", f"{work / 'oci'}:img",
                           str(work / "bundle")], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, f"umoci unpack {ref}:\n{proc.stderr}"
    return work / "bundle" / "rootfs"
