"""OCI image layouts in and out of the store, read and written by skopeo and umoci as well."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from estargz.digest import DigestMismatch
from estargz.errors import BlobNotFound, ImageNotFound, StoreError
from estargz.image.model import Platform
from estargz.store import (
    NAME_ANNOTATION,
    REF_NAME_ANNOTATION,
    ImageStore,
    export_oci_layout,
    import_oci_layout,
)
from storekit import assert_complete, make_image, make_index


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc.stdout


def _skopeo(*args: str) -> Any:
    return json.loads(_run("skopeo", "--insecure-policy", "inspect", *args))


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


def _manifest(store: ImageStore, digest: str) -> dict[str, Any]:
    doc = json.loads(store.read_blob(digest))
    assert isinstance(doc, dict)
    return doc


def test_export_is_readable_by_skopeo_and_umoci(store: ImageStore, tmp_path: Path) -> None:
    oci = make_image(store, "oci", layers=3)
    docker = make_image(store, "docker", docker=True)
    store.set_images({"127.0.0.1:5000/app:v1": oci, "127.0.0.1:5000/app:v2": docker})
    out = tmp_path / "layout"
    export_oci_layout(store, ["127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v2"], out)

    index = json.loads((out / "index.json").read_bytes())
    assert [(m["digest"], m["annotations"]) for m in index["manifests"]] == [
        (oci.digest, {NAME_ANNOTATION: "127.0.0.1:5000/app:v1", REF_NAME_ANNOTATION: "v1"}),
        (docker.digest, {NAME_ANNOTATION: "127.0.0.1:5000/app:v2", REF_NAME_ANNOTATION: "v2"}),
    ]
    info = _skopeo(f"oci:{out}:v1")
    assert info["Digest"] == oci.digest
    assert info["Layers"] == [d["digest"] for d in _manifest(store, oci.digest)["layers"]]
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    raw = _run("skopeo", "inspect", "--raw", f"oci:{out}:v1").encode()
    assert raw == store.read_blob(oci.digest)  # the manifest bytes travel unchanged
    # Docker media types are kept too (skopeo 1.9 reads only OCI ones from a layout; convert
    # with --oci first for that): every blob is there, byte for byte
    for digest in assert_complete(store, docker):
        assert (out / "blobs" / "sha256" / digest[7:]).read_bytes() == store.read_blob(digest)

    assert "layer 2" in _run("umoci", "stat", "--image", f"{out}:v1")
    bundle = tmp_path / "bundle"
    _run("umoci", "unpack", "--rootless", "--image", f"{out}:v1", str(bundle))
    text = (bundle / "rootfs" / "oci" / "file2.txt").read_text()
    assert text == "oci layer 2\n" * 50


def test_export_of_an_index_and_round_trip(store: ImageStore, tmp_path: Path) -> None:
    amd = make_image(store, "amd", platform=Platform("linux", "amd64"))
    arm = make_image(store, "arm", platform=Platform("linux", "arm64", "v8"))
    index = make_index(store, [amd, arm])
    single = make_image(store, "single", gzipped=False)
    store.set_images({"multi:1": index, "127.0.0.1:5000/single": single})
    out = tmp_path / "layout"
    export_oci_layout(store, ["multi:1", "127.0.0.1:5000/single:latest"], out)
    assert json.loads(_run("skopeo", "inspect", "--raw", f"oci:{out}:1")) == _manifest(
        store, index.digest)
    arm_info = _skopeo("--override-arch", "arm64", "--override-variant", "v8", f"oci:{out}:1")
    assert arm_info["Layers"] == [d["digest"] for d in _manifest(store, arm.digest)["layers"]]
    assert _skopeo(f"oci:{out}:latest")["Digest"] == single.digest

    other = ImageStore(tmp_path / "other")
    got = import_oci_layout(other, out)
    assert got == {"docker.io/library/multi:1": index, "127.0.0.1:5000/single:latest": single}
    assert sorted(assert_complete(other, index)) == sorted(assert_complete(store, index))
    assert assert_complete(other, single) == assert_complete(store, single)
    assert [r.name for r in other.list_images()] == sorted(got)


def test_import_a_layout_made_by_umoci(store: ImageStore, tmp_path: Path) -> None:
    layout = tmp_path / "umoci"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:t1")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hello").write_text("from umoci\n")
    _run("umoci", "insert", "--rootless", "--image", f"{layout}:t1", str(rootfs / "etc"), "/etc")
    with pytest.raises(StoreError, match="no image in the layout carries a name"):
        import_oci_layout(store, layout)  # its index names only the tag "t1"
    with pytest.raises(StoreError, match="holds 1 images but 2 names"):
        import_oci_layout(store, layout, ["a", "b"])
    got = import_oci_layout(store, layout, ["127.0.0.1:5000/umoci:t1"])
    top = store.get_image("127.0.0.1:5000/umoci:t1")
    assert got == {"127.0.0.1:5000/umoci:t1": top}
    assert len(assert_complete(store, top)) == 3  # manifest, config, one layer

    out = tmp_path / "again"
    export_oci_layout(store, ["127.0.0.1:5000/umoci:t1"], out)
    _run("umoci", "unpack", "--rootless", "--image", f"{out}:t1", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle" / "rootfs" / "etc" / "hello").read_text() == "from umoci\n"


def _layout_with(tmp_path: Path, store: ImageStore) -> tuple[Path, dict[str, Any]]:
    img = make_image(store, "x")
    store.set_images({"127.0.0.1:5000/x:1": img})
    out = tmp_path / "layout"
    export_oci_layout(store, ["127.0.0.1:5000/x:1"], out)
    return out, _manifest(store, img.digest)


def test_import_verifies_every_blob(tmp_path: Path, store: ImageStore) -> None:
    out, manifest = _layout_with(tmp_path, store)
    layer = manifest["layers"][1]["digest"]
    path = out / "blobs" / "sha256" / layer[7:]
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    target = ImageStore(tmp_path / "target")
    with pytest.raises(DigestMismatch, match=layer):
        import_oci_layout(target, out)
    assert target.list_images() == [] and not target.has_blob(layer)
    assert list((target.root / "ingest").iterdir()) == []
    path.unlink()
    with pytest.raises(BlobNotFound, match=layer):
        import_oci_layout(target, out)
    assert target.list_images() == []
    with pytest.raises(StoreError, match="not an OCI image layout"):
        import_oci_layout(target, tmp_path / "nowhere")


def test_export_adds_to_a_layout_and_replaces_a_tag(store: ImageStore, tmp_path: Path) -> None:
    out, _ = _layout_with(tmp_path, store)
    newer = make_image(store, "newer")
    store.set_images({"127.0.0.1:5000/y:1": newer, "127.0.0.1:5000/y:2": newer})
    export_oci_layout(store, ["127.0.0.1:5000/y:1", "127.0.0.1:5000/y:2"], out)
    entries = json.loads((out / "index.json").read_bytes())["manifests"]
    assert [e["annotations"][NAME_ANNOTATION] for e in entries] == [
        "127.0.0.1:5000/y:1", "127.0.0.1:5000/y:2"]  # x:1 had the same tag "1"
    assert _skopeo(f"oci:{out}:1")["Digest"] == newer.digest


def test_export_refuses_what_it_cannot_write(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound):
        export_oci_layout(store, ["missing"], tmp_path / "a")
    img = make_image(store, "lazy")
    layer = _manifest(store, img.digest)["layers"][0]["digest"]
    store.blob_path(layer).unlink()
    store.set_images({"lazy": img}, require_layers=False)
    with pytest.raises(BlobNotFound, match=layer):
        export_oci_layout(store, ["lazy"], tmp_path / "b")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "unrelated").write_text("x")
    with pytest.raises(StoreError, match="not an OCI image layout"):
        export_oci_layout(store, ["lazy"], busy)
