"""What makes a lazy mount fast to walk, pinned on real mounts: the kernel keeps what a layer
answers (a second walk, a second ``stat``, a second miss reach no layer server), listings carry
the entries' attributes (walking a tree needs no lookup per entry), and a layer of a million
entries mounts and answers within a bounded memory.

The layer servers count the lookups and listing pages that reach them in ``stats-N.json``.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

from estargz.digest import sha256_digest
from lazykit import Mounts, push_layer
from registry_fixture import RegistryServer
from tarbuild import convert, make_tar, member, synthetic_layer


def _settled(stats: Path) -> dict[str, int]:
    """The layer server's counts once they stop changing (it writes them within 0.2 s)."""
    last: dict[str, int] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            now = json.loads(stats.read_text())
        except (FileNotFoundError, ValueError):
            continue
        if now == last:
            return now
        last = now
    raise AssertionError(f"{stats} did not settle")


def _walk(root: Path) -> int:
    count = 0
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lstat(os.path.join(dirpath, name))
            count += 1
    return count


def test_the_kernel_keeps_entries_attributes_and_misses(registry: RegistryServer,
                                                        mounts: Mounts) -> None:
    items = [member(f"d{d}/", tarfile.DIRTYPE) for d in range(4)]
    items += [member(f"d{d}/f{f:02d}", data=b"x" * f) for d in range(4) for f in range(60)]
    tar = make_tar(*items)
    blob, result = convert(tar)
    # one layer: the mount has no overlay in front of the layer server
    ref = push_layer(registry.host, blob, sha256_digest(tar), result.toc_digest, "scale")
    mount = mounts.mount("--no-background-fetch", ref)
    stats = mounts.state_dir(mount) / "stats-0.json"
    before = _settled(stats)

    assert _walk(mount) == 244
    first = _settled(stats)
    # the listings brought every entry's attributes: the lstat calls needed no lookups
    assert first["getattrs"] - before["getattrs"] <= 2, (before, first)
    assert first["listing_pages"] > before["listing_pages"]

    assert _walk(mount) == 244
    # listed again, from the types and inode numbers given the first time: the same as lstat's
    again = list(os.scandir(mount / "d2"))
    assert [e.name for e in again] == [f"f{f:02d}" for f in range(60)]
    for e in again:
        st = os.lstat(e.path)
        assert (e.is_dir(), e.is_file(), e.inode()) == (False, True, st.st_ino)
    assert [(e.name, e.is_dir(), e.inode()) for e in os.scandir(mount)] == [
        (f"d{d}", True, os.lstat(mount / f"d{d}").st_ino) for d in range(4)]
    assert os.lstat(mount / "d1/f07").st_size == 7
    assert os.lstat(mount / "d1/f07").st_size == 7
    for _ in range(2):
        assert not (mount / "d1/missing").exists()
    second = _settled(stats)
    # nothing came back for attributes or entries; the miss was asked once and kept
    assert second["getattrs"] == first["getattrs"] + 1, (first, second)


def _serving_rss(state: Path) -> int:
    """Resident bytes of the mount daemon and its layer servers."""
    daemon = int((state / "daemon.pid").read_text())
    pids = [daemon]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == daemon:
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def test_a_layer_of_a_million_entries_mounts_and_answers(registry: RegistryServer,
                                                         mounts: Mounts) -> None:
    layer = synthetic_layer(100, 10_000, 32)
    assert layer.entries == 1_000_033
    ref = push_layer(registry.host, layer.blob, layer.diff_id, layer.toc_digest, "million")
    mount = mounts.mount("--no-background-fetch", ref)
    assert os.lstat(mount / layer.deep).st_size == 0
    names = os.listdir(mount / layer.wide[50])
    assert len(names) == 9_999 and names[0] == "f00000" and names[-1] == "f09998"
    assert sorted(os.listdir(mount)) == sorted([*layer.wide, "n00"])
    assert _serving_rss(mounts.state_dir(mount)) < 1 << 30
