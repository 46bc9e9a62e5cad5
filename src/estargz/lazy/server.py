"""One layer's FUSE server: ``python -m estargz.lazy.server SPEC LAYER_INDEX``.

Started by the mount daemon, one process per layer (libfuse serves one session per process),
as soon as ``rpull`` knows the layers: it mounts while ``rpull`` is still fetching the TOCs.
The TOC arrives on a pipe (or, run on its own, from the store); the server parses it, checks it
against the manifest's digest again and indexes it while the kernel sets the mount up, and
answers the kernel's INIT only then: until that moment the kernel holds every request back, so
nothing is served from a TOC that was not checked. Then it prefetches the landmark range in one
request, fetches the rest in the background at low priority (paused while the workload reads),
and keeps its statistics in ``stats-N.json`` for ``estargz i mounts``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from estargz.errors import EstargzError
from estargz.format import BlobReader, BlobSource, Chunk
from estargz.format.footer import Footer
from estargz.format.tocread import UnverifiedBlob
from estargz.format.types import MAX_TOC_SIZE
from estargz.lazy.cache import DiskChunkCache
from estargz.lazy.fuse import LayerOperations, serve
from estargz.lazy.layerfs import LayerFS
from estargz.lazy.remote import FetchStats, ResilientSource
from estargz.lazy.spec import LayerSpec, MountSpec, receive_layer, write_json
from estargz.registry import RegistryClient
from estargz.store import ImageStore

__all__ = ["LayerServer", "main", "registry_client", "run_layer"]

log = logging.getLogger("estargz.lazy")
_BACKGROUND_RANGE = 4 << 20
_BACKGROUND_CHUNKS = 64
"""At most this many chunks per background request: each group is checked in and written to
the cache between two looks at the workload, which must not wait for thousands of them."""
_STATS_INTERVAL = 0.2
_BACKGROUND_DELAY = 1.0
_WALK_RATE = 2000
"""Attributes given out per second above which the workload is walking the tree: the
background fetch waits, so that the walk has the process (and its lock on the interpreter) to
itself. A walk gives out tens of thousands a second; a workload reading files, hundreds."""
_RECOUNT = 1.0
"""Cached chunks are counted again at most this often (a background fetch changes the cache
many times a second)."""


class LayerServer:
    """What serves one layer: its source, its verified TOC index, its chunk cache."""

    def __init__(self, spec: MountSpec, index: int, layer: LayerSpec,
                 toc_json: bytes | None = None, *, store: ImageStore | None = None,
                 client: RegistryClient | None = None) -> None:
        """``toc_json``: the TOC bytes ``rpull`` read; None to take them from the store.
        ``store`` and ``client``: made in advance, while the TOC was on its way."""
        self.spec = spec
        self.index = index
        self.layer = layer
        self.label = f"layer {index} {layer.digest[:19]}"
        self.store = store or ImageStore(spec.store_root, create=False)
        self.stats = FetchStats()
        self.client = client or registry_client(spec)
        self.source = self._source(self.client)
        if toc_json is None:
            toc_json = self.store.get_meta(layer.digest, "toc.json")
            if toc_json is None:
                raise RuntimeError(f"{self.label}: the TOC is not in the store")
        footer = Footer(layer.footer_kind, layer.footer_size, layer.toc_offset)
        blob = UnverifiedBlob(self.source, footer, toc_json, layer.data_end)
        self.cache = DiskChunkCache(Path(spec.store_root) / "cache", layer.digest[7:],
                                    spec.cache_bytes)
        self.reader: BlobReader = blob.verify_toc(layer.toc_digest, chunk_cache=self.cache)
        self.reader.drop_toc_json()  # (about as large as the index)
        del blob, toc_json
        forget = self.source.forget if isinstance(self.source, ResilientSource) else None
        self.fs = LayerFS(self.reader, on_bad_data=forget, bottom=index == 0)
        self.chunks = self.reader.all_chunks()
        self.ops: LayerOperations | None = None
        self._answered, self._looked = 0, time.monotonic()
        gc.freeze()  # the index never changes: the collector need not walk it again

    def _source(self, client: RegistryClient) -> BlobSource:
        if self.layer.local:
            return self.store.blob_source(self.layer.digest)
        return ResilientSource(
            client.blob(self.spec.repository, self.layer.digest, self.layer.size),
            timeout=self.spec.read_timeout,
            min_request=self.spec.min_request,
            stats=self.stats,
            name=self.label,
        )

    def prefetch(self) -> None:
        """``[0, .prefetch.landmark)`` in one request, then (optionally) everything else."""
        reader = self.reader
        if not self.layer.local:  # a HEAD: the first read finds the connection open
            with contextlib.suppress(EstargzError, OSError):  # (only a warm-up)
                self.client.blob_size(self.spec.repository, self.layer.digest)
        try:
            landmark = reader.prefetch_size
            if landmark:
                head = [(n, c) for n, c in self.chunks if c.offset < landmark]
                reader.fetch_range(head)
                log.info("%s: prefetched %d bytes (landmark)", self.label, landmark)
            if self.spec.background_fetch and not self.layer.local:
                time.sleep(_BACKGROUND_DELAY)  # the workload's first reads go first
                self._background(reader)
        except Exception as exc:  # an optimisation only: reads still fetch what they need
            log.warning("%s: prefetch stopped: %s", self.label, exc)

    def _background(self, reader: BlobReader) -> None:
        group: list[tuple[str, Chunk]] = []
        start = 0
        for name, chunk in self.chunks:
            if group and (chunk.member_end - start > _BACKGROUND_RANGE
                          or len(group) >= _BACKGROUND_CHUNKS):
                self._fetch_group(reader, group)
                group = []
            if not group:
                start = chunk.offset
            group.append((name, chunk))
        if group:
            self._fetch_group(reader, group)
        log.info("%s: background fetch complete", self.label)

    def _fetch_group(self, reader: BlobReader, group: list[tuple[str, Chunk]]) -> None:
        while self._workload_busy():  # the workload first
            time.sleep(0.05)
        try:
            reader.fetch_range(group)
        except Exception as exc:
            log.warning("%s: background fetch of %d chunks failed (%s); they will be fetched "
                        "when read", self.label, len(group), exc)

    def _workload_busy(self) -> bool:
        """Reads in flight, or attributes given out faster than a reading workload does, since
        the last look."""
        ops = self.ops
        if ops is None:
            return False
        now, answered = time.monotonic(), ops.answered
        rate = (answered - self._answered) / max(now - self._looked, 1e-3)
        self._answered, self._looked = answered, now
        return bool(ops.active_reads) or rate > _WALK_RATE

    def stats_loop(self) -> None:
        """Rewrite ``stats-N.json`` whenever the numbers change (checked a few times a second).

        Cached chunks are counted from the cache's index, and only after the cache changed:
        asking the reader would read and hash every cached chunk, and counting on every pass
        kept an idle mount busy.
        """
        path = self.spec.dir / f"stats-{self.index}.json"
        last: dict[str, object] = {}
        counted, cached, when = -1, 0, 0.0
        while True:
            time.sleep(_STATS_INTERVAL)  # (first: the mount's first reads go first)
            if self.cache.generation != counted and time.monotonic() - when >= _RECOUNT:
                counted, when = self.cache.generation, time.monotonic()
                cached = self.cache.count()
            now: dict[str, object] = {
                "digest": self.layer.digest,
                "size": self.layer.size,
                "local": self.layer.local,
                "requests": self.stats.requests,
                "fetched_bytes": self.stats.fetched_bytes,
                "retries": self.stats.retries,
                "chunks": len(self.chunks),
                "cached_chunks": cached,
                "getattrs": self.ops.getattrs if self.ops is not None else 0,
                "listing_pages": self.ops.listing_pages if self.ops is not None else 0,
            }
            if now != last:
                write_json(path, now)
                last = now

    def start(self, ops: LayerOperations) -> None:
        """Serve through ``ops``; prefetch and statistics run from here on."""
        self.ops = ops
        ops.attach(self.fs)
        threading.Thread(target=self.prefetch, name="prefetch", daemon=True).start()
        threading.Thread(target=self.stats_loop, name="stats", daemon=True).start()


def registry_client(spec: MountSpec) -> RegistryClient:
    """A client for the mount's registry, with the credentials rpull was given. It does not
    retry on its own: :class:`ResilientSource` retries within the mount's read timeout, which
    retries underneath would stretch several times over."""
    return RegistryClient.for_user(spec.registry, plain_http=spec.plain_http,
                                   skip_verify=spec.skip_verify, user=spec.user,
                                   refresh=spec.refresh,
                                   tls_files=(spec.tlscacert, spec.tlscert, spec.tlskey),
                                   retries=0)


def run_layer(spec: MountSpec, index: int, feed: int | None = None,
              on_mounted: Callable[[LayerServer], None] | None = None,
              on_failed: Callable[[str], None] | None = None) -> None:
    """Mount layer ``index`` and serve it until unmounted. The layer and its TOC come from
    ``feed`` (a pipe ``rpull`` writes with :func:`send_layer`) or, without one, from the spec
    and the store. ``on_mounted`` is called once the mount answers; ``on_failed`` with the
    reason if the layer cannot be served (the process then exits)."""
    mountpoint = spec.layers[index].mountpoint
    label = f"layer {index} {spec.layers[index].digest[:19]}"
    ops = LayerOperations(label)
    built: list[LayerServer] = []
    failure: list[BaseException] = []

    def build() -> None:
        gc.disable()  # thousands of new objects: no collections until the index is frozen
        try:
            if feed is None:
                built.append(LayerServer(spec, index, spec.layers[index]))
            else:
                store = ImageStore(spec.store_root, create=False)
                client = registry_client(spec)
                layer, toc_json = receive_layer(feed, MAX_TOC_SIZE)
                os.close(feed)
                built.append(LayerServer(spec, index, layer, toc_json, store=store,
                                         client=client))
        except BaseException as exc:
            failure.append(exc)
        finally:
            gc.enable()

    builder = threading.Thread(target=build, name="index")
    builder.start()

    def mounted() -> None:  # on the FUSE thread answering the kernel's INIT
        builder.join()
        if failure:
            why = f"{type(failure[0]).__name__}: {failure[0]}"
            log.error("%s: %s", label, why)
            if on_failed is not None:
                on_failed(why)
            os._exit(1)  # the daemon sees the exit and removes the mount
        ops.attach(built[0].fs)
        if on_mounted is not None:  # first: the daemon stacks the overlay meanwhile
            on_mounted(built[0])
        built[0].start(ops)
        log.info("%s: serving at %s", built[0].label, mountpoint)

    ops.on_mounted = mounted
    serve(ops, mountpoint, f"estargz:{spec.layers[index].digest[7:19]}")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s layer-{args[1]} %(levelname)s %(message)s")
    spec = MountSpec.load(args[0])
    run_layer(spec, int(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
