"""Managing lazy mounts: ``i mounts`` lists them, ``i umount`` leaves nothing behind (no mount,
no daemon, no layer server), ``--upper`` makes a writable mount, and a digest-pinned reference
to an external-TOC image explains itself and works with ``--toc-image``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

from estargz.digest import sha256_digest
from estargz.format import open_blob
from imagekit import HELLO
from lazykit import Images, Mounts, mounted_under, push_layer, skopeo, wait_for
from registry_fixture import RegistryServer
from tarbuild import convert, make_tar, member, with_toc


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def test_mounts_lists_and_umount_removes_everything(images: Images, mounts: Mounts) -> None:
    ref = images.get("default")
    first = mounts.mount("--no-background-fetch", ref)
    second = mounts.mount("--no-background-fetch", "--mount", str(mounts.cli.root.parent / "m2"),
                          ref)
    assert second == mounts.cli.root.parent / "m2"
    rows = {row["mountpoint"]: row for row in mounts.cli.mounts()}
    assert set(rows) == {str(first), str(second)}
    for row in rows.values():
        assert row["state"] == "ready" and row["image"] == ref
        assert [layer["lazy"] for layer in row["layers"]] == [True, True]
        assert all(layer["reason"] == "lazy" and layer["size"] > 0 for layer in row["layers"])
    text = mounts.cli("mounts")
    assert str(first) in text and str(second) in text and "[ready]" in text
    # until a layer server has counted its chunks, nothing claims they are cached
    stats = [mounts.state_dir(second) / f"stats-{i}.json" for i in (0, 1)]
    wait_for("the layer servers' first statistics", lambda: all(p.exists() for p in stats))
    stats[0].unlink()
    row = next(r for r in mounts.cli.mounts() if r["mountpoint"] == str(second))
    assert [layer["cached_chunks_percent"] for layer in row["layers"]] == [None, 0.0]
    assert "?% of chunks cached" in mounts.cli("mounts")

    state = mounts.state_dir(first)
    daemon = int((state / "daemon.pid").read_text())
    servers = _children(daemon)
    assert len(servers) == 2 and all(_alive(p) for p in [daemon, *servers])
    assert len(mounted_under(state)) == 2 and mounted_under(first) == [str(first)]

    assert mounts.cli("umount", str(first)).strip() == str(first)
    assert mounted_under(state) == [] and mounted_under(first) == []
    assert not any(_alive(p) for p in [daemon, *servers])
    assert not state.exists() and not first.exists()
    assert [row["mountpoint"] for row in mounts.cli.mounts()] == [str(second)]
    assert (second / "etc/hello.txt").read_bytes() == HELLO  # the other mount is untouched

    # by id too; a --mount directory is the user's and stays
    second_id = mounts.state_dir(second).name
    assert mounts.cli("umount", second_id).strip() == str(second)
    assert mounted_under(mounts.cli.root) == [] and mounted_under(second) == []
    assert mounts.cli.mounts() == [] and second.is_dir()

    proc = mounts.cli.run("umount", str(first))
    assert proc.returncode != 0 and "not an estargz mount" in proc.stderr


def test_rpull_onto_a_mountpoint_is_refused_and_leaves_nothing(images: Images,
                                                               mounts: Mounts) -> None:
    mount = mounts.mount("--no-background-fetch", images.get("default"))
    proc = mounts.rpull("--mount", str(mount), images.get("default"), ok=False)
    assert proc.returncode != 0 and "already a mountpoint" in proc.stderr
    assert len(list((mounts.cli.root / "state" / "mounts").iterdir())) == 1


def test_upper_makes_a_writable_mount(images: Images, mounts: Mounts) -> None:
    mount = mounts.mount("--upper", "--no-background-fetch", images.get("default"))
    state = mounts.state_dir(mount)
    (mount / "tmp/new.txt").write_text("written\n")
    with open(mount / "etc/hello.txt", "ab") as f:
        f.write(b"appended\n")
    (mount / "etc/passwd").unlink()
    os.mkdir(mount / "opt/made")

    upper = state / "upper"
    assert (upper / "tmp/new.txt").read_text() == "written\n"
    assert (upper / "etc/hello.txt").read_bytes() == HELLO + b"appended\n"
    assert (upper / "opt/made").is_dir()
    gone = os.lstat(upper / "etc/passwd")  # an overlay whiteout: char device 0/0
    assert os.major(gone.st_rdev) == 0 and os.minor(gone.st_rdev) == 0 and gone.st_size == 0
    assert not (mount / "etc/passwd").exists()
    assert (mount / "etc/passwd-hardlink").exists()
    # the layers below are untouched
    assert (state / "layers/1/etc/hello.txt").read_bytes() == HELLO
    assert (state / "layers/0/etc/passwd").exists()


def test_pinned_external_toc_image_needs_toc_image(images: Images, mounts: Mounts) -> None:
    ref = images.get("external-toc")
    digest = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))["Digest"]
    pinned = ref.rsplit(":", 1)[0] + "@" + digest

    proc = mounts.rpull("--no-background-fetch", pinned)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("layer ")]
    assert len(lines) == 2, proc.stderr
    for line in lines:
        assert "NOT lazy: external TOC" in line and "pinned by digest" in line, line
        assert "--toc-image" in line, line
    assert "0 of 2 layers lazy" in proc.stderr
    assert (Path(proc.stdout.strip()) / "etc/hello.txt").read_bytes() == HELLO

    proc = mounts.rpull("--no-background-fetch", "--toc-image", ref + "-esgztoc", pinned)
    assert "2 of 2 layers lazy" in proc.stderr, proc.stderr
    mount = Path(proc.stdout.strip())
    assert (mount / "etc/hello.txt").read_bytes() == HELLO
    row = next(r for r in mounts.cli.mounts() if r["mountpoint"] == str(mount))
    assert row["image"] == pinned and all(layer["lazy"] for layer in row["layers"])

    # by tag, the TOC image is found on its own
    proc = mounts.rpull("--no-background-fetch", ref)
    assert "2 of 2 layers lazy" in proc.stderr, proc.stderr


def test_umount_after_the_daemon_was_killed(images: Images, mounts: Mounts) -> None:
    mount = mounts.mount("--no-background-fetch", images.get("default"))
    state = mounts.state_dir(mount)
    daemon = int((state / "daemon.pid").read_text())
    servers = _children(daemon)
    assert len(servers) == 2
    os.kill(daemon, signal.SIGKILL)
    wait_for("the daemon to die", lambda: not _alive(daemon), timeout=10)
    assert [row["state"] for row in mounts.cli.mounts()] == ["orphaned"]

    started = time.monotonic()
    mounts.cli("umount", str(mount))
    assert time.monotonic() - started < 10  # no waiting for a daemon that is not there
    assert mounted_under(state) == [] and mounted_under(mount) == []
    wait_for("the layer servers to end", lambda: not any(_alive(p) for p in servers),
             timeout=10)
    assert mounts.cli.mounts() == []


def test_umount_of_a_busy_mount_detaches_it(images: Images, mounts: Mounts) -> None:
    mount = mounts.mount("--no-background-fetch", images.get("default"))
    state = mounts.state_dir(mount)
    daemon = int((state / "daemon.pid").read_text())
    busy = subprocess.Popen(["chroot", str(mount), "/bin/sleep", "60"])
    try:
        wait_for("sleep to start", lambda: _alive(busy.pid) and
                 os.readlink(f"/proc/{busy.pid}/root") == str(mount), timeout=10)
        started = time.monotonic()
        mounts.cli("umount", str(mount))
        assert time.monotonic() - started < 20
        assert mounted_under(state) == [] and mounted_under(mount) == []
        assert mounts.cli.mounts() == [] and not _alive(daemon)
    finally:
        busy.kill()
        busy.wait()


def test_a_toc_that_cannot_be_indexed_fails_the_mount_with_its_reason(
        registry: RegistryServer, mounts: Mounts) -> None:
    """The TOC decodes and matches the manifest, but a hardlink points nowhere: the layer server
    says why, rpull reports it, and nothing stays mounted."""
    tar = make_tar(member("a", data=b"x"), member("b", tarfile.LNKTYPE, linkname="a"))
    good, _ = convert(tar)

    def dangle(entries: list[dict[str, object]]) -> None:
        next(e for e in entries if e["name"] == "b")["linkName"] = "missing"

    blob = with_toc(good, dangle)
    ref = push_layer(registry.host, blob, sha256_digest(tar), open_blob(blob).toc_digest,
                     "bad-index")
    proc = mounts.rpull(ref, ok=False)
    assert proc.returncode == 1
    assert "layer 0: InvalidTOC:" in proc.stderr and "'missing'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert mounted_under(mounts.cli.root) == []
    assert list((mounts.cli.root / "state" / "mounts").iterdir()) == []
    assert mounts.cli.names() == []  # the store names no image for a failed rpull
