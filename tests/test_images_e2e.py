"""``estargz i`` end to end: the console script run as a subprocess against a real registry.

The command sequences are those of stargz-snapshotter's docs/smaller-estargz.md (external TOC,
keep-diff-id, min-chunk-size) plus registry-to-registry conversion, multi-platform indexes, the
store verbs and the inspection verbs. Results are checked without estargz's own reader: skopeo
reads the images, a registry client fetches the blobs, and gzip, tarfile and hashlib take them
apart.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import platform
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clikit import Cli as Estargz
from estargz.digest import sha256_digest as sha256
from estargz.registry import Reference, RegistryClient
from imagekit import busybox_layers, files_layer, write_oci_index, write_oci_layout
from registry_fixture import RegistryServer, unique_repo

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
TOC_DIGEST = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE = "io.containers.estargz.uncompressed-size"
LAYER_DIGEST = "containerd.io/snapshot/stargz/layer.digest"
TOC_NAME = "stargz.index.json"
ESTARGZ_ONLY = {TOC_NAME, ".prefetch.landmark", ".no.prefetch.landmark"}
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(),
                                                         platform.machine().lower())


# -- running things ------------------------------------------------------------------------


def _estargz(tmp: Path, store: str = "store") -> Estargz:
    return Estargz.at(tmp, store)


@pytest.fixture
def cli(tmp_path: Path) -> Estargz:
    return _estargz(tmp_path)


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


@functools.cache
def _inspect(ref: str, flags: tuple[str, ...]) -> str:
    return skopeo("inspect", "--tls-verify=false", *flags, f"docker://{ref}")


def inspect(ref: str, *flags: str) -> Any:
    """``skopeo inspect [--raw|--config] docker://ref`` as JSON (remembered: every tag these
    tests read is pushed once, before it is read)."""
    return json.loads(_inspect(ref, flags))


def fetch(ref: str, digest: str) -> bytes:
    """A blob of ``ref``'s repository, fetched (and digest-checked) by our registry client."""
    parsed = Reference.parse(ref)
    with RegistryClient(parsed.registry) as client:
        data = client.get_blob(parsed.repository, digest, max_size=1 << 30)
    assert sha256(data) == digest
    return data


def members(tar: bytes) -> dict[str, tuple[Any, ...]]:
    """Every tar member with its metadata and content, by name."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m) if m.isfile() else None
            data = f.read() if f is not None else b""
            out[m.name] = (m.type, m.mode, m.uid, m.gid, m.mtime, m.linkname, m.size, data)
    return out


def without_diff_ids(config: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    del out["rootfs"]["diff_ids"]
    return out


# -- the source images, pushed once per module ---------------------------------------------


@dataclass(frozen=True)
class Source:
    host: str
    docker: str
    """The busybox image with Docker schema 2 media types (``skopeo --format v2s2``)."""
    oci: str
    """The same image with OCI media types."""
    index: str
    """An OCI index: linux/amd64 (the busybox layers) and linux/arm64 (two small layers)."""
    layers: dict[str, list[bytes]]
    """Uncompressed layers per platform ("linux/amd64" is also docker's and oci's)."""


@pytest.fixture(scope="module")
def source(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> Source:
    layout = tmp_path_factory.mktemp("e2e-source")
    busybox = busybox_layers()
    arm = [files_layer({"etc/arch": b"arm64\n"}), busybox[1]]  # layer two is shared
    write_oci_layout(layout, "v1", busybox)
    write_oci_index(layout, "multi", {"linux/amd64": busybox, "linux/arm64": arm})
    repo = unique_repo("e2e-source")
    refs = {kind: f"{registry.host}/{repo}:{kind}" for kind in ("docker", "oci", "multi")}
    dest = ("copy", "-q", "--dest-tls-verify=false")
    skopeo(*dest, "--format", "v2s2", f"oci:{layout}:v1", f"docker://{refs['docker']}")
    skopeo(*dest, f"oci:{layout}:v1", f"docker://{refs['oci']}")
    skopeo(*dest, "--all", f"oci:{layout}:multi", f"docker://{refs['multi']}")
    return Source(registry.host, refs["docker"], refs["oci"], refs["multi"],
                  {"linux/amd64": busybox, "linux/arm64": arm})


def dst_ref(source: Source, label: str) -> str:
    return f"{source.host}/{unique_repo(label)}:v1"


# -- checking a converted image in the registry --------------------------------------------


@dataclass
class Checked:
    manifest: dict[str, Any]
    config: dict[str, Any]
    tocs: list[dict[str, Any]]
    """Each eStargz layer's TOC JSON, parsed (from the layer, or from the TOC image)."""


def check_converted(
    ref: str, src_ref: str, src_layers: list[bytes], *, keep_diff_id: bool = False,
    external_toc: bool = False,
) -> Checked:
    """Everything docs/smaller-estargz.md promises about ``ref``, converted from ``src_ref``."""
    info = inspect(ref)
    manifest = inspect(ref, "--raw")
    config = inspect(ref, "--config")
    src_config = inspect(src_ref, "--config")
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    layers = manifest["layers"]
    assert info["Layers"] == [d["digest"] for d in layers]
    assert len(layers) == len(src_layers)

    # config: only rootfs.diff_ids may change; history and the rest are kept
    assert without_diff_ids(config) == without_diff_ids(src_config)
    assert config["history"] == src_config["history"]
    src_ids = [sha256(raw) for raw in src_layers]
    assert src_config["rootfs"]["diff_ids"] == src_ids

    embedded: dict[str, bytes] = {}
    for i, (desc, src_raw) in enumerate(zip(layers, src_layers, strict=True)):
        assert desc["mediaType"] == OCI_LAYER
        notes = desc.get("annotations", {})
        assert notes[TOC_DIGEST].startswith("sha256:"), notes
        blob = fetch(ref, desc["digest"])
        assert len(blob) == desc["size"]
        raw = gzip.decompress(blob)  # any gunzip reads an eStargz layer
        assert len(raw) == int(notes[UNCOMPRESSED_SIZE])
        assert config["rootfs"]["diff_ids"][i] == sha256(raw)
        if keep_diff_id:
            assert raw == src_raw
            continue
        got, want = members(raw), members(src_raw)
        assert {n: got[n] for n in want.keys() & got.keys()} == want
        assert set(want) <= set(got)
        assert set(got) - set(want) <= ESTARGZ_ONLY
        assert (TOC_NAME in got) is not external_toc
        if not external_toc:
            embedded[desc["digest"]] = got[TOC_NAME][-1]
    if keep_diff_id:
        assert config["rootfs"]["diff_ids"] == src_ids

    if external_toc:
        toc_ref = ref + "-esgztoc"
        inspect(toc_ref)  # skopeo reads the TOC image as an image
        toc_manifest = inspect(toc_ref, "--raw")
        assert toc_manifest["mediaType"] == OCI_MANIFEST
        by_layer = {d["annotations"][LAYER_DIGEST]: d for d in toc_manifest["layers"]}
        assert len(by_layer) == len(toc_manifest["layers"])
        assert set(by_layer) == {d["digest"] for d in layers}
        for desc in layers:
            toc_layer = by_layer[desc["digest"]]
            assert toc_layer["mediaType"] == OCI_LAYER
            files = members(gzip.decompress(fetch(toc_ref, toc_layer["digest"])))
            assert set(files) == {TOC_NAME}
            embedded[desc["digest"]] = files[TOC_NAME][-1]
    tocs = []
    for desc in layers:
        toc_json = embedded[desc["digest"]]
        assert sha256(toc_json) == desc["annotations"][TOC_DIGEST]
        toc = json.loads(toc_json)
        assert toc["version"] == 1 and toc["entries"]
        tocs.append(toc)
    return Checked(manifest, config, tocs)


def inner_offsets(toc: dict[str, Any]) -> list[int]:
    return [e["innerOffset"] for e in toc["entries"] if e.get("innerOffset")]


def stored_manifest(cli: Estargz, digest: str) -> dict[str, Any]:
    """A manifest straight from the store's OCI layout (blobs/sha256/<hex>)."""
    data = (cli.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert sha256(data) == digest
    doc: dict[str, Any] = json.loads(data)
    return doc


def printed(stdout: str) -> dict[str, str]:
    """``name digest`` lines (pull, convert, import) as a dict."""
    return dict(line.split() for line in stdout.splitlines())


# -- 1. docs/smaller-estargz.md, command by command ----------------------------------------

DOC_FLAGS = {
    "external-toc": ["--estargz-external-toc"],
    "keep-diff-id": ["--estargz-external-toc", "--estargz-keep-diff-id"],
    "min-chunk-size": ["--estargz-min-chunk-size=50000"],
}


@pytest.mark.parametrize("variant", list(DOC_FLAGS))
@pytest.mark.parametrize("kind", ["docker", "oci"])
def test_smaller_estargz_doc(cli: Estargz, source: Source, kind: str, variant: str) -> None:
    src = getattr(source, kind)
    dst = dst_ref(source, f"doc-{kind}-{variant}")
    external = "--estargz-external-toc" in DOC_FLAGS[variant]
    src_manifest = inspect(src, "--raw")
    assert src_manifest["mediaType"] == (DOCKER_MANIFEST if kind == "docker" else OCI_MANIFEST)
    assert {d["mediaType"] for d in src_manifest["layers"]} == {
        DOCKER_LAYER if kind == "docker" else OCI_LAYER}

    assert printed(cli("pull", src)) == {src: inspect(src)["Digest"]}
    out = printed(cli("convert", "--oci", "--estargz", *DOC_FLAGS[variant], src, dst))
    assert set(out) == ({dst, dst + "-esgztoc"} if external else {dst})
    assert printed(cli("push", dst)) == {dst: out[dst]}
    if external:
        assert printed(cli("push", dst + "-esgztoc")) == {dst + "-esgztoc": out[dst + "-esgztoc"]}
        assert inspect(dst + "-esgztoc")["Digest"] == out[dst + "-esgztoc"]
    assert inspect(dst)["Digest"] == out[dst]

    checked = check_converted(dst, src, source.layers["linux/amd64"],
                              keep_diff_id=variant == "keep-diff-id", external_toc=external)
    if variant != "min-chunk-size":
        assert not any(inner_offsets(toc) for toc in checked.tocs)
        return
    # several payloads share gzip members: innerOffset says where each starts inside one
    assert any(inner_offsets(toc) for toc in checked.tocs)
    plain = dst.replace(":v1", ":plain")
    plain_digest = printed(cli("convert", "--oci", "--estargz", src, plain))[plain]
    plain_sizes = [d["size"] for d in stored_manifest(cli, plain_digest)["layers"]]
    small_sizes = [d["size"] for d in checked.manifest["layers"]]
    assert all(s <= p for s, p in zip(small_sizes, plain_sizes, strict=True)), (small_sizes,
                                                                                 plain_sizes)
    assert sum(small_sizes) < sum(plain_sizes)


# -- 2. registry to registry in one command ------------------------------------------------


def test_convert_pulls_a_source_that_is_only_in_the_registry(cli: Estargz,
                                                             source: Source) -> None:
    dst = dst_ref(source, "r2r")
    proc = cli.run("convert", "--oci", "--estargz", source.docker, dst)
    assert proc.returncode == 0, proc.stderr
    assert f"pulling {source.docker}" in proc.stderr
    assert sorted(cli.names()) == sorted([source.docker, dst])
    cli("push", dst)
    assert inspect(dst)["Digest"] == printed(proc.stdout)[dst]
    checked = check_converted(dst, source.docker, source.layers["linux/amd64"])
    # a plain conversion changes the diffIDs: the TOC and a landmark are in the tar now
    assert checked.config["rootfs"]["diff_ids"] != inspect(source.docker,
                                                           "--config")["rootfs"]["diff_ids"]


# -- 3. multi-platform ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--all-platforms"], {"linux/amd64", "linux/arm64"}),
        ([], {f"linux/{HOST_ARCH}"}),
        (["--platform", "linux/arm64"], {"linux/arm64"}),
    ],
    ids=["all-platforms", "host-platform", "arm64"],
)
def test_multi_platform_index(cli: Estargz, source: Source, flags: list[str],
                              expected: set[str]) -> None:
    dst = dst_ref(source, "multi")
    digest = printed(cli("convert", "--oci", "--estargz", *flags, source.index, dst))[dst]
    cli("push", dst)
    index = inspect(dst, "--raw")
    assert index == json.loads(fetch_manifest(dst, digest))  # the tag names what was printed
    assert index["mediaType"] == OCI_INDEX
    found = {f"{m['platform']['os']}/{m['platform']['architecture']}": m
             for m in index["manifests"]}
    assert set(found) == expected
    assert len(index["manifests"]) == len(expected)
    estargz_layers: dict[str, list[str]] = {}
    repo = dst.rsplit(":", 1)[0]
    src_repo = source.index.rsplit(":", 1)[0]
    src_index = inspect(source.index, "--raw")
    src_children = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
                    for m in src_index["manifests"]}
    for plat, child in found.items():
        assert child["mediaType"] == OCI_MANIFEST
        checked = check_converted(f"{repo}@{child['digest']}",
                                  f"{src_repo}@{src_children[plat]}", source.layers[plat])
        assert checked.config["architecture"] == plat.split("/")[1]
        estargz_layers[plat] = [d["digest"] for d in checked.manifest["layers"]]
    if len(expected) == 2:  # the layer both platforms share was converted to the same blob
        assert estargz_layers["linux/amd64"][1] == estargz_layers["linux/arm64"][1]


def test_all_platforms_of_a_partly_pulled_index(cli: Estargz, source: Source) -> None:
    cli("pull", source.index)  # this machine's platform only
    blobs = cli.root / "blobs"
    before = sorted(blobs.rglob("*"))
    dst = dst_ref(source, "partial")
    proc = cli.run("convert", "--oci", "--estargz", "--all-platforms", source.index, dst)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    error = proc.stderr.splitlines()[-1]
    assert error.startswith("estargz: error:") and "--all-platforms" in error, error
    assert sorted(blobs.rglob("*")) == before  # refused before converting anything
    assert cli.names() == [source.index]

    cli("pull", "--all-platforms", source.index)
    digest = printed(cli("convert", "--oci", "--estargz", "--all-platforms", source.index,
                         dst))[dst]
    children = stored_manifest(cli, digest)["manifests"]
    assert sorted(m["platform"]["architecture"] for m in children) == ["amd64", "arm64"]


def fetch_manifest(ref: str, digest: str) -> bytes:
    parsed = Reference.parse(ref)
    with RegistryClient(parsed.registry) as client:
        data, _, got = client.get_manifest(parsed.repository, digest)
    assert got == digest == sha256(data)
    return data


# -- 4. converting eStargz again -------------------------------------------------------------


@dataclass(frozen=True)
class Converted:
    plain: str
    """The OCI source as ordinary eStargz, pushed."""
    external: str
    """The OCI source as eStargz with an external TOC, pushed with its TOC image."""


@pytest.fixture(scope="module")
def converted(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    cli = _estargz(tmp_path_factory.mktemp("e2e-converted"))
    plain, external = dst_ref(source, "plain"), dst_ref(source, "external")
    cli("convert", "--oci", "--estargz", source.oci, plain)
    cli("convert", "--oci", "--estargz", "--estargz-external-toc", source.oci, external)
    for ref in (plain, external, external + "-esgztoc"):
        cli("push", ref)
    return Converted(plain, external)


def lazy_rows(cli: Estargz, ref: str) -> list[dict[str, Any]]:
    doc = json.loads(cli("inspect", "--json", ref))
    rows: list[dict[str, Any]] = doc["layers"]
    return rows


def test_converting_estargz_again(cli: Estargz, source: Source, converted: Converted) -> None:
    check_converted(converted.plain, source.oci, source.layers["linux/amd64"])
    again = dst_ref(source, "again")
    digest = printed(cli("convert", "--oci", "--estargz", converted.plain, again))[again]
    rows = lazy_rows(cli, again)
    assert len(rows) == 2 and all(r["estargz"] and r["footer"] == "estargz" for r in rows), rows
    # the old TOC and landmark are replaced, not wrapped again: the very same image
    assert digest == inspect(converted.plain)["Digest"]

    # an external-TOC image converts into the same ordinary eStargz image too
    inlined = dst_ref(source, "inlined")
    digest = printed(cli("convert", "--oci", "--estargz", converted.external, inlined))[inlined]
    assert digest == inspect(converted.plain)["Digest"]


# -- 5. get-toc-digest and inspect -----------------------------------------------------------


def test_get_toc_digest_from_store_and_registry(cli: Estargz, converted: Converted,
                                                tmp_path: Path) -> None:
    remote = _estargz(tmp_path, "empty-store")  # reads from the registry only
    cli("pull", converted.plain)
    layers = inspect(converted.plain, "--raw")["layers"]
    assert cli("get-toc-digest", converted.plain, layers[0]["digest"]) == (
        layers[0]["annotations"][TOC_DIGEST] + "\n")
    assert remote("get-toc-digest", converted.plain, layers[1]["digest"]) == (
        layers[1]["annotations"][TOC_DIGEST] + "\n")
    toc = json.loads(remote("get-toc-digest", "--dump-toc", converted.plain, layers[0]["digest"]))
    embedded = members(gzip.decompress(fetch(converted.plain, layers[0]["digest"])))[TOC_NAME]
    assert toc == json.loads(embedded[-1])
    assert {"bin/busybox", "data/big.bin", "etc/removed-later"} <= {e["name"] for e in
                                                                     toc["entries"]}

    # external TOC: found through <ref>-esgztoc
    layers = inspect(converted.external, "--raw")["layers"]
    assert remote("get-toc-digest", converted.external, layers[0]["digest"]) == (
        layers[0]["annotations"][TOC_DIGEST] + "\n")
    toc = json.loads(remote("get-toc-digest", "--dump-toc", converted.external,
                            layers[1]["digest"][:19]))  # a short digest will do
    assert {"etc/hello.txt", "etc/.wh.removed-later", "opt/app/run.sh"} <= {
        e["name"] for e in toc["entries"]}
    stored = json.loads((remote.root / "index.json").read_text())
    assert stored["manifests"] == []  # nothing was pulled for any of this


def test_inspect_says_what_is_lazy_and_why(cli: Estargz, source: Source,
                                          converted: Converted) -> None:
    text = cli("inspect", source.oci).splitlines()
    assert text[0].startswith(source.oci) and text[0].endswith("(registry)")
    layer_lines = [line for line in text[1:] if line.lstrip().startswith("[")]
    assert len(layer_lines) == 2
    assert all("NOT lazy: not eStargz" in line for line in layer_lines), text
    rows = lazy_rows(cli, source.oci)
    assert [r["estargz"] for r in rows] == [False, False]
    assert all("not eStargz" in r["reason"] for r in rows)

    annotations = [d["annotations"] for d in inspect(converted.plain, "--raw")["layers"]]
    rows = lazy_rows(cli, converted.plain)
    assert [(r["estargz"], r["reason"], r["footer"]) for r in rows] == [(True, "lazy",
                                                                         "estargz")] * 2
    assert [r["toc_digest"] for r in rows] == [a[TOC_DIGEST] for a in annotations]
    text = cli("inspect", converted.plain)
    assert text.count(" B  lazy\n") == 2 and "NOT lazy" not in text

    rows = lazy_rows(cli, converted.external)
    assert [(r["estargz"], r["footer"]) for r in rows] == [(True, "external")] * 2
    assert cli("inspect", converted.external).count("footer external") == 2

    # the same layers without their TOC image cannot be read lazily, and inspect says so
    orphan = dst_ref(source, "orphan")
    skopeo("copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{converted.external}", f"docker://{orphan}")
    rows = lazy_rows(cli, orphan)
    assert [r["estargz"] for r in rows] == [False, False]
    assert all("TOC image" in r["reason"] for r in rows), rows
    assert cli.names() == []


# -- 6. flag combinations refused before any work --------------------------------------------


def _snapshot(root: Path) -> list[tuple[str, int, int]]:
    if not root.exists():
        return []
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*"))


PINNED = "@sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--estargz", "--estargz-keep-diff-id"], "keep-diff-id needs an external TOC"),
        (["--estargz", "--estargz-external-toc", "--estargz-keep-diff-id",
          "--estargz-record-in", "{record}"],
         "--estargz-keep-diff-id cannot be combined with --estargz-record-in"),
        (["--oci", "--estargz-external-toc"], "--estargz-external-toc needs --estargz"),
        (["--estargz-external-toc", "--estargz-keep-diff-id"], "needs --estargz"),
        (["--estargz-min-chunk-size=50000"], "--estargz-min-chunk-size needs --estargz"),
        (["--estargz-record-in", "{missing}"], "--estargz-record-in needs --estargz"),
        (["--estargz", "--uncompress"], "--estargz and --uncompress cannot be combined"),
        (["--estargz", "--estargz-external-toc", "--dst-pinned"], "give DST a tag"),
    ],
    ids=["keep-diff-id-alone", "keep-diff-id-record-in", "external-toc", "keep-diff-id",
         "min-chunk-size", "record-in", "uncompress", "external-toc-pinned-dst"],
)
def test_conflicting_flags_are_refused_first(cli: Estargz, registry: RegistryServer,
                                             tmp_path: Path, flags: list[str],
                                             reason: str) -> None:
    record = tmp_path / "record.json"
    record.write_text('{"path": "bin/busybox", "manifestDigest": "", "layerIndex": 0}\n')
    args = [f.format(record=record, missing=tmp_path / "no-such-record.json") for f in flags
            if f != "--dst-pinned"]
    nowhere = f"{registry.host}/{unique_repo('nowhere')}:v1"  # pulling it would fail otherwise
    dst = f"{registry.host}/out/never" + (PINNED if "--dst-pinned" in flags else ":v1")
    before = _snapshot(cli.root)
    proc = cli.run("convert", *args, nowhere, dst)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert reason in lines[0], lines[0]
    assert _snapshot(cli.root) == before


# -- 7. the store verbs --------------------------------------------------------------------


def test_ls_tag_rm_export_import(cli: Estargz, source: Source, tmp_path: Path) -> None:
    src_digest = printed(cli("pull", source.oci))[source.oci]
    dst = dst_ref(source, "local")
    dst_digest = printed(cli("convert", "--oci", "--estargz", source.oci, dst))[dst]
    alias = f"{source.host}/alias/img:1"
    assert cli("tag", dst, alias) == alias + "\n"

    assert cli.names() == sorted([source.oci, dst, alias])
    rows = json.loads(cli("ls", "--json"))
    assert {r["name"]: (r["digest"], r["type"], r["platforms"]) for r in rows} == {
        source.oci: (src_digest, OCI_MANIFEST, "linux/amd64"),
        dst: (dst_digest, OCI_MANIFEST, "linux/amd64"),
        alias: (dst_digest, OCI_MANIFEST, "linux/amd64"),
    }
    table = cli("ls").splitlines()
    assert table[0].split()[:2] == ["REF", "TYPE"] and len(table) == 4
    assert any(line.split()[0] == alias and dst_digest[:19] in line for line in table[1:])

    # exports that other tools read
    archive, layout = tmp_path / "image.tar", tmp_path / "layout"
    cli("export", str(archive), dst)
    cli("export", "--oci-layout", str(layout), dst, alias)
    manifest = stored_manifest(cli, dst_digest)
    config = json.loads((cli.root / "blobs" / "sha256" /
                         manifest["config"]["digest"][7:]).read_bytes())
    from_archive = json.loads(skopeo("inspect", f"docker-archive:{archive}"))
    assert from_archive["Layers"] == config["rootfs"]["diff_ids"]  # uncompressed in the tar
    assert json.loads(skopeo("inspect", "--config", f"docker-archive:{archive}")) == config
    from_layout = json.loads(skopeo("inspect", f"oci:{layout}:v1"))
    assert from_layout["Digest"] == dst_digest
    assert from_layout["Layers"] == [d["digest"] for d in manifest["layers"]]
    assert json.loads(skopeo("inspect", "--raw", f"oci:{layout}:1")) == manifest

    # ... and import into fresh stores
    fresh = _estargz(tmp_path, "fresh-oci")
    assert printed(fresh("import", str(layout))) == {dst: dst_digest, alias: dst_digest}
    assert all(r["estargz"] for r in lazy_rows(fresh, dst))
    docker = _estargz(tmp_path, "fresh-docker")
    imported = printed(docker("import", str(archive)))
    assert list(imported) == [dst]
    rows = json.loads(docker("ls", "--json"))
    assert [(r["name"], r["digest"], r["platforms"]) for r in rows] == [
        (dst, imported[dst], "linux/amd64")]

    # rm forgets names; gc frees what nothing names any more
    blobs = cli.root / "blobs" / "sha256"
    estargz_blobs = [d["digest"][7:] for d in manifest["layers"]]
    assert cli("rm", "-q", alias) == alias + "\n"
    assert all((blobs / b).exists() for b in estargz_blobs)  # dst still uses them
    proc = cli.run("rm", dst)
    assert proc.returncode == 0 and proc.stdout == dst + "\n"
    assert "removed" in proc.stderr and "unreferenced blobs" in proc.stderr
    assert not any((blobs / b).exists() for b in estargz_blobs)
    src_manifest = stored_manifest(cli, src_digest)
    assert all((blobs / d["digest"][7:]).exists() for d in src_manifest["layers"])
    assert cli.names() == [source.oci]
    missing = cli.run("rm", dst)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert len(missing.stderr.splitlines()) == 1
