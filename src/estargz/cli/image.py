"""``estargz i``: ctr-remote's image verbs (pull, convert, push, get-toc-digest) and the store's.

Verbs and flags are spelled as in ``ctr-remote``, so its documented command lines run with
``ctr-remote`` replaced by ``estargz``. Images live in the embedded store (``--root``); a
convert source that is not in the store is pulled first, so registry-to-registry is one command.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from estargz.cli.common import open_store, registry_client
from estargz.cli.output import emit_json
from estargz.errors import BuildError, ImageNotFound, InvalidTOC, RegistryError
from estargz.image.model import Descriptor, Index, Manifest, Platform, parse_document
from estargz.image.tocimage import find_toc_layer, toc_image_name
from estargz.reference import Reference
from estargz.store.layout import ImageStore
from estargz.store.names import normalize_name

if TYPE_CHECKING:  # (the libraries of one command are imported when it runs)
    from estargz.format import BlobSource
    from estargz.image.convert import ConvertOptions
    from estargz.image.inspect import LayerInspection
    from estargz.registry import RegistryClient

__all__: list[str] = []

_SOURCE_META = "converted-from"


# --- shared plumbing ------------------------------------------------------------------------


def _platforms(args: argparse.Namespace) -> list[Platform]:
    return [Platform.parse(p) for p in getattr(args, "platform", None) or []]


def _lookup(store: ImageStore, name: str) -> tuple[str, Descriptor]:
    key = normalize_name(name)
    return key, store.get_image(key)


def _pull(args: argparse.Namespace, store: ImageStore, ref_text: str, rep: Any) -> Descriptor:
    from estargz.image.transfer import pull_image

    ref = Reference.parse(ref_text)
    platforms = _platforms(args)  # arguments are checked before any request
    with registry_client(args, ref) as client, store.lease():
        rep.message(f"pulling {ref}")
        return pull_image(
            client, store, ref, name=normalize_name(ref_text),
            platforms=platforms, all_platforms=bool(getattr(args, "all_platforms", False)),
            progress=rep.transfer(),
        )


# --- pull / push ----------------------------------------------------------------------------


def reporter(args: argparse.Namespace) -> Any:
    """Progress output; ``rich`` is imported only by the commands that show progress."""
    from estargz.cli.progress import reporter as make

    return make(args)


def _cmd_pull(args: argparse.Namespace) -> int:
    store = open_store(args)
    with reporter(args) as rep:
        top = _pull(args, store, args.ref, rep)
    print(f"{normalize_name(args.ref)} {top.digest}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from estargz.image.transfer import push_image

    store = open_store(args)
    remote = Reference.parse(args.remote)
    _, top = _lookup(store, args.local or args.remote)
    with reporter(args) as rep, registry_client(args, remote) as client:
        rep.message(f"pushing {remote}")
        digest = push_image(client, store, top, remote, progress=rep.transfer())
    print(f"{remote} {digest}")
    return 0


# --- convert --------------------------------------------------------------------------------


def _zstdchunked_flags(args: argparse.Namespace) -> tuple[int, str | None]:
    """The chunk size and record file of a conversion: ctr-remote spells them
    ``--zstdchunked-*`` for zstd:chunked now, ``--estargz-*`` in older releases; both are
    taken, and refused together unless they agree."""
    zstd_flags = {
        "--zstdchunked-compression-level": args.zstdchunked_compression_level is not None,
        "--zstdchunked-chunk-size": args.zstdchunked_chunk_size is not None,
        "--zstdchunked-record-in": args.zstdchunked_record_in is not None,
    }
    for flag, used in zstd_flags.items():
        if used and not args.zstdchunked:
            raise BuildError(f"{flag} needs --zstdchunked")
    chunk_size = args.estargz_chunk_size
    if args.zstdchunked_chunk_size is not None:
        if chunk_size and chunk_size != args.zstdchunked_chunk_size:
            raise BuildError("--estargz-chunk-size and --zstdchunked-chunk-size disagree")
        chunk_size = args.zstdchunked_chunk_size
    record = args.estargz_record_in
    if args.zstdchunked_record_in is not None:
        if record and record != args.zstdchunked_record_in:
            raise BuildError("--estargz-record-in and --zstdchunked-record-in disagree")
        record = args.zstdchunked_record_in
    return chunk_size or 4 << 20, record


def _convert_options(args: argparse.Namespace) -> ConvertOptions:
    from estargz.image.convert import ConvertOptions, read_record_in

    chunk_size, record_file = _zstdchunked_flags(args)
    # the record file is read only once the flags are known to fit together
    record: dict[int, list[str]] | None = {} if record_file else None
    options = ConvertOptions(
        oci=args.oci,
        estargz=args.estargz,
        zstdchunked=args.zstdchunked,
        uncompress=args.uncompress,
        compression_level=args.estargz_compression_level,
        zstd_compression_level=args.zstdchunked_compression_level or 3,
        chunk_size=chunk_size,
        min_chunk_size=args.estargz_min_chunk_size,
        external_toc=args.estargz_external_toc,
        keep_diff_id=args.estargz_keep_diff_id,
        record_in=record,
        platforms=_platforms(args),
        all_platforms=args.all_platforms,
    )
    options.check()
    if record_file:
        options = replace(options, record_in=read_record_in(record_file))
    return options


def _cmd_convert(args: argparse.Namespace) -> int:
    from estargz.image.convert import convert_image

    if args.estargz_keep_diff_id and args.estargz_record_in:
        raise BuildError("--estargz-keep-diff-id cannot be combined with --estargz-record-in: "
                         "prioritizing files reorders the tar and changes the diffID")
    options = _convert_options(args)  # every flag checked before any work
    dst = normalize_name(args.dst)
    try:
        toc_name = toc_image_name(dst) if options.external_toc else None
    except ValueError:
        raise BuildError(f"{dst} is pinned by digest, but --estargz-external-toc names the TOC "
                         f"image after the tag of DST (DST-esgztoc): give DST a tag") from None
    store = open_store(args)
    with reporter(args) as rep:
        try:
            src_key, source = _lookup(store, args.src)
        except ImageNotFound:
            source = _pull(args, store, args.src, rep)
            src_key = normalize_name(args.src)
        rep.message(f"converting {src_key} -> {dst}")
        with store.lease():
            result = convert_image(store, source, options, progress=rep.message)
            for layer in result.layers:
                if layer.result.digest != layer.source.digest:
                    meta = {"digest": layer.source.digest, "size": layer.source.size}
                    store.put_meta(layer.result.digest, _SOURCE_META, orjson.dumps(meta))
                for missed in layer.missed_prioritized:
                    rep.message(f"warning: recorded file {missed!r} is not in the layer")
            names = {dst: result.image}
            if toc_name and result.toc_image is not None:
                names[toc_name] = result.toc_image
            store.set_images(names)
        if options.estargz and result.image.media_type.startswith("application/vnd.docker."):
            rep.message("warning: the result keeps Docker media types, which officially carry "
                        "no annotations: some registries drop the TOC digests lazy pulling "
                        "needs (convert with --oci)")
    print(f"{dst} {result.image.digest}")
    if toc_name:
        print(f"{toc_name} {result.toc_image.digest if result.toc_image else '-'}")
    return 0


# --- store verbs ----------------------------------------------------------------------------


def _platforms_of(store: ImageStore, desc: Descriptor) -> str:
    if not store.has_blob(desc.digest):
        return "-"
    doc = parse_document(store.read_blob(desc.digest), desc.media_type, desc.digest)
    if isinstance(doc, Index):
        return ",".join(str(d.platform) for d in doc.manifests if d.platform) or "-"
    config = orjson.loads(store.read_blob(doc.config.digest))
    if isinstance(config, dict) and config.get("os"):
        return f"{config.get('os')}/{config.get('architecture')}"
    return "-"


def _cmd_ls(args: argparse.Namespace) -> int:
    store = open_store(args)
    records = store.list_images()
    if args.quiet:
        for r in records:
            print(r.name)
        return 0
    rows: list[dict[str, str]] = [
        {
            "name": r.name,
            "type": r.descriptor.media_type,
            "digest": r.descriptor.digest,
            "platforms": _platforms_of(store, r.descriptor),
            "created": r.created.isoformat() if r.created else "",
        }
        for r in records
    ]
    if args.json:
        emit_json(rows)
        return 0
    width = max([len(r["name"]) for r in rows] + [4])
    print(f"{'REF':{width}}  {'TYPE':44}  {'DIGEST':19}  PLATFORMS")
    for row in rows:
        print(f"{row['name']:{width}}  {row['type']:44}  {row['digest'][:19]}  {row['platforms']}")
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    store = open_store(args)
    for name in args.names:
        key, _ = _lookup(store, name)
        store.remove_image(key)
        print(key)
    freed = store.gc()
    if not args.quiet:
        print(f"removed {freed.blobs} unreferenced blobs ({freed.freed_bytes} bytes)",
              file=sys.stderr)
    return 0


def _cmd_tag(args: argparse.Namespace) -> int:
    store = open_store(args)
    src, _ = _lookup(store, args.src)
    store.tag(src, normalize_name(args.dst))
    print(normalize_name(args.dst))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from estargz.store import import_docker_archive, import_oci_layout

    store = open_store(args)
    path = Path(args.path)
    names = [normalize_name(n) for n in args.name] if args.name else None
    if path.is_dir():
        imported = import_oci_layout(store, path, names)
    else:
        imported = import_docker_archive(store, path, names)
    for name, desc in imported.items():
        print(f"{name} {desc.digest}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from estargz.store import export_docker_archive, export_oci_layout

    store = open_store(args)
    names = [_lookup(store, n)[0] for n in args.names]
    out = Path(args.out)
    parent = out.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{parent}: no such directory to export into")
    if args.oci_layout or out.is_dir() or args.out.endswith("/"):
        export_oci_layout(store, names, out)
    else:
        export_docker_archive(store, names, out)
    print(out)
    return 0


# --- TOC digest and inspect -----------------------------------------------------------------


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
            data, media_type, digest = self.client.get_manifest(self.ref.repository,
                                                                self.ref.manifest_ref)
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


def _cmd_get_toc_digest(args: argparse.Namespace) -> int:
    from estargz.format import open_blob

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
        if args.dump_toc:
            sys.stdout.buffer.write(orjson.dumps(orjson.loads(blob.toc_json),
                                                 option=orjson.OPT_INDENT_2) + b"\n")
        else:
            print(blob.toc_digest)
    finally:
        view.close()
    return 0


def _inspect_rows(view: _ImageView) -> list[dict[str, Any]]:
    from estargz.image.inspect import inspect_layer

    rows = []
    for desc, manifest in view.manifests():
        for i, layer in enumerate(manifest.layers):
            meta = view.store.get_meta(layer.digest, _SOURCE_META)
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


# --- parser ---------------------------------------------------------------------------------
