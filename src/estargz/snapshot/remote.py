"""Remote snapshots: an eStargz layer mounted lazily instead of being downloaded and unpacked.

containerd's pull handlers (ctr-remote's ``rpull``, the CRI plugin) label each layer's Prepare
with the image reference and the layer digest. When those name an eStargz layer whose TOC
checks out, the layer is mounted by the same machinery as ``estargz i rpull``: a mount of one
layer, whose daemon (``python -m estargz.lazy.daemon SPEC``) runs its layer server and binds
the read-only layer onto the snapshot's directory. The mount's state lives in the store's
``state/mounts/`` like rpull's, so ``estargz i mounts`` lists it with the bytes fetched, and
its spec is what a restarted snapshotter mounts again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from estargz.errors import EstargzError
from estargz.lazy.daemon import is_mounted
from estargz.lazy.spec import LayerSpec, MountSpec, read_json
from estargz.store import ImageStore

__all__ = [
    "REMOTE_LABEL",
    "TARGET_LABEL",
    "RemoteLayers",
    "RemoteRequest",
    "remote_request",
]

log = logging.getLogger("estargz.snapshot")

TARGET_LABEL = "containerd.io/snapshot.ref"
"""The chain ID containerd asks the snapshotter to provide (and to commit under)."""
REMOTE_LABEL = "containerd.io/snapshot/remote"
"""Set on the snapshots we mounted lazily, as the Go stargz snapshotter does."""
_REF_LABELS = ("containerd.io/snapshot/remote/stargz.reference",
               "containerd.io/snapshot/cri.image-ref")
_DIGEST_LABELS = ("containerd.io/snapshot/remote/stargz.digest",
                  "containerd.io/snapshot/cri.layer-digest")
_READY_TIMEOUT = 90.0


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    target: str
    image: str
    layer_digest: str


def remote_request(labels: dict[str, str]) -> RemoteRequest | None:
    """What a Prepare's labels ask to be mounted lazily, if they name a layer of an image."""
    target = labels.get(TARGET_LABEL)
    image = next((labels[k] for k in _REF_LABELS if labels.get(k)), "")
    digest = next((labels[k] for k in _DIGEST_LABELS if labels.get(k)), "")
    if not (target and image and digest):
        return None
    return RemoteRequest(target, image, digest)


class RemoteLayers:
    """Lazy layer mounts of one store (its blobs cache, TOCs and mount state)."""

    def __init__(self, store_root: str, *, background_fetch: bool = True) -> None:
        self.store_root = store_root
        self.background_fetch = background_fetch

    def _store(self) -> ImageStore:
        return ImageStore(self.store_root)

    def mount(self, request: RemoteRequest, target_dir: Path, *, bottom: bool) -> MountSpec:
        """Check the layer (manifest, footer, TOC against its annotation) and mount it lazily
        read-only at ``target_dir``; EstargzError saying why when it cannot be.

        ``bottom``: the snapshot has no parent. A layer server presents whiteouts to overlayfs
        only for layers above the first of their mount; a mount here holds one layer, so a
        layer with whiteouts above another is refused (and unpacked by containerd) rather
        than shown with the deleted files back."""
        from estargz.lazy.mount import open_layer
        from estargz.reference import Reference
        from estargz.registry import RegistryClient

        ref = Reference.parse(request.image)
        with RegistryClient.for_user(ref.registry) as client:
            top, layer, blob = open_layer(client, ref, request.layer_digest)
        if not bottom and b".wh." in blob.toc_json:  # (OCI whiteouts and opaque markers)
            raise EstargzError("the layer has whiteouts, which a one-layer lazy mount does "
                               "not present to overlayfs")
        store = self._store()
        ident = hashlib.sha256(f"{request.target}{time.time_ns()}".encode()).hexdigest()[:12]
        state = Path(store.root) / "state" / "mounts" / ident
        spec = MountSpec(
            id=ident, image=str(ref), image_digest=top.digest, state_dir=str(state),
            mountpoint=str(target_dir), store_root=str(store.root), registry=ref.registry,
            repository=ref.repository, background_fetch=self.background_fetch,
            layers=[LayerSpec(
                digest=layer.digest, size=layer.size, mountpoint=str(state / "layers" / "0"),
                toc_digest=blob.toc_digest, footer_kind=blob.footer.kind,
                footer_size=blob.footer.size, toc_offset=blob.footer.toc_offset,
                data_end=blob.data_end, reason="lazy")],
        )
        state.mkdir(parents=True, mode=0o700)
        store.put_meta(layer.digest, "toc.json", blob.toc_json)
        spec.save()
        try:
            self.start(spec)
        except BaseException:
            self.unmount(str(state))
            raise
        return spec

    def start(self, spec: MountSpec) -> None:
        """Run the mount's daemon from its spec and wait until the layer is mounted."""
        with open(spec.dir / "daemon.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "estargz.lazy.daemon", str(spec.dir / "spec.json")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )
        threading.Thread(target=proc.wait, daemon=True).start()  # reaped whenever it ends
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            status = read_json(spec.dir / "status.json") or {}
            if status.get("state") == "ready" and status.get("pid") == proc.pid:
                return
            if proc.poll() is not None or status.get("state") == "failed":
                why = status.get("error") or f"the mount daemon exited with {proc.returncode}"
                raise EstargzError(f"lazy mount of {spec.layers[0].digest}: {why} "
                                   f"(log: {spec.dir / 'daemon.log'})")
            if time.monotonic() > deadline:
                raise EstargzError(f"lazy mount of {spec.layers[0].digest}: not ready after "
                                   f"{_READY_TIMEOUT:.0f}s (log: {spec.dir / 'daemon.log'})")
            time.sleep(0.02)

    def ensure(self, state_dir: str) -> None:
        """After a restart: mount again what is recorded, unless its daemon still serves it."""
        spec = MountSpec.load(Path(state_dir) / "spec.json")
        status = read_json(spec.dir / "status.json") or {}
        pid = status.get("pid")
        alive = isinstance(pid, int) and _running(pid)
        if alive and status.get("state") == "ready" and is_mounted(spec.mountpoint):
            return
        for path in (spec.mountpoint, spec.layers[0].mountpoint):
            while is_mounted(path):
                subprocess.run(["umount", "-l", path], capture_output=True, check=False)
        if alive:
            assert isinstance(pid, int)
            os.kill(pid, signal.SIGTERM)
        layer = spec.layers[0]
        store = self._store()
        if store.get_meta(layer.digest, "toc.json") is None:  # (a store gc dropped it)
            self._fetch_toc(store, spec)
        log.info("mounting %s again at %s", spec.layers[0].digest, spec.mountpoint)
        self.start(spec)

    @staticmethod
    def _fetch_toc(store: ImageStore, spec: MountSpec) -> None:
        """The layer's TOC again from the registry, checked against the one mounted before."""
        from estargz.lazy.mount import open_layer
        from estargz.reference import Reference
        from estargz.registry import RegistryClient

        layer = spec.layers[0]
        ref = Reference.parse(spec.image)
        with RegistryClient.for_user(ref.registry) as client:
            _, _, blob = open_layer(client, ref, layer.digest)
        if blob.toc_digest != layer.toc_digest:
            raise EstargzError(f"layer {layer.digest}: the registry's TOC is now "
                               f"{blob.toc_digest}, not {layer.toc_digest}")
        store.put_meta(layer.digest, "toc.json", blob.toc_json)

    def unmount(self, state_dir: str) -> None:
        """Stop the mount's daemon, unmount, forget its state (as ``estargz i umount``)."""
        from estargz.lazy.mount import MountError, umount

        try:
            umount(self._store(), Path(state_dir).name)
        except MountError:  # its state is gone already: unmount what may be left
            spec_dir = Path(state_dir)
            for path in (spec_dir / "layers" / "0",):
                if is_mounted(path):
                    subprocess.run(["umount", "-l", str(path)], capture_output=True,
                                   check=False)


def _running(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return False
    return fields[0] not in ("Z", "X")
