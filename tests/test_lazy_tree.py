"""A lazy mount shows exactly the image: ``estargz i rpull`` against ``umoci unpack``.

The image is the busybox test image with extras (owners, setuid, devices, a fifo, xattrs,
hardlinks, a deleted directory, an opaque directory), converted by our converter with each
flag combination and by the Go ``ctr-remote``, and also left as plain gzip (not lazy, pulled
whole). Each is mounted for real (FUSE layers under a kernel overlayfs) and walked; the same
image, copied by skopeo to an OCI layout and unpacked by umoci, is the reference.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from imagekit import HELLO, files_layer, write_oci_layout
from lazykit import (
    ESTARGZ_ONLY,
    FLAGS,
    Cli,
    Images,
    Mounts,
    assert_same_tree,
    skopeo,
    snapshot,
    umoci_rootfs,
)
from registry_fixture import RegistryServer, unique_repo


def _layer_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"layer \d+ sha256:", line)]


@pytest.mark.parametrize("variant", list(FLAGS))
def test_mount_equals_the_unpacked_image(variant: str, images: Images, mounts: Mounts,
                                         tmp_path: Path) -> None:
    ref = images.get(variant)
    proc = mounts.rpull(ref)
    lines = _layer_lines(proc.stderr)
    assert len(lines) == 2, proc.stderr
    if variant == "plain-gzip":
        assert all("NOT lazy: no containerd.io/snapshot/stargz/toc.digest annotation" in line
                   for line in lines), proc.stderr
        assert "0 of 2 layers lazy" in proc.stderr
    else:
        assert all(": lazy (TOC sha256:" in line and "verified" in line for line in lines), \
            proc.stderr
        assert "2 of 2 layers lazy" in proc.stderr
    prefetch = [int(m) for m in re.findall(r"prefetch (\d+) bytes", proc.stderr)]
    if variant == "prioritized":
        assert len(prefetch) == 2 and all(p > 0 for p in prefetch), proc.stderr
    elif variant != "plain-gzip":
        assert prefetch == [0, 0], proc.stderr
    mount = Path(proc.stdout.strip())

    got = snapshot(mount)
    want = snapshot(umoci_rootfs(ref, tmp_path / "umoci"), skip=ESTARGZ_ONLY)
    assert_same_tree(got, want, f"{variant} mount")

    # what the image says, whatever umoci does: layering, xattrs and links took effect
    nodes = got.nodes
    for gone in ("etc/removed-later", "usr/lib/old/a.txt", "usr/lib/old/b.txt", "var/cache"):
        assert gone not in nodes
    assert sorted(p for p in nodes if p.startswith("usr/lib/old/")) == ["usr/lib/old/c.txt"]
    assert not ESTARGZ_ONLY & set(nodes)
    assert nodes["etc/xattr.txt"].xattrs == (("user.note", b"lazy"), ("user.two.parts", b"a b"))
    assert nodes["opt/xattr-dir"].xattrs == (("user.dir.note", b"on a directory"),)
    assert (nodes["dev/null"].kind, nodes["dev/null"].rdev) == ("char", (1, 3))
    assert (nodes["dev/loop9"].kind, nodes["dev/loop9"].rdev) == ("block", (7, 9))
    assert nodes["run/pipe"].kind == "fifo"
    assert nodes["bin/setuid-tool"].mode == 0o4755
    assert (nodes["home/user"].uid, nodes["home/user"].gid, nodes["home/user"].mode) == \
        (1000, 1000, 0o750)
    assert nodes["lib"].link == "usr/lib"
    assert {frozenset({"etc/hello.txt", "etc/hello-hardlink"}),
            frozenset({"etc/passwd", "etc/passwd-hardlink"})} == got.hardlinks
    assert (mount / "etc/hello.txt").read_bytes() == HELLO


def test_chroot_runs_the_image_shell(images: Images, mounts: Mounts) -> None:
    mount = mounts.mount("--no-background-fetch", images.get("default"))
    script = ("cat /etc/hello.txt; ls /usr/lib/old; test -e /etc/removed-later || echo gone; "
              "head -c 4 /etc/passwd-hardlink; echo; sha256sum /data/big.bin; "
              "/opt/app/run.sh; echo $((6 * 7))")
    proc = subprocess.run(["chroot", str(mount), "/bin/sh", "-c", script],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    big = hashlib.sha256(bytes(range(256)) * 40_000).hexdigest()
    assert proc.stdout.splitlines() == [
        HELLO.decode().strip(), "c.txt", "gone", "root", f"{big}  /data/big.bin", "app", "42",
    ]


def test_one_layer_image_shows_no_whiteouts(registry: RegistryServer, mounts: Mounts,
                                            tmp_path: Path) -> None:
    """One layer is mounted without an overlay: its whiteouts have nothing to hide and must not
    show up as character devices, nor its opaque marker as an xattr."""
    layer = files_layer({"etc/a": b"a\n", "etc/.wh.b": b"", "opq/.wh..wh..opq": b"",
                         "opq/x": b"x\n"})
    write_oci_layout(tmp_path / "layout", "v1", [layer])
    repo = f"{registry.host}/{unique_repo('lazy-one-layer')}"
    skopeo("copy", "-q", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:v1",
           f"docker://{repo}:v1")
    cli = Cli.at(tmp_path, "convert-store")
    cli("convert", "-q", "--oci", "--estargz", f"{repo}:v1", f"{repo}:esgz")
    cli("push", "-q", f"{repo}:esgz")

    mount = mounts.mount("--no-background-fetch", f"{repo}:esgz")
    got = snapshot(mount)
    assert_same_tree(got, snapshot(umoci_rootfs(f"{repo}:esgz", tmp_path / "umoci"),
                                   skip=ESTARGZ_ONLY))
    assert sorted(got.nodes) == ["", "etc", "etc/a", "opq", "opq/x"]
    assert got.nodes["opq"].xattrs == ()


def test_many_concurrent_readers_get_verified_bytes(images: Images, mounts: Mounts) -> None:
    """Sixteen threads read overlapping files at random offsets, cold, at the same time."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    mount = mounts.mount("--no-background-fetch", images.get("default"))
    big = bytes(range(256)) * 40_000
    files = {"data/big.bin": big, "etc/hello.txt": HELLO}

    def reader(seed: int) -> int:
        rng = random.Random(seed)
        checked = 0
        for _ in range(40):
            name, want = rng.choice(sorted(files.items()))
            offset = rng.randrange(len(want))
            size = rng.randrange(1, 300_000)
            with open(mount / name, "rb") as f:
                f.seek(offset)
                assert f.read(size) == want[offset : offset + size], (name, offset, size)
            checked += 1
        return checked

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(reader, range(16))) == 16 * 40
