"""The mount daemon of one image: ``python -m estargz.lazy.daemon SPEC``.

It outlives the CLI that started it. It starts one layer server per layer, waits until every
layer is mounted, stacks them with a kernel overlayfs at the image's mountpoint, and reports
``ready`` in ``status.json``. On SIGTERM it unmounts the overlay, stops the layer servers (each
unmounts its FUSE filesystem) and reports ``stopped``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from estargz.lazy.spec import MountSpec, write_json

__all__ = ["main", "is_mounted"]

log = logging.getLogger("estargz.lazy")
_MOUNT_TIMEOUT = 60.0


def is_mounted(path: str | os.PathLike[str]) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def _status(spec: MountSpec, state: str, **extra: object) -> None:
    write_json(spec.dir / "status.json", {"state": state, "pid": os.getpid(), **extra})


def _umount(path: str) -> None:
    if not is_mounted(path):
        return
    proc = subprocess.run(["umount", path], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        log.warning("umount %s: %s; detaching lazily", path, proc.stderr.strip())
        subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def _overlay(spec: MountSpec) -> None:
    lowers = [layer.mountpoint for layer in reversed(spec.layers)]  # top layer first
    target = spec.mountpoint
    Path(target).mkdir(parents=True, exist_ok=True)
    if spec.upper:
        upper, work = spec.dir / "upper", spec.dir / "work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
        cmd = ["mount", "-t", "overlay", "overlay", "-o", options, target]
    elif len(lowers) == 1:
        cmd = ["mount", "--bind", "-o", "ro", lowers[0], target]
    else:
        cmd = ["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={':'.join(lowers)}",
               target]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")


class Daemon:
    def __init__(self, spec: MountSpec) -> None:
        self.spec = spec
        self.servers: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def start_servers(self) -> None:
        log_file = open(self.spec.dir / "daemon.log", "ab")  # noqa: SIM115 - children share it
        for i, layer in enumerate(self.spec.layers):
            Path(layer.mountpoint).mkdir(parents=True, exist_ok=True)
            self.servers.append(subprocess.Popen(
                [sys.executable, "-m", "estargz.lazy.server", str(self.spec.dir / "spec.json"),
                 str(i)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            ))
        deadline = time.monotonic() + _MOUNT_TIMEOUT
        pending = list(enumerate(self.spec.layers))
        while pending:
            for i, proc in enumerate(self.servers):
                if proc.poll() is not None:
                    raise RuntimeError(f"layer server {i} exited with {proc.returncode} "
                                       f"(see {self.spec.dir / 'daemon.log'})")
            pending = [(i, layer) for i, layer in pending if not is_mounted(layer.mountpoint)]
            if time.monotonic() > deadline:
                raise RuntimeError(f"layers {[i for i, _ in pending]} not mounted after "
                                   f"{_MOUNT_TIMEOUT:.0f}s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        _umount(self.spec.mountpoint)
        for proc in self.servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, layer in zip(self.servers, self.spec.layers, strict=False):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _umount(layer.mountpoint)

    def run(self) -> int:
        (self.spec.dir / "daemon.pid").write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, lambda *_: self._terminate())
        signal.signal(signal.SIGINT, lambda *_: self._terminate())
        try:
            _status(self.spec, "starting")
            self.start_servers()
            _overlay(self.spec)
            _status(self.spec, "ready", mountpoint=self.spec.mountpoint)
            log.info("%s mounted at %s", self.spec.image, self.spec.mountpoint)
            while not self.stopping:
                for i, proc in enumerate(self.servers):
                    if proc.poll() is not None and not self.stopping:
                        log.error("layer server %d exited with %s", i, proc.returncode)
                        raise RuntimeError(f"layer server {i} exited")
                time.sleep(0.5)
        except Exception as exc:
            log.error("mount failed: %s", exc)
            self.stop()
            _status(self.spec, "failed", error=str(exc))
            return 1
        finally:
            with contextlib.suppress(FileNotFoundError):
                (self.spec.dir / "daemon.pid").unlink()
        _status(self.spec, "stopped")
        return 0

    def _terminate(self) -> None:
        log.info("terminating: unmounting %s", self.spec.mountpoint)
        self.stop()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s daemon %(levelname)s %(message)s")
    spec = MountSpec.load(args[0])
    return Daemon(spec).run()


if __name__ == "__main__":
    sys.exit(main())
