"""The command line's grammar: every command with its flags and help, and nothing heavier.

Building the parser imports this module only. A command's code, and the libraries it needs
(httpx for the registry commands, the FUSE binding for the lazy ones), is imported when that
command runs, so ``--help``, ``--version`` and the store commands start at once.
"""

from __future__ import annotations

import argparse
import importlib

from estargz import __version__
from estargz.cli.compat import add_inapplicable
from estargz.cli.units import parse_count, parse_seconds, parse_size
from estargz.format.compression import available_engines
from estargz.image.gziphelper import GZIP_HELPERS
from estargz.lazy.spec import CACHE_BYTES, MIN_REQUEST, READ_TIMEOUT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["build_parser"]

def _deferred(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``module.name``, imported when it runs."""

    def command(args: argparse.Namespace) -> int:
        code: int = getattr(importlib.import_module(module), name)(args)
        return code

    command.__qualname__ = f"{module}.{name}"
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estargz",
        description="Convert container image layers to eStargz, verify and read them.",
    )
    parser.add_argument("--version", action="version", version=f"estargz {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--root", metavar="DIR",
                        help="image store directory (default: $ESTARGZ_ROOT, /var/lib/estargz "
                        "as root, ~/.local/share/estargz otherwise)")
    add_inapplicable(parser, "")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_layer_commands(sub)
    add_image_commands(sub)
    add_store_commands(sub)
    add_service_command(sub)
    add_snapshotter_command(sub)
    add_demo_command(sub)
    return parser


def add_registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true",
                   help="talk HTTP instead of HTTPS (automatic for 127.0.0.1 and localhost)")
    p.add_argument("--skip-verify", "-k", "--insecure-skip-verify", dest="skip_verify",
                   action="store_true", help="do not verify the registry's TLS certificate")
    p.add_argument("--user", "-u", metavar="USER[:PASSWORD]",
                   help="registry credentials (default: ~/.docker/config.json)")
    p.add_argument("--refresh", metavar="TOKEN",
                   help="OAuth2 refresh token for the registry's token service")
    p.add_argument("--tlscacert", metavar="FILE", help="CA certificates to trust (PEM)")
    p.add_argument("--tlscert", metavar="FILE", help="TLS client certificate (PEM)")
    p.add_argument("--tlskey", metavar="FILE", help="key of the TLS client certificate (PEM)")
    p.add_argument("--http-dump", action="store_true",
                   help="print every registry request and response (headers) on stderr")


def _platform_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--platform", action="append", metavar="P",
                       help="os/arch[/variant] (repeatable; default: this machine's)")
    group.add_argument("--all-platforms", action="store_true", help="every platform of an index")


def _blob_args(p: argparse.ArgumentParser, digest: bool = True) -> None:
    p.add_argument("blob", help="eStargz blob file")
    p.add_argument("--external-toc", metavar="TOC", help="TOC blob of an external-TOC layer")
    if digest:
        p.add_argument("--toc-digest", metavar="D", help="expected TOC digest (sha256:...)")


def add_layer_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    layer = sub.add_parser("layer", help="work on single layer blobs")
    cmds = layer.add_subparsers(dest="layer_command", required=True, metavar="COMMAND")

    p = cmds.add_parser("convert", help="tar, tar.gz or tar.zst to eStargz (or zstd:chunked)")
    p.add_argument("input", metavar="IN", help="tar, tar.gz or tar.zst ('-' for stdin)")
    p.add_argument("output", metavar="OUT", help="eStargz blob ('-' for stdout)")
    p.add_argument("--zstdchunked", action="store_true",
                   help="write zstd:chunked (zstd frames) instead of eStargz (gzip members)")
    p.add_argument("--chunk-size", type=parse_size, default=4 << 20, metavar="N")
    p.add_argument("--min-chunk-size", type=parse_size, default=0, metavar="N",
                   help="pack small payloads into shared gzip members (innerOffset)")
    p.add_argument("--prioritized-files", metavar="FILE", help="paths to put first, one a line")
    p.add_argument("--allow-missing-prioritized", action="store_true",
                   help="warn instead of failing when a prioritized path is not in the tar")
    p.add_argument("--compression-level", type=int, metavar="L", choices=range(1, 23),
                   help="gzip 1-9 (default 9); zstd 1-22 (default 3)")
    p.add_argument("--external-toc", metavar="TOC_OUT", help="write the TOC blob here")
    p.add_argument("--keep-diff-id", action="store_true",
                   help="keep the uncompressed tar byte-identical (needs --external-toc)")
    p.add_argument("--workers", type=int, metavar="N", help="compression threads")
    p.add_argument("--engine", choices=available_engines(), help="deflate implementation")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_deferred("estargz.cli.layer", "_convert"))

    p = cmds.add_parser("verify", help="check the TOC and every chunk")
    _blob_args(p)
    p.add_argument("--json", action="store_true", help="print file digests as JSON")
    p.set_defaults(func=_deferred("estargz.cli.layer", "_verify"))

    p = cmds.add_parser("toc", help="print the TOC JSON")
    _blob_args(p)
    p.set_defaults(func=_deferred("estargz.cli.layer", "_toc"))

    p = cmds.add_parser("extract", help="unpack the blob into a directory")
    _blob_args(p)
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--strip-leading-slash", action="store_true",
                   help="extract absolute names inside DIR instead of refusing them")
    p.set_defaults(func=_deferred("estargz.cli.layer", "_extract"))


def add_image_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    images = sub.add_parser("i", aliases=["image", "images"], help="images: pull, convert, push")
    cmds = images.add_subparsers(dest="image_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_text, **kw)
        p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
        return p

    p = command("pull", "fetch an image from a registry into the store")
    add_registry_flags(p)
    _platform_flags(p)
    p.add_argument("--print-chainid", action="store_true",
                   help="also print the chain ID of each pulled manifest's layers")
    p.add_argument("--max-concurrent-downloads", type=parse_count, default=0, metavar="N",
                   help="blobs fetched at once (default: 4)")
    add_inapplicable(p, "pull")
    p.add_argument("ref", metavar="REF")
    p.set_defaults(func=_deferred("estargz.cli.image", "_cmd_pull"), collect_on_failure=True)

    p = command("push", "push an image from the store to a registry")
    add_registry_flags(p)
    p.add_argument("--platform", action="append", metavar="P",
                   help="push only this platform's manifest of an index")
    p.add_argument("--manifest", metavar="DIGEST",
                   help="push this manifest or index of the store instead of LOCAL's")
    p.add_argument("--manifest-type", metavar="TYPE", default="",
                   help="media type of --manifest (default: read from the document)")
    p.add_argument("--max-concurrent-uploaded-layers", type=parse_count, default=0,
                   metavar="N", help="blobs uploaded at once (default: 4)")
    add_inapplicable(p, "push")
    p.add_argument("remote", metavar="REF")
    p.add_argument("local", metavar="LOCAL", nargs="?", help="store name (default: REF)")
    p.set_defaults(func=_deferred("estargz.cli.image", "_cmd_push"))

    p = command("convert", "convert an image (to eStargz with --estargz, zstd:chunked with "
                "--zstdchunked)")
    add_registry_flags(p)
    _platform_flags(p)
    p.add_argument("--oci", action="store_true", help="convert Docker media types to OCI")
    p.add_argument("--estargz", action="store_true", help="convert layers to eStargz")
    p.add_argument("--uncompress", action="store_true", help="decompress gzip layers")
    p.add_argument("--estargz-record-in", metavar="FILE",
                   help="prioritized files per layer, from `optimize --record-out`")
    p.add_argument("--estargz-compression-level", type=int, default=9, metavar="L",
                   choices=range(1, 10))
    p.add_argument("--estargz-chunk-size", type=parse_size, default=0, metavar="SIZE",
                   help="bytes per chunk, e.g. 4M (default: 4M)")
    p.add_argument("--estargz-min-chunk-size", type=parse_size, default=0, metavar="SIZE",
                   help="pack payloads into shared gzip members of at least SIZE bytes")
    p.add_argument("--estargz-parallelism", type=parse_count, default=0, metavar="N",
                   help="compression workers per layer (0: all CPUs, 1: sequential); the "
                   "output is the same byte for byte whatever N is")
    p.add_argument("--estargz-gzip-helper", "--GH", choices=GZIP_HELPERS, metavar="HELPER",
                   help="external command to decompress gzip layers with: pigz, igzip or "
                   "gzip; used when installed and faster than the built-in inflate "
                   "(igzip is; see docs/benchmarks.md)")
    p.add_argument("--estargz-external-toc", action="store_true",
                   help="move TOCs into the TOC image DST-esgztoc")
    p.add_argument("--estargz-keep-diff-id", action="store_true",
                   help="keep the uncompressed layers (diffIDs) unchanged")
    p.add_argument("--zstdchunked", action="store_true",
                   help="convert layers to zstd:chunked (needs --oci); --estargz-chunk-size "
                        "and --estargz-record-in apply to it too")
    p.add_argument("--zstdchunked-compression-level", type=int, metavar="L",
                   choices=range(1, 23), help="zstd level (default 3)")
    p.add_argument("--zstdchunked-chunk-size", type=parse_size, metavar="SIZE",
                   help="bytes per chunk (default 4 MiB)")
    p.add_argument("--zstdchunked-record-in", metavar="FILE",
                   help="prioritized files per layer, from `optimize --record-out`")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.set_defaults(func=_deferred("estargz.cli.image", "_cmd_convert"), collect_on_failure=True)

    p = command("ls", "list the images in the store", aliases=["list"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_deferred("estargz.cli.image", "_cmd_ls"))

    p = command("rm", "remove images from the store", aliases=["remove", "del"])
    p.add_argument("names", metavar="NAME", nargs="+")
    p.set_defaults(func=_deferred("estargz.cli.image", "_cmd_rm"))

    p = command("tag", "give a stored image another name")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.set_defaults(func=_deferred("estargz.cli.image", "_cmd_tag"))

    p = command("import", "import an OCI layout directory or a docker-save tar")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--name", action="append", help="name for the imported image (repeatable)")
    p.set_defaults(func=_deferred("estargz.cli.image", "_cmd_import"), collect_on_failure=True)

    p = command("export", "export images as a docker-save tar or an OCI layout directory")
    p.add_argument("--oci-layout", action="store_true", help="write an OCI layout directory")
    p.add_argument("out", metavar="OUT")
    p.add_argument("names", metavar="NAME", nargs="+")
    p.set_defaults(func=_deferred("estargz.cli.image", "_cmd_export"))

    p = command("get-toc-digest", "print the TOC digest of a layer")
    add_registry_flags(p)
    p.add_argument("--dump-toc", action="store_true", help="print the TOC JSON instead")
    p.add_argument("--zstdchunked", action="store_true",
                   help="the layer is zstd:chunked (optional: the footer says which format)")
    p.add_argument("ref", metavar="REF", nargs="?",
                   help="the image of the layer (default: the layer among the store's blobs)")
    p.add_argument("layer", metavar="LAYER_DIGEST")
    p.set_defaults(func=_deferred("estargz.cli.imageview", "_cmd_get_toc_digest"))

    add_lazy_commands(cmds)

    p = command("inspect", "per layer: eStargz or not and why, TOC, prefetch, overhead")
    add_registry_flags(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("ref", metavar="REF")
    p.set_defaults(func=_deferred("estargz.cli.imageview", "_cmd_inspect"))


def add_lazy_commands(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("rpull", help="mount an image lazily (fetch only what is read)")
    p.add_argument("--quiet", "-q", action="store_true")
    add_registry_flags(p)
    add_inapplicable(p, "rpull")
    p.add_argument("--mount", metavar="DIR", help="where the root filesystem appears")
    p.add_argument("--toc-image", metavar="REF",
                   help="TOC image of an external-TOC image (default: REF-esgztoc)")
    p.add_argument("--platform", metavar="P", help="os/arch[/variant] (default: this machine's)")
    p.add_argument("--upper", action="store_true", help="add a writable upper directory")
    p.add_argument("--no-background-fetch", action="store_true",
                   help="fetch only what is read (and the prefetch landmark range)")
    p.add_argument("--min-request", type=parse_size, default=MIN_REQUEST,
                   metavar="SIZE", help="smallest range asked of the registry; the bytes past "
                   "what a read needs serve the next reads (default: 64K)")
    p.add_argument("--read-timeout", type=parse_seconds, default=READ_TIMEOUT,
                   metavar="SECONDS", help="how long a read waits for an unreachable registry "
                   "before it fails with EIO; later reads then fail at once until the "
                   "registry answers again (default: 60)")
    p.add_argument("--cache-size", type=parse_size, default=CACHE_BYTES,
                   metavar="SIZE", help="verified chunks kept on disk, all layers of the store "
                   "together (default: 4G)")
    p.add_argument("ref", metavar="REF")
    p.set_defaults(func=_deferred("estargz.cli.lazy", "_cmd_rpull"), collect_on_failure=True)

    p = cmds.add_parser("umount", help="unmount a lazy mount and stop its daemon")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=_deferred("estargz.cli.lazy", "_cmd_umount"))

    p = cmds.add_parser("mounts", help="list lazy mounts with bytes fetched per layer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_deferred("estargz.cli.lazy", "_cmd_mounts"))


def add_store_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("store", help="check the local image store, collect what nothing uses")
    cmds = p.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    check = cmds.add_parser("check", help="read every blob and name: exit 0 if consistent, "
                            "1 with each problem listed if not (nothing is changed)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=_deferred("estargz.cli.store", "_cmd_check"))
    gc = cmds.add_parser("gc", help="remove blobs no image names, temporaries older than "
                         "--ingest-max-age, and mounts left by a crash")
    gc.add_argument("--ingest-max-age", type=parse_seconds, default=3600, metavar="SECONDS",
                    help="temporaries younger than this may belong to a running command "
                    "(default: 3600)")
    gc.set_defaults(func=_deferred("estargz.cli.store", "_cmd_gc"))


def add_service_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("service", help="a resident process that makes rpull, umount and mounts "
                       "answer at once (like the snapshotter ctr-remote talks to)")
    cmds = p.add_subparsers(dest="service_command", required=True, metavar="COMMAND")
    start = cmds.add_parser("start", help="start the service of the store (if not running)")
    start.add_argument("--foreground", action="store_true", help="do not detach; log to stderr")
    start.set_defaults(func=_deferred("estargz.cli.service", "_cmd_start"))
    stop = cmds.add_parser("stop", help="stop it (mounts keep serving)")
    stop.set_defaults(func=_deferred("estargz.cli.service", "_cmd_stop"))
    status = cmds.add_parser("status", help="exit 0 if it runs, 3 if not")
    status.set_defaults(func=_deferred("estargz.cli.service", "_cmd_status"))


def add_snapshotter_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("snapshotter", help="serve containerd's snapshots API (a proxy plugin) "
                       "in the foreground")
    p.add_argument("--address", metavar="SOCKET", default="/run/estargz/snapshotter.sock",
                   help="unix socket to listen on (default: %(default)s)")
    p.add_argument("--root", dest="snapshotter_root", metavar="DIR",
                   help="snapshots and their metadata (default: STORE/snapshotter)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default: %(default)s")
    p.add_argument("--no-background-fetch", dest="background_fetch", action="store_false",
                   help="lazy layers fetch only what is read (and their prefetch range)")
    p.set_defaults(func=_deferred("estargz.cli.snapshotter", "_cmd_snapshotter"))


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="convert, verify and extract a small built-in layer")
    p.add_argument("--dir", help="keep the files here instead of a temporary directory")
    p.set_defaults(func=_deferred("estargz.cli.demo", "_demo"))
