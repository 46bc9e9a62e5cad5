"""Docker archives (``docker save`` tars, classic and OCI-layout forms) in and out of the store."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from estargz.digest import DigestMismatch
from estargz.errors import BlobNotFound, FormatError, StoreError
from estargz.image.convert import host_platform_spec
from estargz.image.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)
from estargz.image.model import Descriptor, Manifest, Platform
from estargz.store import (
    ImageStore,
    export_docker_archive,
    export_oci_layout,
    import_docker_archive,
)
from storekit import assert_complete, config_bytes, layer_tar, make_image, make_index, sha256

BASE = layer_tar({"etc/os-release": b"ID=test\n", "bin/sh": b"#!fake shell\n" * 100})
APP = layer_tar({"app/main.py": b"print('hi')\n" * 40})
EXTRA = layer_tar({"app/data.bin": bytes(range(256)) * 64})


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc.stdout


def _skopeo(*args: str) -> Any:
    return json.loads(_run("skopeo", "inspect", *args))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
    tar.addfile(info, io.BytesIO(data))


def _symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)


def _classic_save(path: Path, *, tamper: str = "") -> dict[str, bytes]:
    """What ``docker save`` of two images sharing a base layer writes (the pre-25 layout).

    The app image's second layer is stored gzip-compressed, as some tools write it; its base
    layer entry is a symlink to the first image's, as docker does for shared layers.
    """
    configs = {"base": config_bytes([BASE]), "app": config_bytes([BASE, APP, EXTRA])}
    ids = {name: sha256(c)[7:] for name, c in configs.items()}
    with tarfile.open(path, "w") as tar:
        _add(tar, "layer-base/VERSION", b"1.0")
        _add(tar, "layer-base/layer.tar", BASE)
        _symlink(tar, "layer-app0/layer.tar", "../layer-base/layer.tar")
        app = gzip.compress(APP.replace(b"hi", b"ho") if tamper == "content" else APP, mtime=0)
        _add(tar, "layer-app1/layer.tar", app[:-12] if tamper == "truncate" else app)
        _add(tar, "layer-app2/layer.tar", EXTRA)
        for name, config in configs.items():
            _add(tar, f"{ids[name]}.json", config)
        manifest = [
            {"Config": f"{ids['base']}.json", "RepoTags": ["base:1", "127.0.0.1:5000/base:1"],
             "Layers": ["layer-base/layer.tar"]},
            {"Config": f"{ids['app']}.json", "RepoTags": ["user/app:v1"],
             "Layers": ["layer-app0/layer.tar", "layer-app1/layer.tar", "./layer-app2/layer.tar"]},
        ]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
        _add(tar, "repositories", json.dumps({"base": {"1": "layer-base"}}).encode())
    return configs


def _manifest(store: ImageStore, desc: Descriptor) -> Manifest:
    return Manifest.from_dict(json.loads(store.read_blob(desc.digest)))


def test_import_classic_docker_save(tmp_path: Path) -> None:
    configs = _classic_save(tmp_path / "save.tar")
    store = ImageStore(tmp_path / "store")
    got = import_docker_archive(store, tmp_path / "save.tar")
    assert sorted(got) == ["127.0.0.1:5000/base:1", "docker.io/library/base:1",
                           "docker.io/user/app:v1"]
    assert got["127.0.0.1:5000/base:1"] == got["docker.io/library/base:1"]
    app = store.get_image("user/app:v1")
    assert app.media_type == DOCKER_MANIFEST
    manifest = _manifest(store, app)
    assert manifest.media_type == DOCKER_MANIFEST and manifest.config.media_type == DOCKER_CONFIG
    # the image ID (config digest) is unchanged because the config bytes are
    assert manifest.config.digest == sha256(configs["app"])
    assert store.read_blob(manifest.config.digest) == configs["app"]
    assert [d.media_type for d in manifest.layers] == [DOCKER_LAYER_TAR, DOCKER_LAYER_GZIP,
                                                       DOCKER_LAYER_TAR]
    assert manifest.layers[0].digest == sha256(BASE) == _manifest(
        store, store.get_image("base:1")).layers[0].digest
    assert gzip.decompress(store.read_blob(manifest.layers[1].digest)) == APP
    assert len(assert_complete(store, app)) == 5
    assert list((store.root / "ingest").iterdir()) == []


@pytest.mark.parametrize(("tamper", "error"), [("content", DigestMismatch),
                                                ("truncate", FormatError)])
def test_import_checks_layers_against_diff_ids(
    tmp_path: Path, tamper: str, error: type[Exception]
) -> None:
    _classic_save(tmp_path / "bad.tar", tamper=tamper)
    store = ImageStore(tmp_path / "store")
    with pytest.raises(error):
        import_docker_archive(store, tmp_path / "bad.tar")
    assert store.list_images() == []  # the good first image is not named either
    assert list((store.root / "ingest").iterdir()) == []
    # only the first image's blobs (unnamed until gc() removes them), not the bad layer
    assert len(list((store.root / "blobs" / "sha256").iterdir())) == 3
    assert store.gc().blobs == 3


def test_import_rejects_malformed_archives(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")

    with tarfile.open(tmp_path / "short.tar", "w") as tar:
        _add(tar, "c.json", config_bytes([BASE, APP]))
        _add(tar, "l.tar", BASE)
        _add(tar, "manifest.json", b'[{"Config": "c.json", "RepoTags": ["x"], '
                                   b'"Layers": ["l.tar"]}]')
    with pytest.raises(StoreError, match="1 layers, but the config lists 2 diff_ids"):
        import_docker_archive(store, tmp_path / "short.tar")
    with tarfile.open(tmp_path / "empty.tar", "w") as tar:
        _add(tar, "hello", b"")
    with pytest.raises(StoreError, match="not a docker archive"):
        import_docker_archive(store, tmp_path / "empty.tar")


def test_import_compressed_archive_and_given_names(tmp_path: Path) -> None:
    _classic_save(tmp_path / "save.tar")
    (tmp_path / "save.tar.gz").write_bytes(gzip.compress((tmp_path / "save.tar").read_bytes()))
    store = ImageStore(tmp_path / "store")
    got = import_docker_archive(store, tmp_path / "save.tar.gz", ["127.0.0.1:5000/a", "b:2"])
    assert sorted(got) == ["127.0.0.1:5000/a:latest", "docker.io/library/b:2"]
    with pytest.raises(StoreError, match="holds 2 images but 1 names"):
        import_docker_archive(store, tmp_path / "save.tar", ["one"])


def _docker25_save(path: Path) -> tuple[Descriptor, bytes]:
    """What Docker 25+ writes: an OCI layout, with manifest.json for older readers."""
    config = config_bytes([BASE, APP])
    layers = [Descriptor(OCI_LAYER_TAR, sha256(t), len(t)) for t in (BASE, APP)]
    raw = Manifest(OCI_MANIFEST, Descriptor(OCI_CONFIG, sha256(config), len(config)),
                   layers).to_bytes()
    top = Descriptor(OCI_MANIFEST, sha256(raw), len(raw))
    entry = {**top.to_dict(), "annotations": {
        "io.containerd.image.name": "docker.io/library/new:25",
        "org.opencontainers.image.ref.name": "25"}}
    with tarfile.open(path, "w") as tar:
        for blob in (BASE, APP, config, raw):
            _add(tar, f"blobs/sha256/{sha256(blob)[7:]}", blob)
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(tar, "index.json", json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode())
        _add(tar, "manifest.json", json.dumps([{
            "Config": f"blobs/sha256/{sha256(config)[7:]}", "RepoTags": ["new:25"],
            "Layers": [f"blobs/sha256/{sha256(t)[7:]}" for t in (BASE, APP)]}]).encode())
    return top, config


def test_import_docker25_save_keeps_the_manifest(tmp_path: Path) -> None:
    top, config = _docker25_save(tmp_path / "save.tar")
    store = ImageStore(tmp_path / "store")
    assert import_docker_archive(store, tmp_path / "save.tar") == {"docker.io/library/new:25": top}
    assert store.get_image("new:25") == top
    assert _manifest(store, top).config.digest == sha256(config)
    assert len(assert_complete(store, top)) == 4


def _stored(tmp_path: Path) -> tuple[ImageStore, Descriptor, Descriptor]:
    store = ImageStore(tmp_path / "store")
    oci = make_image(store, "oci", layers=3)
    docker = make_image(store, "docker", docker=True)
    store.set_images({"127.0.0.1:5000/app:v1": oci, "127.0.0.1:5000/app:latest": oci,
                      "tool": docker})
    return store, oci, docker


def test_export_is_readable_by_skopeo(tmp_path: Path) -> None:
    store, oci, docker = _stored(tmp_path)
    out = tmp_path / "out.tar"
    export_docker_archive(store, ["127.0.0.1:5000/app:v1", "tool", "127.0.0.1:5000/app"], out)
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        repositories = json.loads(tar.extractfile("repositories").read())  # type: ignore[union-attr]
    assert [m["RepoTags"] for m in manifest] == [
        ["127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:latest"], ["tool:latest"]]
    assert set(repositories) == {"127.0.0.1:5000/app", "tool"}
    for image, ref in ((oci, "127.0.0.1:5000/app:v1"), (docker, "tool:latest")):
        stored = _manifest(store, image)
        config = json.loads(store.read_blob(stored.config.digest))
        raw = _skopeo("--raw", f"docker-archive:{out}:{ref}")
        assert raw["config"]["digest"] == stored.config.digest  # same image ID
        info = _skopeo(f"docker-archive:{out}:{ref}")
        assert info["Layers"] == config["rootfs"]["diff_ids"]  # uncompressed layers
        assert _skopeo("--config", f"docker-archive:{out}:{ref}") == config


def test_docker_archive_round_trip(tmp_path: Path) -> None:
    store, oci, _ = _stored(tmp_path)
    export_docker_archive(store, ["127.0.0.1:5000/app:v1"], tmp_path / "out.tar")
    other = ImageStore(tmp_path / "other")
    got = import_docker_archive(other, tmp_path / "out.tar")
    assert list(got) == ["127.0.0.1:5000/app:v1"]
    before, after = _manifest(store, oci), _manifest(other, got["127.0.0.1:5000/app:v1"])
    assert after.config.digest == before.config.digest
    assert [d.media_type for d in after.layers] == [DOCKER_LAYER_TAR] * 3
    assert [gzip.decompress(store.read_blob(d.digest)) for d in before.layers] == [
        other.read_blob(d.digest) for d in after.layers]


def test_import_an_archive_written_by_skopeo(tmp_path: Path) -> None:
    store, oci, _ = _stored(tmp_path)
    export_oci_layout(store, ["127.0.0.1:5000/app:v1"], tmp_path / "layout")
    archive = tmp_path / "skopeo.tar"
    _run("skopeo", "--insecure-policy", "copy", "-q", f"oci:{tmp_path / 'layout'}:v1",
         f"docker-archive:{archive}:127.0.0.1:5000/sk:v1")
    other = ImageStore(tmp_path / "other")
    got = import_docker_archive(other, archive)
    assert list(got) == ["127.0.0.1:5000/sk:v1"]
    imported = _manifest(other, got["127.0.0.1:5000/sk:v1"])
    assert imported.config.digest == _manifest(store, oci).config.digest
    assert_complete(other, got["127.0.0.1:5000/sk:v1"])


def test_export_picks_one_platform(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    host = host_platform_spec()
    other_platform = Platform("linux", "s390x" if host.architecture != "s390x" else "arm64")
    here = make_image(store, "here", platform=host)
    there = make_image(store, "there", platform=other_platform)
    store.set_images({"multi": make_index(store, [there, here])})

    def exported_config(**kw: Any) -> str:
        export_docker_archive(store, ["multi"], tmp_path / "out.tar", **kw)
        with tarfile.open(tmp_path / "out.tar") as tar:
            entry = json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        return "sha256:" + str(entry["Config"]).removesuffix(".json")

    assert exported_config() == _manifest(store, here).config.digest
    assert exported_config(platform=other_platform) == _manifest(store, there).config.digest
    with pytest.raises(StoreError, match="no manifest for linux/mips64"):
        exported_config(platform=Platform("linux", "mips64"))


def test_export_refuses_what_docker_cannot_load(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    config = config_bytes([BASE])
    zstd = Descriptor(OCI_LAYER_ZSTD, store.put_blob(b"(zstd)"), 6)
    raw = Manifest(OCI_MANIFEST, Descriptor(OCI_CONFIG, store.put_blob(config), len(config)),
                   [zstd]).to_bytes()
    store.set_images({"z": Descriptor(OCI_MANIFEST, store.put_blob(raw), len(raw))})
    with pytest.raises(StoreError, match="cannot export media type"):
        export_docker_archive(store, ["z"], tmp_path / "z.tar")
    lazy = make_image(store, "lazy")
    layer = _manifest(store, lazy).layers[0].digest
    store.blob_path(layer).unlink()
    store.set_images({"lazy": lazy}, require_layers=False)
    with pytest.raises(BlobNotFound, match=layer):
        export_docker_archive(store, ["lazy"], tmp_path / "lazy.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no partial archives
