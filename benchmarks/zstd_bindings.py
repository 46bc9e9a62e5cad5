"""Which zstd binding compresses zstd:chunked layers: the measurement behind the choice.

    python3 benchmarks/zstd_bindings.py [--tar benchmarks/.cache/rootfs.tar] [--sample-mb 48]

Each binding compresses the tar the way the writer does (one frame per tar member, headers
and payload together, payloads cut at 4 MiB), at levels 3 and 19, on one thread and on a pool
of two (a binding that holds the GIL gains nothing from the pool), then decompresses every
frame. Level 19 runs on the first ``--sample-mb`` MB only, to keep the run short. Checks
along the way: every binding's frames decompress with the others' decoders; whether a
one-shot decompress skips a skippable frame (the frame zstd:chunked keeps its TOC and footer
in) is printed.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

HERE = pathlib.Path(__file__).resolve().parent
_CUT = 4 << 20

Codec = tuple[Callable[[bytes, int], bytes], Callable[[bytes], bytes], str]


def _codecs() -> dict[str, Codec]:
    out: dict[str, Codec] = {}
    try:
        import zstandard
    except ImportError:
        pass
    else:
        def zs_c(data: bytes, level: int) -> bytes:
            return zstandard.ZstdCompressor(level=level).compress(data)

        def zs_d(data: bytes) -> bytes:
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)

        out["zstandard"] = (zs_c, zs_d, zstandard.__version__)
    try:
        import pyzstd
    except ImportError:
        pass
    else:
        out["pyzstd"] = (pyzstd.compress, pyzstd.decompress, pyzstd.__version__)
    try:
        from backports import zstd
    except ImportError:
        pass
    else:
        from importlib.metadata import version

        def bz_c(data: bytes, level: int) -> bytes:
            return zstd.compress(data, level)

        out["backports.zstd"] = (bz_c, zstd.decompress, version("backports.zstd"))
    return out


def frames_of(tar: pathlib.Path, limit: int) -> list[bytes]:
    """The tar cut as the writer cuts it: one piece per member (header + payload), payloads
    of more than 4 MiB split."""
    data = tar.read_bytes()[:limit]
    pieces: list[bytes] = []
    with tarfile.open(tar) as tf:
        start = 0
        for info in tf:
            end = info.offset_data + (-(-info.size // 512) * 512)
            if end > len(data):
                break
            head = data[start:info.offset_data]
            body = data[info.offset_data:end]
            pieces.append(head + body[:_CUT])
            pieces.extend(body[i:i + _CUT] for i in range(_CUT, len(body), _CUT))
            start = end
    return [p for p in pieces if p]


def _compress_all(compress: Callable[[bytes, int], bytes], frames: list[bytes], level: int,
                  pool: ThreadPoolExecutor | None) -> list[bytes]:
    if pool is None:
        return [compress(f, level) for f in frames]
    return list(pool.map(compress, frames, [level] * len(frames)))


def _decompress_all(decompress: Callable[[bytes], bytes], frames: list[bytes]) -> list[bytes]:
    return [decompress(f) for f in frames]


def _timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tar", type=pathlib.Path, default=HERE / ".cache" / "rootfs.tar")
    parser.add_argument("--sample-mb", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    codecs = _codecs()
    full = frames_of(args.tar, 1 << 40)
    sample = frames_of(args.tar, args.sample_mb << 20)
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"skip"
    print(f"{args.tar}: {sum(map(len, full)) / 1e6:.0f} MB in {len(full)} frames")
    print(f"{'binding':16} {'level':>5} {'1 thread MB/s':>14} {'2 threads MB/s':>15} "
          f"{'ratio':>6} {'decompress MB/s':>16}")
    for level, frames in ((3, full), (19, sample)):
        size = sum(map(len, frames))
        for name, (compress, decompress, _version) in codecs.items():
            out = [compress(f, level) for f in frames]
            times = 1 if level > 9 else args.repeat
            one = _timed(functools.partial(_compress_all, compress, frames, level, None), times)
            with ThreadPoolExecutor(2) as pool:
                two = _timed(functools.partial(_compress_all, compress, frames, level, pool),
                             times)
            dec = _timed(functools.partial(_decompress_all, decompress, out), args.repeat)
            for other_name, (_c, other_d, _v) in codecs.items():
                assert other_d(out[0]) == frames[0], (name, other_name)
            try:
                skips = decompress(skippable + out[0]) == frames[0]
            except Exception:
                skips = False
            ratio = sum(map(len, out)) / size
            print(f"{name:16} {level:5} {size / one / 1e6:14.1f} {size / two / 1e6:15.1f} "
                  f"{ratio:6.3f} {size / dec / 1e6:16.0f}  skippable frame "
                  f"{'skipped' if skips else 'refused'}")
    for name, (_c, _d, version) in codecs.items():
        print(f"{name} {version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
