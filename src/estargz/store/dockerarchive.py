"""Docker archives (what ``docker save`` writes and ``docker load`` reads) in and out of the store.

Two archive layouts exist. The classic one lists, in ``manifest.json``, a config file and layer
tars per image; it is rebuilt here as a Docker schema 2 image whose config bytes are kept exactly,
so the image ID (the config digest) does not change. Since Docker 25 the archive is also an OCI
image layout; that one is imported as the layout it is, manifests and all.

Exports use the classic layout with uncompressed layers, which every reader accepts.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from estargz.digest import DigestMismatch, Hasher, parse_digest
from estargz.errors import FormatError, StoreError
from estargz.image.config import diff_ids
from estargz.image.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    DOCKER_MANIFEST,
    LAYER_GZIP_TYPES,
    LAYER_TAR_TYPES,
    MANIFEST_TYPES,
)
from estargz.image.model import Descriptor, Manifest, Platform, parse_document
from estargz.store.fsutil import atomic_file
from estargz.store.layout import ImageStore
from estargz.store.names import familiar_name, normalize_name, split_name
from estargz.store.transfer import import_layout

__all__ = ["TarFiles", "export_docker_archive", "import_docker_archive"]

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class TarFiles:
    """The files of a tar archive, by normalised name (``./a`` and ``a`` are the same)."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._members = {posixpath.normpath(m.name.lstrip("/")): m for m in tar.getmembers()}

    def open(self, name: str) -> IO[bytes] | None:
        member = self._members.get(posixpath.normpath(name))
        return self._tar.extractfile(member) if member is not None else None  # follows links


class _Gunzip:
    """Incremental gzip decompression (all members), in bounded pieces."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(31)

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                yield self._inflate.decompress(data, _CHUNK)
                if self._inflate.eof:
                    data = self._inflate.unused_data
                    if data:
                        self._inflate = zlib.decompressobj(31)
                else:
                    data = self._inflate.unconsumed_tail
        except zlib.error as exc:
            raise FormatError(f"corrupt gzip data: {exc}") from exc

    def finish(self) -> bytes:
        rest = self._inflate.flush()
        if not self._inflate.eof:
            raise FormatError("gzip data ends in the middle of a stream")
        return rest


# --- import ------------------------------------------------------------------------------


def _import_layer(
    store: ImageStore, files: TarFiles, name: str, diff_id: str, what: str
) -> Descriptor:
    src = files.open(name)
    if src is None:
        raise StoreError(f"{what}: layer {name!r} is not in the archive")
    diff = Hasher(parse_digest(diff_id)[0])
    with src, store.ingest() as writer:
        chunk = src.read(_CHUNK)
        if chunk.startswith(_ZSTD_MAGIC):
            raise StoreError(f"{what}: layer {name!r} is zstd-compressed, which is not supported")
        gunzip = _Gunzip() if chunk.startswith(_GZIP_MAGIC) else None
        while chunk:
            writer.write(chunk)
            for piece in gunzip.feed(chunk) if gunzip else (chunk,):
                diff.update(piece)
            chunk = src.read(_CHUNK)
        if gunzip:
            diff.update(gunzip.finish())
        if diff.digest != diff_id:
            raise DigestMismatch(
                f"{what}: layer {name!r} has diff_id {diff.digest}, the config says {diff_id}"
            )
        digest = writer.commit()
        return Descriptor(DOCKER_LAYER_GZIP if gunzip else DOCKER_LAYER_TAR, digest, writer.size)


def _import_entry(store: ImageStore, files: TarFiles, entry: Any, what: str) -> Descriptor:
    config_name = entry.get("Config") if isinstance(entry, dict) else None
    layers = entry.get("Layers") if isinstance(entry, dict) else None
    if not isinstance(config_name, str) or not isinstance(layers, list) or not all(
        isinstance(layer, str) for layer in layers
    ):
        raise StoreError(f"{what}: manifest.json entry needs 'Config' and a 'Layers' list")
    src = files.open(config_name)
    if src is None:
        raise StoreError(f"{what}: config {config_name!r} is not in the archive")
    with src:
        config = src.read()
    ids = diff_ids(config)
    if len(ids) != len(layers):
        raise StoreError(
            f"{what}: {len(layers)} layers, but the config lists {len(ids)} diff_ids"
        )
    layer_descs = [
        _import_layer(store, files, name, diff_id, what)
        for name, diff_id in zip(layers, ids, strict=True)
    ]
    config_desc = Descriptor(DOCKER_CONFIG, store.put_blob(config), len(config))
    raw = Manifest(DOCKER_MANIFEST, config_desc, layer_descs).to_bytes()
    return Descriptor(DOCKER_MANIFEST, store.put_blob(raw), len(raw))


def import_docker_archive(
    store: ImageStore, path: str | os.PathLike[str], names: Sequence[str] | None = None
) -> dict[str, Descriptor]:
    """Load a ``docker save`` tar (optionally compressed) into ``store``; ``{name: descriptor}``.

    Images are named by their ``RepoTags`` (or, for the OCI layout form, by their index
    annotations); ``names`` replaces those, one name per image in archive order. Every layer is
    checked against the config's ``diff_ids``.
    """
    what = os.fspath(path)
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with below
    except tarfile.ReadError:
        raise StoreError(f"{what}: neither a tar (plain or compressed) from docker save nor an "
                         "OCI layout directory") from None
    with archive as tar:
        files = TarFiles(tar)
        layout = files.open("oci-layout")
        if layout is not None:
            layout.close()
            return import_layout(store, files, names, what)
        src = files.open("manifest.json")
        if src is None:
            raise StoreError(f"{what} is not a docker archive (no manifest.json)")
        with src:
            try:
                entries = orjson.loads(src.read())
            except orjson.JSONDecodeError as exc:
                raise StoreError(f"{what}: manifest.json is not JSON: {exc}") from exc
        if not isinstance(entries, list):
            raise StoreError(f"{what}: manifest.json is not a list")
        if names is not None and len(names) != len(entries):
            raise StoreError(
                f"{what} holds {len(entries)} images but {len(names)} names were given"
            )
        images: dict[str, Descriptor] = {}
        with store.lease():
            for i, entry in enumerate(entries):
                top = _import_entry(store, files, entry, f"{what} (image {i})")
                tags = [names[i]] if names is not None else entry.get("RepoTags") or []
                if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                    raise StoreError(f"{what} (image {i}): 'RepoTags' is not a list of names")
                images.update((normalize_name(tag), top) for tag in tags)
            if not images:
                raise StoreError(f"{what}: no image in the archive has a RepoTag; give names")
            store.set_images(images)
    return images


# --- export ------------------------------------------------------------------------------


def _one_manifest(
    store: ImageStore, name: str, top: Descriptor, platform: Platform | None
) -> Descriptor:
    """The single-platform manifest of ``top`` a docker archive can hold."""
    doc = parse_document(store.read_blob(top.digest), top.media_type, f"image {name}")
    if isinstance(doc, Manifest):
        return top
    from estargz.image.convert import host_platform_spec

    present = [d for d in doc.manifests
               if d.media_type in MANIFEST_TYPES and store.has_blob(d.digest)]
    wanted = platform or host_platform_spec()
    for desc in present:
        if desc.platform is not None and wanted.matches(desc.platform):
            return desc
    if platform is None and len(present) == 1:
        return present[0]
    have = ", ".join(str(d.platform) for d in present) or "none"
    raise StoreError(f"image {name}: no manifest for {wanted} in the store (it has: {have})")


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_layer(
    store: ImageStore, tar: tarfile.TarFile, layer: Descriptor, diff_id: str, name: str,
    tmpdir: Path,
) -> None:
    """Add the layer uncompressed, checking that it is the tar the config's diff_id names."""
    if layer.media_type in LAYER_TAR_TYPES:
        if layer.digest != diff_id:
            raise DigestMismatch(f"layer {layer.digest} is uncompressed but has diff_id {diff_id}")
        with store.open_blob(layer.digest) as src:
            tar.addfile(_info(name, store.blob_size(layer.digest)), src)
        return
    if layer.media_type not in LAYER_GZIP_TYPES:
        raise StoreError(f"layer {layer.digest}: cannot export media type {layer.media_type!r}")
    diff = Hasher(parse_digest(diff_id)[0])
    gunzip = _Gunzip()
    with tempfile.TemporaryFile(dir=tmpdir) as plain, store.open_blob(layer.digest) as src:
        while chunk := src.read(_CHUNK):
            for piece in gunzip.feed(chunk):
                plain.write(piece)
                diff.update(piece)
        rest = gunzip.finish()
        plain.write(rest)
        diff.update(rest)
        if diff.digest != diff_id:
            raise DigestMismatch(
                f"layer {layer.digest} decompresses to {diff.digest}, the config says {diff_id}"
            )
        size = plain.tell()
        plain.seek(0)
        tar.addfile(_info(name, size), plain)


def export_docker_archive(
    store: ImageStore,
    names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    platform: Platform | None = None,
) -> None:
    """Write the named images as one ``docker load``-able tar at ``path`` (replaced atomically).

    Of a multi-platform image, the manifest for ``platform`` (default: this machine's) is
    written. Names of one image share one entry; layers shared by images are written once.
    """
    path = Path(path)
    groups: dict[str, tuple[Descriptor, list[str]]] = {}
    for raw_name in names:
        name = normalize_name(raw_name)
        chosen = _one_manifest(store, name, store.get_image(name), platform)
        groups.setdefault(chosen.digest, (chosen, []))[1].append(name)
    entries: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    with atomic_file(path, tmpdir=path.parent) as out, tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT
    ) as tar:
        for desc, image_names in groups.values():
            manifest = parse_document(store.read_blob(desc.digest), desc.media_type, desc.digest)
            assert isinstance(manifest, Manifest)
            config = store.read_blob(manifest.config.digest)
            ids = diff_ids(config)
            if len(ids) != len(manifest.layers):
                raise StoreError(f"image {desc.digest}: {len(manifest.layers)} layers, but the "
                                 f"config lists {len(ids)} diff_ids")
            config_name = parse_digest(manifest.config.digest)[1] + ".json"
            layer_names = []
            for layer, diff_id in zip(manifest.layers, ids, strict=True):
                layer_id = parse_digest(diff_id)[1]
                layer_name = f"{layer_id}/layer.tar"
                if layer_id not in written:
                    tar.addfile(_info(layer_id + "/", kind=tarfile.DIRTYPE))
                    _add_layer(store, tar, layer, diff_id, layer_name, path.parent)
                    written.add(layer_id)
                layer_names.append(layer_name)
            if config_name not in written:
                _add_bytes(tar, config_name, config)
                written.add(config_name)
            tags = []
            for name in image_names:
                repository, tag, _digest = split_name(name)
                if tag:
                    short = familiar_name(f"{repository}:{tag}")
                    tags.append(short)
                    top_layer = parse_digest(ids[-1])[1] if ids else ""
                    repositories.setdefault(short.rpartition(":")[0], {})[tag] = top_layer
            entries.append({"Config": config_name, "RepoTags": tags or None,
                            "Layers": layer_names})
        _add_bytes(tar, "manifest.json", orjson.dumps(entries))
        _add_bytes(tar, "repositories", orjson.dumps(repositories))
