"""``rpull``, ``umount`` and ``mounts``: preparing lazy mounts and managing their daemons.

``rpull`` reads only the manifest, the config and, per layer, the footer and TOC (with range
requests), checks each TOC against the manifest's ``toc.digest``, and says per layer whether it
is lazy and, if not, why. Layers that cannot be lazy are pulled whole and converted to eStargz
locally, so every layer is served the same verified way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from estargz.errors import EstargzError, InvalidTOC, RegistryError
from estargz.image.mediatypes import (
    LAYER_LAZY_TYPES,
    LAYER_TAR_TYPES,
    MANIFEST_TYPES,
)
from estargz.image.model import Descriptor, Manifest, Platform, parse_document
from estargz.image.tocimage import find_toc_layer, toc_image_name
from estargz.lazy.daemon import is_mounted, spawn
from estargz.lazy.spec import (
    CACHE_BYTES,
    MIN_REQUEST,
    READ_TIMEOUT,
    LayerSpec,
    MountSpec,
    read_json,
    send_layer,
)
from estargz.reference import Reference

TYPE_CHECKING = False
if TYPE_CHECKING:  # (rpull's libraries: ``i mounts`` and ``i umount`` need none of them)
    from estargz.format import RawTOC
    from estargz.registry import RegistryClient
    from estargz.store import ImageStore

__all__ = ["MountError", "MountInfo", "leftover_mounts", "list_mounts", "open_layer", "rpull",
           "stale_mounts", "umount"]


class MountError(EstargzError):
    """The mount could not be set up or torn down."""


@dataclass(slots=True)
class MountInfo:
    spec: MountSpec
    state: str
    stats: list[dict[str, object]]


def _state_root(store: ImageStore) -> Path:
    return Path(store.root) / "state" / "mounts"


def _choose(client: RegistryClient, ref: Reference, platform: Platform | None
            ) -> tuple[Descriptor, Manifest, list[tuple[Descriptor, bytes]]]:
    """The image's top descriptor, the manifest for the platform, and the documents to store."""
    from estargz.image.convert import host_platform_spec

    data, media_type, digest = client.get_manifest(ref.repository, ref.manifest_ref)
    top = Descriptor(media_type, digest, len(data))
    doc = parse_document(data, media_type, str(ref))
    if isinstance(doc, Manifest):
        return top, doc, [(top, data)]
    want = platform or host_platform_spec()
    children = [d for d in doc.manifests if d.media_type in MANIFEST_TYPES]
    match = [d for d in children if d.platform and want.matches(d.platform)]
    if not match:
        have = ", ".join(str(d.platform) for d in children if d.platform) or "none"
        raise MountError(f"{ref}: no manifest for {want} (the index has: {have})")
    child = match[0]
    child_data, child_type, _ = client.get_manifest(ref.repository, child.digest)
    manifest = parse_document(child_data, child_type, f"{ref}@{child.digest}")
    if not isinstance(manifest, Manifest):
        raise MountError(f"{ref}: nested index")
    return top, manifest, [(child, child_data), (top, data)]


def _external_toc(client: RegistryClient, ref: Reference, toc_ref: str | None,
                  layer_digest: str) -> tuple[bytes | None, str]:
    if toc_ref is None:
        try:
            toc_ref = toc_image_name(str(ref))
        except ValueError:
            return None, (f"external TOC, and {ref} is pinned by digest so its TOC image "
                          "cannot be named: give it with --toc-image REF")
    target = Reference.parse(toc_ref)
    try:
        manifest, _, _ = client.get_manifest(target.repository, target.manifest_ref)
    except RegistryError as exc:
        return None, f"external TOC, and the TOC image {target} is not available ({exc})"
    layer = find_toc_layer(manifest, layer_digest)
    if layer is None:
        return None, f"external TOC, and the TOC image {target} has no TOC for this layer"
    return client.get_blob(target.repository, layer.digest), ""


def _open_remote(client: RegistryClient, ref: Reference, layer: Descriptor,
                 toc_ref: str | None) -> tuple[RawTOC | None, str]:
    """A remote layer's footer and TOC, their digest checked against the manifest's annotation
    (parsing is the layer server's), or why the layer cannot be lazy."""
    from estargz.format import read_toc
    from estargz.format.types import TOC_JSON_DIGEST_ANNOTATION
    from estargz.lazy.remote import ResilientSource

    if layer.media_type not in LAYER_LAZY_TYPES:
        return None, f"media type {layer.media_type} is not a gzip or zstd layer"
    want = layer.annotations.get(TOC_JSON_DIGEST_ANNOTATION)
    if not want:
        return None, (f"no {TOC_JSON_DIGEST_ANNOTATION} annotation (not eStargz, or "
                      "converted without --oci so Docker media types dropped it)")
    source = ResilientSource(client.blob(ref.repository, layer.digest, layer.size), timeout=30)
    try:
        blob = read_toc(source, annotations=layer.annotations)
    except InvalidTOC as exc:
        if not exc.needs_external_toc:
            return None, f"not eStargz: {exc}"
        toc, why = _external_toc(client, ref, toc_ref, layer.digest)
        if toc is None:
            return None, why
        try:
            blob = read_toc(source, external_toc=toc)
        except EstargzError as exc:
            return None, f"external TOC unusable: {exc}"
    except EstargzError as exc:
        return None, f"not eStargz: {exc}"
    if blob.toc_digest != want:
        return None, f"TOC digest {blob.toc_digest} does not match the annotation {want}"
    return blob, ""


def open_layer(client: RegistryClient, ref: Reference, layer_digest: str,
               platform: Platform | None = None, toc_image: str | None = None
               ) -> tuple[Descriptor, Descriptor, RawTOC]:
    """One layer of ``ref`` as rpull opens it: the image's top descriptor, the layer's, and
    its footer and TOC checked against the manifest's annotation; MountError saying why the
    layer cannot be lazy."""
    top, manifest, _ = _choose(client, ref, platform)
    layer = next((d for d in manifest.layers if d.digest == layer_digest), None)
    if layer is None:
        raise MountError(f"{ref}: the manifest has no layer {layer_digest}")
    blob, why = _open_remote(client, ref, layer, toc_image)
    if blob is None:
        raise MountError(f"layer {layer_digest}: cannot be lazy: {why}")
    return top, layer, blob


def _pull_whole(client: RegistryClient, store: ImageStore, ref: Reference, layer: Descriptor
                ) -> tuple[RawTOC, str]:
    """Fetch a layer completely and convert it to eStargz in the store."""
    from estargz.format import BuildOptions, build, read_toc

    if layer.media_type not in LAYER_LAZY_TYPES | LAYER_TAR_TYPES:
        raise MountError(f"layer {layer.digest}: unsupported media type {layer.media_type}")
    if not store.has_blob(layer.digest):
        with store.ingest(layer.digest, layer.size) as writer:
            client.fetch_blob(ref.repository, layer.digest, writer, size=layer.size)  # type: ignore[arg-type]
            writer.commit()
    with store.ingest() as writer:
        build(store.blob_path(layer.digest), writer,  # type: ignore[arg-type]
                       BuildOptions(compression_level=1))
        local = writer.commit()
    return read_toc(store.blob_source(local)), local


def rpull(
    store: ImageStore,
    client: RegistryClient,
    ref: Reference,
    *,
    mountpoint: str | None = None,
    toc_image: str | None = None,
    platform: Platform | None = None,
    upper: bool = False,
    background_fetch: bool = True,
    plain_http: bool = False,
    skip_verify: bool = False,
    user: str = "",
    refresh: str = "",
    tls_files: tuple[str, str, str] = ("", "", ""),
    min_request: int = MIN_REQUEST,
    read_timeout: float = READ_TIMEOUT,
    cache_bytes: int = CACHE_BYTES,
    say: Callable[[str], None] = lambda _m: None,
) -> MountSpec:
    """Prepare the layers of ``ref``, start its mount daemon, return once the mount answers.

    The daemon starts as soon as the manifest is known, so its layer servers mount while the
    TOCs are fetched; each gets its layer's TOC on a pipe as soon as it is checked.
    ``min_request``: the smallest range asked of the registry; ``read_timeout``: how long a
    read waits for an unreachable registry before it fails; ``cache_bytes``: the bound of the
    store's on-disk chunk cache (all layers together).
    """
    top, manifest, documents = _choose(client, ref, platform)
    ident = hashlib.sha256(f"{ref}{time.time_ns()}".encode()).hexdigest()[:12]
    state = _state_root(store) / ident
    target = os.path.abspath(mountpoint or Path(store.root) / "rootfs" / ident)
    if is_mounted(target):
        raise MountError(f"{target} is already a mountpoint")
    ca, cert, key = (os.path.abspath(f) if f else "" for f in tls_files)  # the daemon's cwd is /
    state.mkdir(parents=True)  # after the checks: a refused rpull leaves nothing behind
    try:
        spec = MountSpec(
            id=ident, image=str(ref), image_digest=top.digest, state_dir=str(state),
            mountpoint=target, store_root=str(store.root), registry=ref.registry,
            repository=ref.repository, plain_http=plain_http, skip_verify=skip_verify,
            user=user, refresh=refresh, tlscacert=ca, tlscert=cert, tlskey=key, upper=upper,
            background_fetch=background_fetch,
            min_request=min_request, read_timeout=read_timeout, cache_bytes=cache_bytes,
            layers=[LayerSpec(d.digest, d.size, str(state / "layers" / str(i)))
                    for i, d in enumerate(manifest.layers)],
        )
        spec.save()
        sys.stdout.flush()
        sys.stderr.flush()
        ready, named, feeds = spawn(spec)
        try:
            def feed(index: int, layer: LayerSpec, toc_json: bytes) -> None:
                try:
                    send_layer(feeds[index], layer, toc_json)
                except BrokenPipeError:
                    _wait_ready(spec, ready)  # the daemon failed: say why
                    raise
                os.close(feeds[index])
                feeds[index] = -1

            layers, tocs, config = _prepare_layers(store, client, ref, manifest, state,
                                                   toc_image, say, feed)
            spec.layers = layers
            spec.save()
            with store.lease():  # blobs written while the layer servers parse and index
                for layer, toc_json in zip(layers, tocs, strict=True):
                    store.put_meta(layer.digest, "toc.json", toc_json)
                store.put_blob(config, manifest.config.digest)
                for desc, raw in documents:
                    store.put_blob(raw, desc.digest)
                info = _wait_ready(spec, ready)
                # named only once mounted: a failed rpull leaves no name behind (1 ms)
                store.set_images({str(ref): top}, require_layers=False)
                os.write(named, b"named\n")  # (until then, a killed rpull takes the mount away)
        finally:
            for fd in [ready, named, *feeds]:
                if fd >= 0:
                    os.close(fd)
    except BaseException:
        _discard(state, None if mountpoint else target)
        raise
    for i, (layer, (entries, prefetch)) in enumerate(zip(spec.layers, info, strict=True)):
        if not layer.local:
            say(f"layer {i} {layer.digest[:19]}: lazy (TOC {layer.toc_digest[:19]} verified, "
                f"{entries} entries, prefetch {prefetch} bytes)")
    return spec


def _prepare_layers(
    store: ImageStore,
    client: RegistryClient,
    ref: Reference,
    manifest: Manifest,
    state: Path,
    toc_image: str | None,
    say: Callable[[str], None],
    feed: Callable[[int, LayerSpec, bytes], None],
) -> tuple[list[LayerSpec], list[bytes], bytes]:
    """Per layer: its checked TOC (remote), or a local eStargz copy (pulled whole), handed to
    its layer server with ``feed`` as soon as it is ready; and the config. Every layer's footer
    and TOC are fetched at the same time; lazy layers are fed before the config is fetched and
    before any layer is pulled whole."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(manifest.layers)))) as pool:
        opened = list(pool.map(lambda d: _open_remote(client, ref, d, toc_image),
                               manifest.layers))
    layers: list[LayerSpec | None] = [None] * len(opened)
    tocs: list[bytes] = [b""] * len(opened)

    def describe(i: int, blob: RawTOC, digest: str, size: int, local: bool,
                 reason: str) -> None:
        layer = LayerSpec(
            digest=digest, size=size, mountpoint=str(state / "layers" / str(i)),
            toc_digest=blob.toc_digest, footer_kind=blob.footer.kind,
            footer_size=blob.footer.size, toc_offset=blob.footer.toc_offset,
            data_end=blob.data_end, local=local, reason=reason,
        )
        layers[i], tocs[i] = layer, blob.toc_json
        feed(i, layer, blob.toc_json)

    for i, (desc, (remote, reason)) in enumerate(zip(manifest.layers, opened, strict=True)):
        if remote is None:
            say(f"layer {i} {desc.digest[:19]}: NOT lazy: {reason}; pulling it whole")
        else:
            describe(i, remote, desc.digest, desc.size, False, "lazy")
    # the layer servers are parsing their TOCs now: the config can come after, not between
    config = client.get_blob(ref.repository, manifest.config.digest)
    with store.lease():
        for i, (desc, (remote, reason)) in enumerate(zip(manifest.layers, opened, strict=True)):
            if remote is None:
                blob, digest = _pull_whole(client, store, ref, desc)
                describe(i, blob, digest, store.blob_size(digest), True, reason)
    return [layer for layer in layers if layer is not None], tocs, config


def _discard(state: Path, default_target: str | None) -> None:
    """Undo a failed rpull: stop a daemon that did start, unmount, remove what was created."""
    pid_file = state / "daemon.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            time.sleep(0.5)
    with open("/proc/self/mounts") as f:
        stale = [line.split()[1] for line in f if str(state) in line.split()[1]]
    for path in sorted(stale, reverse=True):
        subprocess.run(["umount", "-l", path], capture_output=True, check=False)
    if default_target and not is_mounted(default_target):
        with contextlib.suppress(OSError):
            os.rmdir(default_target)
    shutil.rmtree(state, ignore_errors=True)


def _wait_ready(spec: MountSpec, ready: int, timeout: float = 90.0) -> list[tuple[int, int]]:
    """Until the daemon says the mount is ready (on the pipe ``ready``), or fails, or dies.
    Returns, per layer, the number of TOC entries and the bytes of the prefetch range."""
    deadline = time.monotonic() + timeout
    said = b""
    while time.monotonic() < deadline:
        if not select.select([ready], [], [], 0.5)[0]:
            continue
        data = os.read(ready, 65536)
        said += data
        if said.startswith(b"ready") and (said.endswith(b"\n") or not data):
            pairs = [field.split("/") for field in said.decode().split()[1:]]
            return [(int(n), int(p)) for n, p in pairs]
        if data:
            continue
        status = read_json(spec.dir / "status.json") or {}
        error = said.decode(errors="replace").strip().removeprefix("failed: ") or \
            status.get("error") or "the mount daemon died before the mount was ready"
        raise MountError(f"mount failed: {error} (log: {spec.dir / 'daemon.log'})")
    raise MountError(f"mount not ready after {timeout:.0f}s (log: {spec.dir / 'daemon.log'})")


def _daemon_pid(spec: MountSpec) -> int | None:
    """The pid of the mount's daemon while it runs (a killed daemon leaves its pid file)."""
    try:
        pid = int((spec.dir / "daemon.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else pid


def list_mounts(store: ImageStore) -> list[MountInfo]:
    """Every mount of the store with its state: ``ready``, ``starting``, ``failed``,
    ``stopped``, ``gone`` (no longer mounted) or ``orphaned`` (mounted, daemon dead)."""
    out: list[MountInfo] = []
    root = _state_root(store)
    if not root.exists():
        return out
    for d in sorted(root.iterdir()):
        try:
            spec = MountSpec.load(d / "spec.json")
        except (FileNotFoundError, TypeError):
            continue
        status = read_json(d / "status.json") or {}
        state = status.get("state", "unknown")
        if state == "ready" and not is_mounted(spec.mountpoint):
            state = "gone"
        elif state == "ready" and _daemon_pid(spec) is None:
            state = "orphaned"
        stats = [read_json(d / f"stats-{i}.json") or {} for i in range(len(spec.layers))]
        out.append(MountInfo(spec, state, stats))
    return out


def stale_mounts(store: ImageStore) -> list[MountInfo]:
    """Mounts a crash broke: mounted with a dead daemon (``orphaned``) or recorded ready but
    no longer mounted (``gone``)."""
    return [info for info in list_mounts(store) if info.state in ("gone", "orphaned")]


def leftover_mounts(store: ImageStore) -> list[MountInfo]:
    """State of mounts that never became ready or ended (``failed``, ``stopped``, or an
    rpull killed before its daemon started): nothing is mounted; gc removes it."""
    return [info for info in list_mounts(store)
            if info.state in ("failed", "stopped")
            or (info.state not in ("ready", "gone", "orphaned")
                and _daemon_pid(info.spec) is None)]


def umount(store: ImageStore, mountpoint: str, timeout: float = 30.0) -> MountSpec:
    """Stop the daemon serving ``mountpoint`` (it unmounts everything) and forget the mount."""
    target = os.path.abspath(mountpoint)
    for info in list_mounts(store):
        if info.spec.mountpoint != target and info.spec.id != mountpoint:
            continue
        spec = info.spec
        pid = _daemon_pid(spec)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _daemon_pid(spec) is not None and time.monotonic() < deadline:
                time.sleep(0.05)  # (a dead daemon's pid file stays: ask the process)
            if _daemon_pid(spec) is not None:  # stuck: the lazy unmounts below end its servers
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for path in [spec.mountpoint, *(layer.mountpoint for layer in spec.layers)]:
            if is_mounted(path):
                subprocess.run(["umount", "-l", path], capture_output=True, check=False)
        shutil.rmtree(spec.dir, ignore_errors=True)
        default = Path(store.root) / "rootfs" / spec.id
        if Path(spec.mountpoint) == default:  # made by rpull: leave no empty directory
            with contextlib.suppress(OSError):
                default.rmdir()
        return spec
    raise MountError(f"{mountpoint}: not an estargz mount")
