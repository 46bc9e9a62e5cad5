"""``estargz i get-toc-digest`` and ``i inspect``: read an image where it is, the store or its
registry, without pulling it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import orjson

from estargz.cli.common import open_store, registry_client
from estargz.cli.image import SOURCE_META
from estargz.cli.output import emit_json
from estargz.errors import BlobNotFound, ImageNotFound, InvalidTOC, RegistryError
from estargz.image.model import Descriptor, Manifest, parse_document
from estargz.image.tocimage import find_toc_layer, toc_image_name
from estargz.reference import Reference
from estargz.store.names import normalize_name

if TYPE_CHECKING:  # (the libraries of one command are imported when it runs)
    from estargz.format import BlobSource, UnverifiedBlob
    from estargz.image.inspect import LayerInspection
    from estargz.registry import RegistryClient

__all__: list[str] = []


class _ImageView:
    """An image's documents and blobs, from the store when there, else from its registry."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args = args
        self.store = open_store(args)
        self.name = normalize_name(name)
        self.ref = Reference.parse(self.name)
        self._client: RegistryClient | None = None
        try:
            self.top = self.store.get_image(self.name)
            self.local = True
        except ImageNotFound:
            try:
                data, media_type, digest = self.client.get_manifest(self.ref.repository,
                                                                    self.ref.manifest_ref)
            except RegistryError as exc:  # say where it looked, and that the store has none
                asked = "its registry" if str(self.ref) == name else str(self.ref)
                raise type(exc)(f"{name}: not in the store; asking {asked}: {exc}",
                                method=exc.method, url=exc.url, status=exc.status,
                                errors=exc.errors) from exc
            self.top = Descriptor(media_type, digest, len(data))
            self._docs = {digest: data}
            self.local = False

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            self._client = registry_client(self.args, self.ref)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def document(self, desc: Descriptor) -> bytes:
        if self.store.has_blob(desc.digest):
            return self.store.read_blob(desc.digest)
        if not self.local and desc.digest in self._docs:
            return self._docs[desc.digest]
        if desc.media_type.endswith("json") and desc.size <= 4 << 20:
            data, _, _ = self.client.get_manifest(self.ref.repository, desc.digest)
            return data
        return self.client.get_blob(self.ref.repository, desc.digest)

    def manifests(self) -> list[tuple[Descriptor, Manifest]]:
        doc = parse_document(self.document(self.top), self.top.media_type, self.name)
        if isinstance(doc, Manifest):
            return [(self.top, doc)]
        out = []
        for child in doc.manifests:
            if self.local and not self.store.has_blob(child.digest):
                continue  # a platform that was not pulled
            sub = parse_document(self.document(child), child.media_type, child.digest)
            if isinstance(sub, Manifest):
                out.append((child, sub))
        return out

    def blob(self, desc: Descriptor) -> BlobSource:
        if self.store.has_blob(desc.digest):
            return self.store.blob_source(desc.digest)
        return self.client.blob(self.ref.repository, desc.digest, desc.size)

    def toc_blob(self, layer_digest: str) -> bytes | None:
        """The external TOC of a layer, from ``<name>-esgztoc`` (store, then registry)."""
        try:
            toc_name = toc_image_name(self.name)
        except ValueError:
            return None
        try:
            top = self.store.get_image(toc_name)
            manifest = self.store.read_blob(top.digest)
            source = "store"
        except ImageNotFound:
            toc_ref = Reference.parse(toc_name)
            try:
                manifest, _, _ = self.client.get_manifest(toc_ref.repository, toc_ref.manifest_ref)
            except RegistryError:  # no TOC image: the caller reports the layer as not lazy
                return None
            source = "registry"
        layer = find_toc_layer(manifest, layer_digest)
        if layer is None:
            return None
        if source == "store" and self.store.has_blob(layer.digest):
            return self.store.read_blob(layer.digest)
        return self.client.get_blob(Reference.parse(toc_name).repository, layer.digest)


def _find_layer(view: _ImageView, digest: str) -> Descriptor:
    for _, manifest in view.manifests():
        for layer in manifest.layers:
            short = digest.removeprefix("sha256:")
            if layer.digest == digest or (len(short) >= 12 and layer.digest[7:].startswith(short)):
                return layer
    raise ImageNotFound(f"{view.name} has no layer {digest}")


def _blob_toc(args: argparse.Namespace) -> UnverifiedBlob:
    """``get-toc-digest LAYER_DIGEST`` without REF: the layer among the store's blobs."""
    from estargz.format import open_blob

    digest = args.layer if ":" in args.layer else f"sha256:{args.layer}"
    store = open_store(args)
    if not store.has_blob(digest):
        raise BlobNotFound(f"{digest} is not in the store: give the image (REF LAYER_DIGEST) "
                           "to look in it and its registry")
    try:
        return open_blob(store.blob_source(digest))
    except InvalidTOC as exc:
        if exc.needs_external_toc:
            raise InvalidTOC(f"{digest} keeps its TOC in a TOC image: give the image (REF "
                             "LAYER_DIGEST) to find it") from exc
        raise


def _cmd_get_toc_digest(args: argparse.Namespace) -> int:
    from estargz.format import open_blob

    if args.ref is None:
        _print_toc(args, _blob_toc(args))
        return 0
    view = _ImageView(args, args.ref)
    try:
        layer = _find_layer(view, args.layer)
        source = view.blob(layer)
        try:
            blob = open_blob(source)
        except InvalidTOC as exc:
            if not exc.needs_external_toc:
                raise
            toc = view.toc_blob(layer.digest)
            if toc is None:
                raise
            blob = open_blob(source, external_toc=toc)
        _print_toc(args, blob)
    finally:
        view.close()
    return 0


def _print_toc(args: argparse.Namespace, blob: UnverifiedBlob) -> None:
    if args.dump_toc:
        sys.stdout.buffer.write(orjson.dumps(orjson.loads(blob.toc_json),
                                             option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(blob.toc_digest)


def _inspect_rows(view: _ImageView) -> list[dict[str, Any]]:
    from estargz.image.inspect import inspect_layer

    rows = []
    for desc, manifest in view.manifests():
        for i, layer in enumerate(manifest.layers):
            meta = view.store.get_meta(layer.digest, SOURCE_META)
            source_size = orjson.loads(meta)["size"] if meta else None
            info: LayerInspection = inspect_layer(view.blob(layer), layer, source_size=source_size)
            if info.footer == "external":
                toc = view.toc_blob(layer.digest)
                if toc is not None:
                    info = inspect_layer(view.blob(layer), layer, toc_blob=toc,
                                         source_size=source_size)
            row = info.to_dict()
            row["platform"] = str(desc.platform) if desc.platform else ""
            row["index"] = i
            rows.append(row)
    return rows


def _cmd_inspect(args: argparse.Namespace) -> int:
    view = _ImageView(args, args.ref)
    try:
        rows = _inspect_rows(view)
    finally:
        view.close()
    if args.json:
        emit_json({"name": view.name, "digest": view.top.digest, "layers": rows})
        return 0
    print(f"{view.name} {view.top.digest} ({'store' if view.local else 'registry'})")
    for r in rows:
        overhead = f"{r['overhead']:+.1%}" if r["overhead"] is not None else "-"
        verdict = f"NOT lazy: {r['reason']}"
        if r["estargz"]:
            verdict = "zstd:chunked, lazy" if r["footer"] == "zstdchunked" else "lazy"
        print(f"  [{r['platform'] or '-'} #{r['index']}] {r['digest'][:19]} {r['size']:>10} B  "
              f"{verdict}")
        if r["estargz"]:
            print(f"      TOC {r['toc_digest']}  {r['entries']} entries, {r['files']} files, "
                  f"prefetch {r['prefetch_size']} B, footer {r['footer']}, "
                  f"innerOffset {'yes' if r['inner_offset'] else 'no'}, "
                  f"overhead vs source gzip {overhead}")
    return 0
