"""Image conversion with ctr-remote's options: media types, eStargz or zstd:chunked layers,
TOC image.

Works on any store offering the small :class:`BlobStore` surface: blobs are read from and
written to it, nothing is named until the caller commits the result. Layers are converted
concurrently; a layer shared by several manifests is converted once.
"""

from __future__ import annotations

import gzip
import json
import os
import platform as host_platform
import shutil
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from threading import Lock
from typing import Protocol

from estargz.errors import BuildError, InvalidTar, NotFound
from estargz.format import BuildOptions, build
from estargz.format.types import (
    STORE_UNCOMPRESSED_SIZE_ANNOTATION,
    TOC_JSON_DIGEST_ANNOTATION,
    ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
)
from estargz.image.config import diff_ids, with_diff_ids
from estargz.image.mediatypes import (
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    LAYER_GZIP_TYPES,
    LAYER_TAR_TYPES,
    LAYER_ZSTD_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    to_oci,
)
from estargz.image.model import (
    Descriptor,
    Index,
    InvalidDocument,
    Manifest,
    Platform,
    parse_document,
)
from estargz.image.tocimage import TocLayer, build_toc_image

__all__ = [
    "BlobStore",
    "BlobWriter",
    "ConvertOptions",
    "ConvertResult",
    "LayerReport",
    "convert_image",
    "host_platform_spec",
    "read_record_in",
]


class BlobWriter(Protocol):
    def write(self, data: bytes, /) -> int | None: ...
    def commit(self) -> str: ...


class BlobStore(Protocol):
    """What conversion needs from a store: content-addressed blobs in and out."""

    def blob_path(self, digest: str) -> Path: ...
    def read_blob(self, digest: str) -> bytes: ...
    def put_blob(self, data: bytes, expected_digest: str | None = None) -> str: ...
    def ingest(
        self, expected_digest: str | None = None, expected_size: int | None = None
    ) -> AbstractContextManager[BlobWriter]: ...


_ESTARGZ_ANNOTATIONS = (
    TOC_JSON_DIGEST_ANNOTATION,
    STORE_UNCOMPRESSED_SIZE_ANNOTATION,
    ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
)
"""What a layer's old format said of it: dropped whenever a layer is rewritten."""


def host_platform_spec() -> Platform:
    """The platform this machine runs, in OCI terms (the default of ``--platform``)."""
    machine = host_platform.machine().lower()
    arch, variant = {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", ""),
        "arm64": ("arm64", ""),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
        "i686": ("386", ""),
    }.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """ctr-remote's ``i convert`` flags, checked together before any work.

    ``zstdchunked`` writes zstd:chunked layers at ``zstd_compression_level``; ``chunk_size``
    and ``record_in`` serve both it and ``estargz``, the other options eStargz only.
    """

    oci: bool = False
    estargz: bool = False
    zstdchunked: bool = False
    uncompress: bool = False
    compression_level: int = 9
    zstd_compression_level: int = 3
    chunk_size: int = 4 << 20
    min_chunk_size: int = 0
    external_toc: bool = False
    keep_diff_id: bool = False
    record_in: dict[int, list[str]] | None = None
    platforms: Sequence[Platform] = ()
    all_platforms: bool = False
    layer_workers: int | None = None
    workers: int | None = None  # compression threads per layer; the bytes do not depend on it
    gunzip: tuple[str, ...] | None = None  # external gzip decompressor (BuildOptions.gunzip)

    def check(self) -> None:
        esgz_only = {
            "--estargz-external-toc": self.external_toc,
            "--estargz-keep-diff-id": self.keep_diff_id,
            "--estargz-min-chunk-size": self.min_chunk_size > 0,
        }
        if self.estargz and self.zstdchunked:
            raise BuildError("--estargz and --zstdchunked cannot be combined")
        if self.zstdchunked and not self.oci:
            raise BuildError("--zstdchunked needs --oci (Docker media types have no zstd "
                             "layers and carry no annotations)")
        if self.zstdchunked and self.uncompress:
            raise BuildError("--zstdchunked and --uncompress cannot be combined")
        if self.record_in is not None and not (self.estargz or self.zstdchunked):
            raise BuildError("--estargz-record-in needs --estargz or --zstdchunked")
        for flag, used in esgz_only.items():
            if used and not self.estargz:
                raise BuildError(f"{flag} needs --estargz")
        if self.estargz and self.uncompress:
            raise BuildError("--estargz and --uncompress cannot be combined")
        if self.keep_diff_id and self.record_in is not None:
            raise BuildError(
                "--estargz-keep-diff-id cannot be combined with --estargz-record-in: "
                "prioritizing files reorders the tar and changes the diffID"
            )
        if self.all_platforms and self.platforms:
            raise BuildError("--platform and --all-platforms cannot be combined")
        self.build_options(()).check()

    def build_options(self, prioritized: Sequence[str]) -> BuildOptions:
        return BuildOptions(
            chunk_size=self.chunk_size,
            min_chunk_size=self.min_chunk_size,
            prioritized_files=tuple(prioritized),
            allow_missing_prioritized=True,
            compression="zstd" if self.zstdchunked else "gzip",
            compression_level=(self.zstd_compression_level if self.zstdchunked
                               else self.compression_level),
            external_toc=self.external_toc,
            keep_diff_id=self.keep_diff_id,
            workers=self.workers,
            gunzip=self.gunzip,
        )


def read_record_in(path: str | os.PathLike[str]) -> dict[int, list[str]]:
    """Prioritized paths per layer index from an ``optimize --record-out`` file.

    The file is a stream of JSON objects ``{"path", "manifestDigest", "layerIndex"}``; records
    without a layer index cannot be placed and are ignored, as ctr-remote does.
    """
    text = Path(path).read_text(encoding="utf-8")
    out: dict[int, list[str]] = {}
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            record, pos = decoder.raw_decode(text, pos)
        except ValueError as exc:
            raise BuildError(f"{path}: not a record file: {exc}") from None
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise BuildError(f"{path}: record without a 'path': {record!r}")
        index = record.get("layerIndex")
        if isinstance(index, int) and not isinstance(index, bool):
            out.setdefault(index, []).append(record["path"])
    return out


@dataclass(slots=True)
class LayerReport:
    """What happened to one layer, for progress output and ``inspect``."""

    source: Descriptor
    result: Descriptor
    diff_id: str
    toc_digest: str = ""
    missed_prioritized: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ConvertResult:
    image: Descriptor
    toc_image: Descriptor | None
    layers: list[LayerReport]
    manifests: list[Descriptor]


@dataclass(slots=True)
class _LayerOutcome:
    report: LayerReport
    toc_blob: bytes | None


class _Converter:
    def __init__(
        self,
        store: BlobStore,
        options: ConvertOptions,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.store = store
        self.options = options
        self.progress = progress or (lambda _msg: None)
        self._done: dict[tuple[str, int], _LayerOutcome] = {}
        self._lock = Lock()
        workers = options.layer_workers or min(4, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="estargz-layer")

    # --- layers ---------------------------------------------------------------------------

    def _layer_type(self, source: Descriptor, gzip_output: bool, oci: bool) -> str:
        if self.options.zstdchunked:
            return OCI_LAYER_ZSTD
        if oci:
            return OCI_LAYER_GZIP if gzip_output else OCI_LAYER_TAR
        if source.media_type.startswith("application/vnd.docker."):
            return DOCKER_LAYER_GZIP if gzip_output else DOCKER_LAYER_TAR
        return OCI_LAYER_GZIP if gzip_output else OCI_LAYER_TAR

    def convert_layer(self, source: Descriptor, index: int, oci: bool) -> _LayerOutcome:
        key = (source.digest, index if self.options.record_in else -1)
        with self._lock:
            done = self._done.get(key)
        if done is not None:
            return done
        outcome = self._convert_layer(source, index, oci)
        with self._lock:
            self._done[key] = outcome
        return outcome

    def _convert_layer(self, source: Descriptor, index: int, oci: bool) -> _LayerOutcome:
        kind = source.media_type
        if kind not in LAYER_GZIP_TYPES | LAYER_TAR_TYPES | LAYER_ZSTD_TYPES:
            raise BuildError(f"layer {source.digest}: unsupported media type {kind!r}")
        path = self.store.blob_path(source.digest)
        short = source.digest[7:19]
        annotations = {k: v for k, v in source.annotations.items() if k not in _ESTARGZ_ANNOTATIONS}
        if self.options.estargz or self.options.zstdchunked:
            prioritized = (self.options.record_in or {}).get(index, [])
            target = "zstd:chunked" if self.options.zstdchunked else "eStargz"
            self.progress(f"layer {short}: converting to {target}")
            with self.store.ingest() as writer:
                result = build(path, writer, self.options.build_options(prioritized))  # type: ignore[arg-type]
                digest = writer.commit()
            annotations[TOC_JSON_DIGEST_ANNOTATION] = result.toc_digest
            annotations[STORE_UNCOMPRESSED_SIZE_ANNOTATION] = str(result.uncompressed_size)
            annotations.update(result.annotations)
            desc = Descriptor(
                self._layer_type(source, True, oci),
                digest,
                result.size,
                annotations,
                extra=dict(source.extra),
            )
            report = LayerReport(
                source, desc, result.diff_id, result.toc_digest, result.missed_prioritized
            )
            self.progress(f"layer {short}: done ({source.size} -> {result.size} bytes)")
            return _LayerOutcome(report, result.toc_blob)
        if self.options.uncompress and kind not in LAYER_TAR_TYPES:
            self.progress(f"layer {short}: decompressing")
            try:
                with self.store.ingest() as writer, open(path, "rb") as src:
                    if kind in LAYER_ZSTD_TYPES:
                        from estargz.format.zstdchunked import copy_decompressed

                        copy_decompressed(src, writer)  # type: ignore[arg-type]
                    else:
                        with gzip.open(src, "rb") as gz:
                            shutil.copyfileobj(gz, writer, 1 << 20)
                    digest = writer.commit()
            except (OSError, EOFError, zlib.error, InvalidTar) as exc:
                raise BuildError(f"layer {source.digest}: cannot decompress: {exc}") from exc
            size = self.store.blob_path(digest).stat().st_size
            desc = Descriptor(
                self._layer_type(source, False, oci),
                digest,
                size,
                annotations,
                extra=dict(source.extra),
            )
            return _LayerOutcome(LayerReport(source, desc, digest), None)
        if kind in LAYER_ZSTD_TYPES:  # kept as it is: zstd has no Docker media type
            return _LayerOutcome(LayerReport(source, source, ""), None)
        media = self._layer_type(source, kind in LAYER_GZIP_TYPES, oci)
        desc = replace(source, media_type=media)
        return _LayerOutcome(LayerReport(source, desc, ""), None)

    # --- documents ------------------------------------------------------------------------

    def convert_manifest(
        self, desc: Descriptor, data: bytes
    ) -> tuple[Descriptor, list[_LayerOutcome]]:
        manifest = parse_document(data, desc.media_type, f"manifest {desc.digest}")
        if not isinstance(manifest, Manifest):
            raise InvalidDocument(f"{desc.digest}: an index where a manifest was expected")
        oci = self.options.oci or manifest.media_type == OCI_MANIFEST
        futures = [
            self.pool.submit(self.convert_layer, layer, i, oci)
            for i, layer in enumerate(manifest.layers)
        ]
        outcomes = [f.result() for f in futures]
        config = self.store.read_blob(manifest.config.digest)
        old_ids = diff_ids(config)
        if len(old_ids) != len(manifest.layers):
            raise BuildError(
                f"manifest {desc.digest}: {len(manifest.layers)} layers but the config lists "
                f"{len(old_ids)} diff_ids"
            )
        new_ids = [o.report.diff_id or old for o, old in zip(outcomes, old_ids, strict=True)]
        if self.options.keep_diff_id and new_ids != old_ids:
            bad = next(i for i, (a, b) in enumerate(zip(new_ids, old_ids, strict=True)) if a != b)
            raise BuildError(
                f"layer {bad}: keep-diff-id produced diffID {new_ids[bad]}, config says "
                f"{old_ids[bad]} (the source layer does not match its config)"
            )
        new_config = with_diff_ids(config, new_ids)
        config_type = to_oci(manifest.config.media_type) if oci else manifest.config.media_type
        config_digest = self.store.put_blob(new_config)
        new_manifest = Manifest(
            media_type=OCI_MANIFEST if oci else manifest.media_type,
            config=replace(
                manifest.config, media_type=config_type, digest=config_digest, size=len(new_config)
            ),
            layers=[o.report.result for o in outcomes],
            annotations=manifest.annotations,
            extra=manifest.extra,
        )
        raw = new_manifest.to_bytes()
        digest = self.store.put_blob(raw)
        return (
            Descriptor(
                new_manifest.media_type,
                digest,
                len(raw),
                dict(desc.annotations),
                desc.platform,
                dict(desc.extra),
            ),
            outcomes,
        )

    def wanted(self, platform: Platform | None) -> bool:
        if self.options.all_platforms:
            return True
        if platform is None:
            return False
        wants = list(self.options.platforms) or [host_platform_spec()]
        return any(w.matches(platform) for w in wants)


def convert_image(
    store: BlobStore,
    source: Descriptor,
    options: ConvertOptions,
    *,
    progress: Callable[[str], None] | None = None,
) -> ConvertResult:
    """Convert the image (manifest or index) ``source``; all new blobs land in ``store``.

    The caller names the results (``result.image`` and, with an external TOC,
    ``result.toc_image``) in one store transaction.
    """
    options.check()
    conv = _Converter(store, options, progress)
    try:
        data = store.read_blob(source.digest)
        doc = parse_document(data, source.media_type, f"image {source.digest}")
        outcomes: list[_LayerOutcome] = []
        manifests: list[Descriptor] = []
        if isinstance(doc, Index):
            children = [d for d in doc.manifests if d.media_type in MANIFEST_TYPES]
            chosen = [d for d in children if conv.wanted(d.platform)]
            if not chosen:
                have = ", ".join(str(d.platform) for d in children if d.platform) or "none"
                raise BuildError(f"no manifest for the requested platform (the index has: {have})")
            documents = []
            for child in chosen:  # all of them at hand before any layer is converted
                try:
                    documents.append((child, store.read_blob(child.digest)))
                except NotFound:
                    raise BuildError(
                        f"only part of index {source.digest} is here: the manifest for "
                        f"{child.platform or 'no platform'} ({child.digest}) is missing; pull "
                        "the source with --all-platforms or that --platform"
                    ) from None
            for child, child_data in documents:
                new_desc, got = conv.convert_manifest(child, child_data)
                manifests.append(new_desc)
                outcomes.extend(got)
            oci = options.oci or doc.media_type == OCI_INDEX
            index = Index(
                OCI_INDEX if oci else doc.media_type, manifests, doc.annotations, doc.extra
            )
            raw = index.to_bytes()
            image = Descriptor(index.media_type, store.put_blob(raw), len(raw))
        else:
            image, outcomes = conv.convert_manifest(source, data)
            manifests.append(image)
        toc_image = None
        if options.external_toc:
            layers = {
                o.report.result.digest: TocLayer(o.report.result.digest, o.toc_blob)
                for o in outcomes
                if o.toc_blob is not None
            }
            toc_image = build_toc_image(store, list(layers.values()))
        return ConvertResult(image, toc_image, [o.report for o in outcomes], manifests)
    finally:
        conv.pool.shutdown(wait=True, cancel_futures=True)
