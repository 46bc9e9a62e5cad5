"""Hostile layers through a lazy mount: a TOC no system could hold is refused with its reason
(the manifest vouches for it, so the TOC digest matches); shapes that can be read safely are
served inside the mount, and nothing outside it is ever exposed or followed."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from estargz.format import read_toc
from estargz.image.mediatypes import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from estargz.registry import RegistryClient
from lazykit import lazy_mounts
from registry_fixture import RegistryServer, unique_repo
from tarbuild import convert, make_tar, member, with_toc

TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
BASE = make_tar(
    member("etc/", tarfile.DIRTYPE),
    member("etc/hostname", data=b"inside\n"),
    member("bin/", tarfile.DIRTYPE),
    member("bin/tool", data=os.urandom(9000), mode=0o755),
)


def _push(registry: RegistryServer, blob: bytes) -> str:
    """An image of one layer, the manifest vouching for the layer's TOC as it is."""
    repo = unique_repo("hostile")
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    layer = {"mediaType": OCI_LAYER_GZIP, "size": len(blob),
             "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
             "annotations": {TOC_DIGEST: read_toc(blob).toc_digest}}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [layer],
                "config": {"mediaType": OCI_CONFIG, "size": len(config),
                           "digest": "sha256:" + hashlib.sha256(config).hexdigest()}}
    with RegistryClient(registry.host) as client:
        for data in (blob, config):
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            client.push_blob(repo, digest, len(data), data)
        client.put_manifest(repo, "v1", json.dumps(manifest).encode(), OCI_MANIFEST)
    return f"{registry.host}/{repo}:v1"


def _hostile(mutate: Callable[[list[dict[str, Any]]], object]) -> bytes:
    return with_toc(convert(BASE, chunk_size=4096)[0], mutate)


REFUSED = {
    "nul-in-a-name": (lambda es: es.append({"name": "etc/a\x00b", "type": "dir"}),
                      "holds a NUL byte"),
    "file-used-as-directory": (lambda es: es.append({"name": "etc/hostname/x", "type": "dir"}),
                               "is used as a directory"),
    "hardlink-out-of-the-tree": (lambda es: es.append({"name": "h", "type": "hardlink",
                                                       "linkName": "../../etc/shadow"}),
                                 "which is not in the TOC"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_layer_no_system_could_hold_is_refused(tmp_path: Path, registry: RegistryServer,
                                                 case: str) -> None:
    mutate, reason = REFUSED[case]
    ref = _push(registry, _hostile(mutate))
    with lazy_mounts(tmp_path) as mounts:
        proc = mounts.rpull(ref, ok=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert reason in proc.stderr, proc.stderr
        assert mounts.cli.names() == []


def test_names_that_climb_stay_inside_and_links_are_not_followed(
        tmp_path: Path, registry: RegistryServer) -> None:
    def mutate(es: list[dict[str, Any]]) -> None:
        es.append({"name": "../../../../climbed", "type": "dir", "mode": 0o755})
        es.append({"name": "/abs", "type": "dir", "mode": 0o755})
        es.append({"name": "passwd", "type": "symlink", "linkName": "/etc/passwd"})
        es.append({"name": "up", "type": "symlink", "linkName": "../../../../../"})

    ref = _push(registry, _hostile(mutate))
    outside = tmp_path / "climbed"
    with lazy_mounts(tmp_path) as mounts:
        mount = mounts.mount(ref)
        assert (mount / "climbed").is_dir() and (mount / "abs").is_dir()  # cleaned: inside
        assert not outside.exists()
        assert os.readlink(mount / "passwd") == "/etc/passwd"  # a symlink, shown as it is
        assert os.readlink(mount / "up") == "../../../../../"
        assert (mount / "etc" / "hostname").read_bytes() == b"inside\n"
        assert sorted(os.listdir(mount)) == ["abs", "bin", "climbed", "etc", "passwd", "up"]
        # the layer server lives on: a read after all that still works
        assert len((mount / "bin" / "tool").read_bytes()) == 9000
