"""The image store on disk: blobs, ingest, named images, metadata and garbage collection."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from estargz.digest import DigestMismatch
from estargz.errors import BlobNotFound, ImageNotFound, NotFound, StoreError
from estargz.image.mediatypes import OCI_INDEX
from estargz.image.model import Descriptor, Platform
from estargz.store import (
    CREATED_ANNOTATION,
    NAME_ANNOTATION,
    REF_NAME_ANNOTATION,
    GCResult,
    ImageStore,
)
from storekit import assert_complete, make_image, make_index, sha256

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


def _ingest_files(store: ImageStore) -> list[str]:
    return sorted(p.name for p in (store.root / "ingest").iterdir())


def _index(store: ImageStore) -> dict[str, object]:
    doc = json.loads((store.root / "index.json").read_bytes())
    assert isinstance(doc, dict)
    return doc


# --- the layout ------------------------------------------------------------------------------


def test_new_store_is_an_empty_oci_layout(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    ImageStore(root)
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((root / "index.json").read_bytes()) == {
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    for sub in ("blobs/sha256", "ingest", "meta"):
        assert (root / sub).is_dir()
    assert ImageStore(root, create=False).list_images() == []


def test_opening_a_directory_that_is_no_store_fails(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is not an estargz image store"):
        ImageStore(tmp_path, create=False)
    assert list(tmp_path.iterdir()) == []
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"holds other files \(notes.txt\)"):
        ImageStore(foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]  # nothing written there
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(StoreError):
        ImageStore(tmp_path)


def test_default_root_follows_env_uid_and_xdg(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTARGZ_ROOT", str(tmp_path / "env"))
    assert ImageStore.default_root() == tmp_path / "env"
    # in a child: it may drop root privileges (seteuid) without affecting the test process
    code = ("import os, sys\n"
            "from estargz.store import ImageStore\n"
            "if sys.argv[1] == 'user' and os.geteuid() == 0:\n"
            "    os.seteuid(65534)\n"
            "print(ImageStore.default_root())\n")
    env = {"PYTHONPATH": SRC, "HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"]}

    def run(who: str, **extra: str) -> str:
        proc = subprocess.run([sys.executable, "-c", code, who], env={**env, **extra},
                              capture_output=True, text=True, check=True)
        return proc.stdout.strip()

    if os.geteuid() == 0:
        assert run("root") == "/var/lib/estargz"
    assert run("user") == str(tmp_path / "home/.local/share/estargz")
    assert run("user", XDG_DATA_HOME=str(tmp_path / "xdg")) == str(tmp_path / "xdg/estargz")
    assert run("user", XDG_DATA_HOME="relative") == str(tmp_path / "home/.local/share/estargz")
    assert run("user", ESTARGZ_ROOT="/srv/images") == "/srv/images"


# --- blobs -----------------------------------------------------------------------------------


def test_put_and_read_blob(store: ImageStore) -> None:
    data = b"hello blob" * 1000
    digest = store.put_blob(data)
    assert digest == sha256(data)
    assert store.has_blob(digest) and store.blob_size(digest) == len(data)
    assert store.read_blob(digest) == data
    with store.open_blob(digest) as f:
        assert f.read(5) == b"hello"
    with store.blob_source(digest) as src:
        assert src.size == len(data) and src.read_at(6, 4) == b"blob"
    path = store.blob_path(digest)
    assert path == store.root / "blobs" / "sha256" / digest[7:]
    assert stat.S_IMODE(path.stat().st_mode) == 0o444  # nobody edits a blob in place
    assert store.put_blob(data, digest) == digest  # again: no error, no new file
    assert _ingest_files(store) == []


def test_put_blob_with_a_wrong_digest_stores_nothing(store: ImageStore) -> None:
    wrong = sha256(b"other")
    with pytest.raises(DigestMismatch, match=wrong):
        store.put_blob(b"data", wrong)
    assert not store.has_blob(wrong) and not store.has_blob(sha256(b"data"))
    assert _ingest_files(store) == []


def test_ingest_streams_and_commits(store: ImageStore) -> None:
    data = os.urandom(300_000)
    with store.ingest(sha256(data), len(data)) as writer:
        for i in range(0, len(data), 65536):
            assert writer.write(memoryview(data)[i : i + 65536]) == len(data[i : i + 65536])
        assert _ingest_files(store) != [] and not store.has_blob(sha256(data))
        assert (writer.digest, writer.size) == (sha256(data), len(data))
        assert writer.commit() == sha256(data)
        assert writer.commit() == sha256(data)  # idempotent
        with pytest.raises(StoreError, match="write after commit"):
            writer.write(b"more")
    assert store.read_blob(sha256(data)) == data
    assert _ingest_files(store) == []


@pytest.mark.parametrize("case", ["digest", "short", "long"])
def test_ingest_mismatch_leaves_nothing(store: ImageStore, case: str) -> None:
    data = b"x" * 1000
    expected = {"digest": (sha256(b"y" * 1000), 1000), "short": (sha256(data), 1001),
                "long": (sha256(data), 999)}[case]
    with pytest.raises(DigestMismatch), store.ingest(*expected) as writer:
        writer.write(data)  # "long" fails here, before the bytes reach the disk
        writer.commit()
    assert not store.has_blob(sha256(data)) and not store.has_blob(expected[0])
    assert _ingest_files(store) == []
    assert list((store.root / "blobs" / "sha256").iterdir()) == []


def test_ingest_aborts_on_exception_and_without_commit(store: ImageStore) -> None:
    with pytest.raises(RuntimeError), store.ingest() as writer:
        writer.write(b"partial")
        assert len(_ingest_files(store)) == 1
        raise RuntimeError("the download failed")
    with store.ingest() as writer:
        writer.write(b"forgotten")
    assert _ingest_files(store) == []
    assert not store.has_blob(sha256(b"partial")) and not store.has_blob(sha256(b"forgotten"))


def test_read_blob_detects_corruption(store: ImageStore) -> None:
    digest = store.put_blob(b"good content")
    path = store.blob_path(digest)
    path.chmod(0o644)
    path.write_bytes(b"evil content")
    with pytest.raises(DigestMismatch, match=digest):
        store.read_blob(digest)
    assert store.read_blob(digest, verify=False) == b"evil content"


def test_missing_and_invalid_blobs(store: ImageStore) -> None:
    missing = sha256(b"nope")
    for call in (store.blob_size, store.open_blob, store.read_blob, store.blob_source):
        with pytest.raises(BlobNotFound) as info:
            call(missing)
        assert isinstance(info.value, NotFound) and missing in str(info.value)
    with pytest.raises(StoreError, match="not a valid digest"):
        store.blob_path("sha256:../../etc/passwd")
    assert not store.has_blob(missing)


# --- named images ----------------------------------------------------------------------------


def test_set_images_names_several_images_at_once(store: ImageStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    img = make_image(store, "a")
    toc = make_image(store, "toc", layers=1).with_annotations(note="kept")
    store.set_images({"127.0.0.1:5000/img:v1": img, "127.0.0.1:5000/img:v1-esgztoc": toc})
    entries = _index(store)["manifests"]
    assert isinstance(entries, list) and len(entries) == 2
    by_name = {e["annotations"][NAME_ANNOTATION]: e for e in entries}
    assert by_name["127.0.0.1:5000/img:v1"]["digest"] == img.digest
    assert by_name["127.0.0.1:5000/img:v1"]["annotations"][REF_NAME_ANNOTATION] == "v1"
    assert by_name["127.0.0.1:5000/img:v1-esgztoc"]["annotations"]["note"] == "kept"
    created = by_name["127.0.0.1:5000/img:v1"]["annotations"][CREATED_ANNOTATION]
    assert created.endswith("Z") and before <= datetime.fromisoformat(created)
    assert store.get_image("127.0.0.1:5000/img:v1") == img  # the store's annotations stripped
    assert store.get_image("127.0.0.1:5000/img:v1-esgztoc") == toc
    records = store.list_images()
    assert [r.name for r in records] == ["127.0.0.1:5000/img:v1", "127.0.0.1:5000/img:v1-esgztoc"]
    assert records[0].descriptor == img
    assert records[0].created is not None and records[0].created >= before


def test_short_names_are_normalised(store: ImageStore) -> None:
    img = make_image(store, "a")
    store.set_images({"alpine": img})
    assert [r.name for r in store.list_images()] == ["docker.io/library/alpine:latest"]
    assert store.get_image("docker.io/library/alpine:latest") == img
    assert store.get_image("library/alpine:latest") == img


def test_setting_a_name_again_replaces_it(store: ImageStore) -> None:
    a, b = make_image(store, "a"), make_image(store, "b")
    store.set_images({"img": a})
    store.set_images({"img": b, "other": a})
    assert store.get_image("img") == b and store.get_image("other") == a
    assert len(_index(store)["manifests"]) == 2  # type: ignore[arg-type]


def test_set_images_refuses_images_with_missing_blobs(store: ImageStore) -> None:
    img = make_image(store, "a")
    layer = json.loads(store.read_blob(img.digest))["layers"][1]["digest"]
    store.blob_path(layer).unlink()
    before = (store.root / "index.json").read_bytes()
    with pytest.raises(BlobNotFound, match=layer):
        store.set_images({"ok": make_image(store, "b"), "broken": img})
    assert (store.root / "index.json").read_bytes() == before  # all or nothing
    with pytest.raises(BlobNotFound, match="is not in the store"):
        store.set_images({"nothing": Descriptor(img.media_type, sha256(b"?"), 1)})
    store.set_images({"lazy": img}, require_layers=False)  # layers may stay remote
    assert store.get_image("lazy") == img
    config = json.loads(store.read_blob(img.digest))["config"]["digest"]
    store.blob_path(config).unlink()
    with pytest.raises(BlobNotFound, match=config):
        store.set_images({"lazy2": img}, require_layers=False)  # but never the config


def test_an_index_may_hold_some_platforms_only(store: ImageStore) -> None:
    amd = make_image(store, "amd", platform=Platform("linux", "amd64"))
    arm = make_image(store, "arm", platform=Platform("linux", "arm64"))
    index = make_index(store, [amd, arm])
    store.blob_path(arm.digest).unlink()
    store.set_images({"multi": index})
    assert store.get_image("multi") == index


def test_remove_and_tag(store: ImageStore) -> None:
    img = make_image(store, "a")
    store.set_images({"one": img})
    assert store.tag("one", "127.0.0.1:5000/two:x") == img
    assert store.get_image("127.0.0.1:5000/two:x") == img
    store.remove_image("one")
    with pytest.raises(ImageNotFound, match=re.escape("docker.io/library/one:latest")):
        store.get_image("one")
    with pytest.raises(ImageNotFound):
        store.remove_image("one")
    with pytest.raises(ImageNotFound):
        store.tag("one", "three")
    assert [r.name for r in store.list_images()] == ["127.0.0.1:5000/two:x"]
    entry = _index(store)["manifests"][0]  # type: ignore[index]
    assert entry["annotations"][REF_NAME_ANNOTATION] == "x"
    assert store.has_blob(img.digest)  # only gc() deletes


def test_foreign_index_entries_survive_updates(store: ImageStore) -> None:
    img = make_image(store, "a")
    doc = _index(store)
    doc["manifests"] = [{"mediaType": img.media_type, "digest": img.digest, "size": img.size,
                         "annotations": {REF_NAME_ANNOTATION: "by-another-tool"}}]
    doc["annotations"] = {"top": "level"}
    (store.root / "index.json").write_bytes(json.dumps(doc).encode())
    store.set_images({"mine": img})
    store.remove_image("mine")
    after = _index(store)
    assert after["manifests"] == doc["manifests"] and after["annotations"] == {"top": "level"}
    assert store.list_images() == []


# --- metadata --------------------------------------------------------------------------------


def test_meta(store: ImageStore) -> None:
    digest = sha256(b"a remote layer, never stored locally")
    assert store.get_meta(digest, "toc.json") is None
    store.put_meta(digest, "toc.json", b"{}")
    store.put_meta(digest, "toc.json", b'{"version": 1}')
    assert store.get_meta(digest, "toc.json") == b'{"version": 1}'
    assert store.get_meta(digest, "other") is None
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(StoreError, match="metadata key"):
            store.put_meta(digest, bad, b"")
    assert _ingest_files(store) == []


# --- garbage collection ----------------------------------------------------------------------


def test_gc_removes_what_no_name_references(store: ImageStore) -> None:
    keep, drop, lazy = make_image(store, "keep"), make_image(store, "drop", layers=3), \
        make_image(store, "lazy", layers=1)
    remote_layer = json.loads(store.read_blob(lazy.digest))["layers"][0]["digest"]
    store.blob_path(remote_layer).unlink()  # as after a lazy pull: the layer stays remote
    store.set_images({"keep": keep, "drop": drop})
    store.set_images({"lazy": lazy}, require_layers=False)
    keep_blobs, drop_blobs = assert_complete(store, keep), assert_complete(store, drop)
    only_drop = set(drop_blobs) - set(keep_blobs)
    assert len(only_drop) == 5  # manifest, config, three layers (no layer is shared)
    orphan_data = b"committed, then the writer died before naming it"
    orphan = store.put_blob(orphan_data)
    store.put_meta(keep_blobs[-1], "k", b"1")
    store.put_meta(drop_blobs[-1], "k", b"1")
    store.put_meta(remote_layer, "toc", b"kept while an image names the digest")
    store.put_meta(sha256(b"unknown"), "toc", b"dropped")
    stale, fresh = store.root / "ingest" / "stale.part", store.root / "ingest" / "fresh.part"
    stale.write_bytes(b"left by a dead process")
    fresh.write_bytes(b"being written")
    old = time.time() - 7200
    os.utime(stale, (old, old))

    result = store.gc()
    assert result == GCResult(blobs=1, freed_bytes=len(orphan_data), ingest_files=1,
                              meta_dirs=1)
    assert not store.has_blob(orphan) and not stale.exists() and fresh.exists()
    assert store.get_meta(sha256(b"unknown"), "toc") is None

    store.remove_image("drop")
    sizes = sum(len(store.read_blob(d)) for d in only_drop)
    assert store.gc() == GCResult(blobs=len(only_drop), freed_bytes=sizes, meta_dirs=1)
    assert all(not store.has_blob(d) for d in only_drop)
    assert assert_complete(store, keep) == keep_blobs
    assert store.get_meta(keep_blobs[-1], "k") == b"1"
    assert store.get_meta(drop_blobs[-1], "k") is None
    assert store.get_meta(remote_layer, "toc") == b"kept while an image names the digest"
    assert store.gc(ingest_max_age=0) == GCResult(ingest_files=1)
    assert store.gc() == GCResult()


def test_gc_keeps_the_present_platforms_of_an_index(store: ImageStore) -> None:
    amd = make_image(store, "amd", platform=Platform("linux", "amd64"))
    arm = make_image(store, "arm", platform=Platform("linux", "arm64"))
    index = make_index(store, [amd, arm])
    arm_blobs = assert_complete(store, arm)
    for digest in arm_blobs[:1]:
        store.blob_path(digest).unlink()  # only the arm64 manifest is missing
    store.set_images({"multi": index})
    result = store.gc()
    assert result.blobs == len(arm_blobs) - 1  # arm64's config and layers: unreachable now
    assert assert_complete(store, amd)


def test_gc_inside_a_lease_is_refused(store: ImageStore) -> None:
    with store.lease(), pytest.raises(StoreError, match="inside lease"):
        store.gc()
    store.gc()


_LEASE_HOLDER = textwrap.dedent("""
    import sys
    from estargz.store import ImageStore
    from storekit import make_image
    store = ImageStore(sys.argv[1])
    with store.lease():
        image = make_image(store, "leased")
        print("committed", flush=True)
        sys.stdin.readline()
        store.set_images({"leased": image})
""")


def test_gc_waits_for_leases_in_other_processes(store: ImageStore) -> None:
    tests = str(Path(__file__).resolve().parent)
    holder = subprocess.Popen(
        [sys.executable, "-c", _LEASE_HOLDER, str(store.root)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": f"{SRC}:{tests}"})
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == "committed\n"
        results: list[GCResult] = []
        gc = threading.Thread(target=lambda: results.append(store.gc()))
        gc.start()
        gc.join(0.5)
        assert gc.is_alive(), "gc() ran while another process held a lease"
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
        gc.join(30)
        assert results == [GCResult()]  # the leased blobs were named before gc() could look
        assert_complete(store, store.get_image("leased"))
    finally:
        holder.kill()
        holder.wait()
