"""Several processes share one store, and a process killed at any moment leaves it consistent."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing.sharedctypes import Synchronized as ValueType
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

from estargz.store import ImageStore
from storekit import assert_complete, make_image

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": f"{HERE.parent / 'src'}:{HERE}"}


def _name_many(root: str, worker: int, count: int) -> None:
    store = ImageStore(root)
    image = make_image(store, "shared")  # every worker commits the same blobs at once
    for i in range(count):
        store.set_images({f"127.0.0.1:5000/w{worker}:n{i}": image})


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    root = str(tmp_path / "store")
    workers = [ctx.Process(target=_name_many, args=(root, w, 25)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    store = ImageStore(root, create=False)
    names = [r.name for r in store.list_images()]
    assert names == sorted(f"127.0.0.1:5000/w{w}:n{i}" for w in range(4) for i in range(25))
    assert_complete(store, store.get_image("127.0.0.1:5000/w3:n24"))
    assert list((store.root / "ingest").iterdir()) == []


def _write_while_collecting(root: str, worker: int, count: int) -> None:
    store = ImageStore(root)
    for i in range(count):
        with store.lease():
            image = make_image(store, f"w{worker}-{i}", layers=1)
            store.set_images({f"w{worker}:n{i}": image})
        if i % 3 == 2:
            store.remove_image(f"w{worker}:n{i - 1}")


def _collect(root: str, stop: EventType, runs: ValueType[int]) -> None:
    store = ImageStore(root)
    while not stop.is_set():
        store.gc()
        runs.value += 1


def test_gc_racing_writers_never_breaks_an_image(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    root = str(tmp_path / "store")
    ImageStore(root)
    stop, runs = ctx.Event(), ctx.Value("i", 0)
    collector = ctx.Process(target=_collect, args=(root, stop, runs))
    collector.start()
    writers = [ctx.Process(target=_write_while_collecting, args=(root, w, 15)) for w in range(2)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(120)
    stop.set()
    collector.join(120)
    assert [p.exitcode for p in [*writers, collector]] == [0, 0, 0]
    assert runs.value >= 5  # gc() really ran while the writers worked
    store = ImageStore(root)
    records = store.list_images()
    assert len(records) == 2 * 10
    for record in records:
        assert_complete(store, record.descriptor)
    store.gc()
    kept = {d for r in records for d in assert_complete(store, r.descriptor)}
    on_disk = {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").iterdir()}
    assert on_disk == kept


_CHURN = textwrap.dedent("""
    import sys
    from estargz.store import ImageStore
    from storekit import make_image
    store = ImageStore(sys.argv[1])
    i = int(sys.argv[2])
    while True:
        i += 1
        mark = {"test.iteration": str(i)}
        with store.lease():
            image = make_image(store, f"i{i}", layers=1 + i % 3).with_annotations(**mark)
            toc = make_image(store, f"t{i}", layers=1).with_annotations(**mark)
            store.put_meta(toc.digest, "toc.json", str(i).encode() * 1000)
            slot = i % 4
            store.set_images({f"127.0.0.1:5000/img{slot}:v": image,
                              f"127.0.0.1:5000/img{slot}:v-esgztoc": toc})
        if i % 5 == 0:
            store.remove_image(f"127.0.0.1:5000/img{(slot + 1) % 4}:v")
            store.gc(ingest_max_age=0)
        print(i, flush=True)
""")


def _check_consistent(root: Path) -> None:
    json.loads((root / "index.json").read_bytes())  # never a torn write
    store = ImageStore(root, create=False)
    records = {r.name: r.descriptor for r in store.list_images()}
    for name, desc in records.items():
        assert_complete(store, desc)
        if name.endswith(":v-esgztoc"):
            pair = records.get(name.removesuffix("-esgztoc"))
            # named in one write, so both carry the same iteration, unless the image was
            # removed on its own later
            if pair is not None:
                assert pair.annotations["test.iteration"] == desc.annotations["test.iteration"]
            assert store.get_meta(desc.digest, "toc.json") is not None
    leftovers = [p for p in root.iterdir()
                 if p.name not in {"oci-layout", "index.json", "blobs", "ingest", "meta",
                                   "lock", "gc.lock"}]
    assert leftovers == []


def test_sigkill_at_random_moments_leaves_the_store_consistent(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ImageStore(root)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    iterations = 0
    for round_ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", _CHURN, str(root), str(round_ * 10**6)],
                                stdout=subprocess.PIPE, text=True, env=ENV)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # let it get going, then kill it at some moment
        assert first.strip(), f"the writer died on its own (seed {seed})"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read().split()
        proc.wait()
        iterations += 1 + len(rest)
        try:
            _check_consistent(root)
        except AssertionError as exc:
            raise AssertionError(f"round {round_}, seed {seed}: {exc}") from exc
    store = ImageStore(root)
    store.gc(ingest_max_age=0)
    assert list((root / "ingest").iterdir()) == []
    kept = {d for r in store.list_images() for d in assert_complete(store, r.descriptor)}
    assert {f"sha256:{p.name}" for p in (root / "blobs" / "sha256").iterdir()} == kept
    assert iterations >= 20, iterations  # the writer did get work done between the kills
