"""Small real images for the image tests: a busybox-static root filesystem in two layers.

The second layer deletes a file of the first with an OCI whiteout and adds files, so a lazy
mount or an unpack has real layering to get right; ``busybox_layers(extras=True)`` adds owners,
special modes, devices, a fifo, xattrs, a hardlink in the first layer, a deleted directory and
an opaque directory. Images are written as OCI layouts (which skopeo can copy into a registry)
with OCI or Docker schema 2 media types, for any platform, or as a multi-platform OCI index
(``skopeo copy --all``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import tarfile
from typing import Any

BUSYBOX = pathlib.Path("/bin/busybox")
APPLETS = ("sh", "cat", "ls", "echo", "true", "env", "sleep", "head", "wc", "sha256sum")
MTIME = 1_700_000_000
HELLO = b"hello from layer two\n"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI = {
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}
DOCKER = {
    "manifest": "application/vnd.docker.distribution.manifest.v2+json",
    "config": "application/vnd.docker.container.image.v1+json",
    "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            info.mtime = MTIME
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o777 if kind == tarfile.SYMTYPE else 0o644
    return info, None


def _owned(entry: tuple[tarfile.TarInfo, bytes | None], uid: int, gid: int,
           **xattrs: str) -> tuple[tarfile.TarInfo, bytes | None]:
    """The entry with an owner and ``user.*`` xattrs (``_`` in a key stands for ``.``)."""
    info, data = entry
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.pax_headers = {**info.pax_headers, **{
        f"SCHILY.xattr.user.{key.replace('_', '.')}": value for key, value in xattrs.items()}}
    return info, data


def _special(name: str, kind: bytes, mode: int, major: int = 0, minor: int = 0
             ) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.devmajor, info.devminor = kind, mode, major, minor
    return info, None


def _extras_one() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        _link("etc/passwd-hardlink", "etc/passwd", tarfile.LNKTYPE),
        _owned(_file("etc/shadow", b"root:*:19000::::::\n", 0o640), 0, 42),
        _owned(_dir("home/", 0o755), 0, 0),
        _owned(_dir("home/user/", 0o750), 1000, 1000),
        _owned(_file("home/user/notes.txt", b"notes\n", 0o600), 1000, 1000),
        _file("bin/setuid-tool", b"#!/bin/sh\n", 0o4755),
        _dir("usr/"),
        _dir("usr/lib/"),
        _dir("usr/lib/old/"),
        _file("usr/lib/old/a.txt", b"a from layer one\n"),
        _file("usr/lib/old/b.txt", b"b from layer one\n"),
        _link("lib", "usr/lib"),
        _dir("var/"),
        _dir("var/cache/"),
        _dir("var/cache/junk/"),
        _file("var/cache/junk/x.bin", b"x" * 1000),
    ]


def _extras_two() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        _owned(_file("etc/xattr.txt", b"has xattrs\n"), 0, 0, note="lazy", two_parts="a b"),
        _owned(_dir("opt/xattr-dir/"), 0, 0, dir_note="on a directory"),
        _dir("dev/"),
        _special("dev/null", tarfile.CHRTYPE, 0o666, 1, 3),
        _special("dev/loop9", tarfile.BLKTYPE, 0o660, 7, 9),
        _dir("run/"),
        _special("run/pipe", tarfile.FIFOTYPE, 0o620),
        _dir("usr/"),
        _dir("usr/lib/"),
        _dir("usr/lib/old/"),
        _file("usr/lib/old/.wh..wh..opq", b""),
        _file("usr/lib/old/c.txt", b"c from layer two\n"),
        _dir("var/"),
        _file("var/.wh.cache", b""),
    ]


def busybox_layers(*, extras: bool = False) -> list[bytes]:
    """Two uncompressed layer tars: the busybox root, then a change set with a whiteout.

    ``extras`` adds the entries of :func:`_extras_one` and :func:`_extras_two`.
    """
    one = _tar(
        [
            _dir("bin/"),
            _file("bin/busybox", BUSYBOX.read_bytes(), 0o755),
            *[_link(f"bin/{a}", "busybox") for a in APPLETS],
            _dir("etc/"),
            _file("etc/os-release", b'NAME="estargz test image"\n'),
            _file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            _file("etc/removed-later", b"this file is deleted by layer two\n"),
            _dir("tmp/", 0o1777),
            _dir("root/", 0o700),
            _file("data/big.bin", bytes(range(256)) * 40_000),  # 10 MB: several chunks
            *(_extras_one() if extras else []),
        ]
    )
    two = _tar(
        [
            _dir("etc/"),
            _file("etc/.wh.removed-later", b""),
            _file("etc/hello.txt", HELLO),
            _link("etc/hello-hardlink", "etc/hello.txt", tarfile.LNKTYPE),
            _dir("opt/"),
            _dir("opt/app/"),
            _file("opt/app/run.sh", b"#!/bin/sh\necho app\n", 0o755),
            *(_extras_two() if extras else []),
        ]
    )
    return [one, two]


def files_layer(files: dict[str, bytes]) -> bytes:
    """A layer tar holding just these regular files (no directory entries)."""
    return _tar([_file(name, data) for name, data in files.items()])


def random_file_layer(name: str, size: int) -> bytes:
    """A layer tar holding one file of ``size`` random bytes (incompressible: slow to convert)."""
    return files_layer({name: os.urandom(size)})


def _put(layout: pathlib.Path, data: bytes) -> str:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    digest = _sha(data)
    (blobs / digest[7:]).write_bytes(data)
    return digest


def _write_manifest(
    layout: pathlib.Path, layers: list[bytes], types: dict[str, str], platform: str
) -> dict[str, Any]:
    """Store layers, config and manifest; returns the manifest's descriptor."""
    os_name, _, arch = platform.partition("/")
    layer_descs = []
    for raw in layers:
        gz = gzip.compress(raw, 6, mtime=0)
        layer_descs.append({"mediaType": types["layer"], "digest": _put(layout, gz),
                            "size": len(gz)})
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [_sha(raw) for raw in layers]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config_raw = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": types["manifest"],
        "config": {"mediaType": types["config"], "digest": _put(layout, config_raw),
                   "size": len(config_raw)},
        "layers": layer_descs,
    }
    manifest_raw = json.dumps(manifest).encode()
    return {"mediaType": types["manifest"], "digest": _put(layout, manifest_raw),
            "size": len(manifest_raw)}


def _name(layout: pathlib.Path, tag: str, desc: dict[str, Any]) -> None:
    index_path = layout / "index.json"
    index = (json.loads(index_path.read_text()) if index_path.exists()
             else {"schemaVersion": 2, "manifests": []})
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                          != tag]
    index["manifests"].append({**desc, "annotations": {"org.opencontainers.image.ref.name": tag}})
    index_path.write_text(json.dumps(index))


def write_oci_layout(
    layout: pathlib.Path, tag: str, layers: list[bytes], *, docker: bool = False,
    platform: str = "linux/amd64",
) -> str:
    """Write (or add to) an OCI layout holding one image; returns the manifest digest."""
    desc = _write_manifest(layout, layers, DOCKER if docker else OCI, platform)
    _name(layout, tag, desc)
    return str(desc["digest"])


def write_oci_index(layout: pathlib.Path, tag: str, images: dict[str, list[bytes]]) -> str:
    """An OCI image index with one image per ``"os/arch"`` key; returns the index digest."""
    manifests = []
    for platform, layers in images.items():
        desc = _write_manifest(layout, layers, OCI, platform)
        os_name, _, arch = platform.partition("/")
        manifests.append({**desc, "platform": {"architecture": arch, "os": os_name}})
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    desc = {"mediaType": OCI_INDEX, "digest": _put(layout, raw), "size": len(raw)}
    _name(layout, tag, desc)
    return str(desc["digest"])


def push_layers(host: str, name: str, layers: list[bytes], work: pathlib.Path, *,
                creds: str = "") -> str:
    """An OCI image of ``layers`` copied by skopeo to a fresh repository (``name`` made
    unique) of the registry at ``host``; returns ``host/repo:v1``."""
    import subprocess

    from registry_fixture import unique_repo

    layout = work / f"{name}-layout"
    write_oci_layout(layout, "v1", layers)
    ref = f"{host}/{unique_repo(name)}:v1"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
                    *(["--dest-creds", creds] if creds else []), f"oci:{layout}:v1",
                    f"docker://{ref}"], check=True, capture_output=True)
    return ref
