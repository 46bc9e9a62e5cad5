"""``estargz i``: ctr-remote's image verbs (pull, convert, push) and the store's (ls, rm, tag, ...).

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
from estargz.errors import BuildError, ImageNotFound
from estargz.image.config import chain_id, diff_ids
from estargz.image.model import Descriptor, Index, Manifest, Platform, loads, parse_document
from estargz.image.tocimage import toc_image_name
from estargz.reference import Reference
from estargz.store.layout import ImageStore
from estargz.store.names import normalize_name

if TYPE_CHECKING:  # (the libraries of one command are imported when it runs)
    from estargz.image.convert import ConvertOptions

__all__ = ["SOURCE_META"]

SOURCE_META = "converted-from"


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
            progress=rep.transfer(), workers=getattr(args, "max_concurrent_downloads", 0) or 4,
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
    if args.print_chainid:
        for desc, manifest in _stored_manifests(store, top):
            ids = diff_ids(store.read_blob(manifest.config.digest))
            where = f" ({desc.platform})" if desc.platform else ""
            print(f"image chain ID{where}: {chain_id(ids)}")
    return 0


def _stored_manifests(store: ImageStore, top: Descriptor) -> list[tuple[Descriptor, Manifest]]:
    """The manifests of a stored image that the store holds (an index: the pulled ones)."""
    doc = parse_document(store.read_blob(top.digest), top.media_type, top.digest)
    if isinstance(doc, Manifest):
        return [(top, doc)]
    out = []
    for child in doc.manifests:
        if store.has_blob(child.digest):
            sub = parse_document(store.read_blob(child.digest), child.media_type, child.digest)
            if isinstance(sub, Manifest):
                out.append((child, sub))
    return out


def _push_target(args: argparse.Namespace, store: ImageStore) -> Descriptor:
    """What ``push`` sends: LOCAL's image, the store's ``--manifest``, or with ``--platform``
    the one manifest of that platform in LOCAL's index."""
    if args.manifest:
        digest = args.manifest if ":" in args.manifest else f"sha256:{args.manifest}"
        if not store.has_blob(digest):
            raise ImageNotFound(f"--manifest {digest} is not in the store")
        data = store.read_blob(digest)
        media_type = args.manifest_type or str(loads(data, digest).get("mediaType") or "")
        if not media_type:
            raise BuildError(f"--manifest {digest} names no mediaType: give --manifest-type")
        top = Descriptor(media_type, digest, len(data))
    else:
        _, top = _lookup(store, args.local or args.remote)
    if not args.platform:
        return top
    wants = _platforms(args)
    chosen = [d for d, _ in _stored_manifests(store, top)
              if d.platform and any(w.matches(d.platform) for w in wants)]
    if len(chosen) != 1:
        have = ", ".join(str(d.platform) for d, _ in _stored_manifests(store, top)
                         if d.platform) or "no platforms"
        raise BuildError(f"--platform {', '.join(args.platform)} matches {len(chosen)} manifests "
                         f"of the image (it has {have}): name exactly one platform")
    return chosen[0]


def _cmd_push(args: argparse.Namespace) -> int:
    from estargz.image.transfer import push_image

    store = open_store(args)
    remote = Reference.parse(args.remote)
    top = _push_target(args, store)
    with reporter(args) as rep, registry_client(args, remote) as client:
        rep.message(f"pushing {remote}")
        digest = push_image(client, store, top, remote, progress=rep.transfer(),
                            workers=args.max_concurrent_uploaded_layers or 4)
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


def _convert_options(args: argparse.Namespace, gunzip: tuple[str, ...] | None
                     ) -> ConvertOptions:
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
        workers=args.estargz_parallelism or None,
        gunzip=gunzip,
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
    from estargz.image.gziphelper import choose_gzip_helper

    helper = choose_gzip_helper(args.estargz_gzip_helper if args.estargz else None)
    options = _convert_options(args, helper.command)  # every flag checked before any work
    dst = normalize_name(args.dst)
    try:
        toc_name = toc_image_name(dst) if options.external_toc else None
    except ValueError:
        raise BuildError(f"{dst} is pinned by digest, but --estargz-external-toc names the TOC "
                         f"image after the tag of DST (DST-esgztoc): give DST a tag") from None
    store = open_store(args)
    with reporter(args) as rep:
        if helper.note:
            rep.message(f"note: {helper.note}")
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
                    store.put_meta(layer.result.digest, SOURCE_META, orjson.dumps(meta))
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
