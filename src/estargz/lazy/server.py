"""One layer's FUSE server: ``python -m estargz.lazy.server SPEC LAYER_INDEX``.

Started by the mount daemon, one process per layer (libfuse serves one session per process).
Before serving it checks the TOC against the manifest's digest again; then it prefetches the
landmark range in one request, fetches the rest in the background at low priority (paused while
the workload reads), and keeps its statistics in ``stats-N.json`` for ``estargz i mounts``.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from estargz.format import BlobReader, BlobSource, Chunk
from estargz.format.footer import Footer
from estargz.format.reader import UnverifiedBlob
from estargz.lazy.cache import DiskChunkCache
from estargz.lazy.fuse import LayerOperations, serve
from estargz.lazy.layerfs import LayerFS
from estargz.lazy.remote import FetchStats, ResilientSource
from estargz.lazy.spec import LayerSpec, MountSpec, write_json
from estargz.registry import Credentials, RegistryClient
from estargz.store import ImageStore

__all__ = ["LayerServer", "main"]

log = logging.getLogger("estargz.lazy")
_BACKGROUND_RANGE = 4 << 20
_STATS_INTERVAL = 0.2
_BACKGROUND_DELAY = 1.0


class LayerServer:
    """One layer's FUSE server. The TOC index is built on a thread while the kernel sets the
    mount up; the kernel's INIT is answered only once it is ready, and until then the kernel
    holds every request back: nothing is served from a TOC that was not checked."""

    def __init__(self, spec: MountSpec, index: int, blob: UnverifiedBlob | None = None) -> None:
        """``blob``: the TOC already parsed by ``rpull`` (when forked from it), else re-read."""
        self.spec = spec
        self.index = index
        self.layer: LayerSpec = spec.layers[index]
        self.label = f"layer {index} {self.layer.digest[:19]}"
        self.store = ImageStore(spec.store_root, create=False)
        self.stats = FetchStats()
        self.source = self._source()
        if blob is None:
            toc_json = self.store.get_meta(self.layer.digest, "toc.json")
            if toc_json is None:
                raise RuntimeError(f"{self.label}: the TOC is not in the store")
            footer = Footer(self.layer.footer_kind, self.layer.footer_size,
                            self.layer.toc_offset)
            blob = UnverifiedBlob(self.source, footer, toc_json, self.layer.data_end)
        blob.source = self.source  # this process's own connection
        self.blob = blob
        self.cache = DiskChunkCache(Path(spec.store_root) / "cache", self.layer.digest[7:],
                                    spec.cache_bytes)
        self.ops = LayerOperations(self.label)
        self.reader: BlobReader | None = None
        self.chunks: list[tuple[str, Chunk]] = []

    def build(self) -> BlobReader:
        """Check the TOC against the manifest's digest and index it (the slow part of a start)."""
        reader = self.blob.verify_toc(self.layer.toc_digest, chunk_cache=self.cache)
        forget = self.source.forget if isinstance(self.source, ResilientSource) else None
        self.ops.attach(LayerFS(reader, on_bad_data=forget, bottom=self.index == 0))
        self.chunks = reader.all_chunks()
        self.reader = reader
        gc.freeze()  # the index never changes: the collector need not walk it again
        return reader

    def _source(self) -> BlobSource:
        if self.layer.local:
            return self.store.blob_source(self.layer.digest)
        credentials = Credentials.from_user(self.spec.user) if self.spec.user else None
        client = RegistryClient(self.spec.registry, plain_http=self.spec.plain_http or None,
                                insecure_skip_verify=self.spec.skip_verify,
                                credentials=credentials)
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
        if reader is None:
            return
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
            if group and chunk.member_end - start > _BACKGROUND_RANGE:
                self._fetch_group(reader, group)
                group = []
            if not group:
                start = chunk.offset
            group.append((name, chunk))
        if group:
            self._fetch_group(reader, group)
        log.info("%s: background fetch complete", self.label)

    def _fetch_group(self, reader: BlobReader, group: list[tuple[str, Chunk]]) -> None:
        while self.ops.active_reads:  # on-demand reads first
            time.sleep(0.01)
        try:
            reader.fetch_range(group)
        except Exception as exc:
            log.warning("%s: background fetch of %d chunks failed (%s); they will be fetched "
                        "when read", self.label, len(group), exc)

    def stats_loop(self) -> None:
        """Rewrite ``stats-N.json`` whenever the numbers change (checked a few times a second).

        Cached chunks are counted from the cache's index, and only after the cache changed:
        asking the reader would read and hash every cached chunk, and counting on every pass
        kept an idle mount busy.
        """
        path = self.spec.dir / f"stats-{self.index}.json"
        last: dict[str, object] = {}
        counted, cached = -1, 0
        while True:
            if self.cache.generation != counted:
                counted = self.cache.generation
                cached = sum(1 for _, c in self.chunks if c.key in self.cache)
            now: dict[str, object] = {
                "digest": self.layer.digest,
                "size": self.layer.size,
                "local": self.layer.local,
                "requests": self.stats.requests,
                "fetched_bytes": self.stats.fetched_bytes,
                "retries": self.stats.retries,
                "chunks": len(self.chunks),
                "cached_chunks": cached,
            }
            if now != last:
                write_json(path, now)
                last = now
            time.sleep(_STATS_INTERVAL)

    def run(self, on_mounted: Callable[[], None] | None = None,
            on_failed: Callable[[str], None] | None = None) -> None:
        """Serve until unmounted; ``on_mounted`` is called once the mount answers, ``on_failed``
        with the reason if the TOC cannot be indexed (the process then exits)."""
        failure: list[BaseException] = []

        def build() -> None:
            try:
                self.build()
            except BaseException as exc:
                failure.append(exc)

        builder = threading.Thread(target=build, name="index")
        builder.start()

        def mounted() -> None:  # on the FUSE thread answering the kernel's INIT
            builder.join()
            if failure:
                why = f"{type(failure[0]).__name__}: {failure[0]}"
                log.error("%s: %s", self.label, why)
                if on_failed is not None:
                    on_failed(why)
                os._exit(1)  # the daemon sees the exit and removes the mount
            threading.Thread(target=self.prefetch, name="prefetch", daemon=True).start()
            threading.Thread(target=self.stats_loop, name="stats", daemon=True).start()
            if on_mounted is not None:
                on_mounted()

        self.ops.on_mounted = mounted
        serve(self.ops, self.layer.mountpoint, f"estargz:{self.layer.digest[7:19]}")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s layer-{args[1]} %(levelname)s %(message)s")
    spec = MountSpec.load(args[0])
    server = LayerServer(spec, int(args[1]))
    log.info("%s: serving at %s", server.label, server.layer.mountpoint)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
