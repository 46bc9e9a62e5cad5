"""The mount daemon of one image: ``python -m estargz.lazy.daemon SPEC``.

It outlives the CLI that started it. It starts one layer server per layer, waits until every
layer is mounted, stacks them with a kernel overlayfs at the image's mountpoint, and reports
``ready`` in ``status.json`` (and on a pipe to ``rpull``, which waits on it). On SIGTERM it
unmounts the overlay, stops the layer servers (each unmounts its FUSE filesystem) and reports
``stopped``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from setproctitle import setproctitle

from estargz.lazy.spec import MountSpec, write_json

__all__ = ["Daemon", "detach", "is_mounted", "main", "spawn"]

log = logging.getLogger("estargz.lazy")
_MOUNT_TIMEOUT = 60.0


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in paths as octal escapes."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def is_mounted(path: str | os.PathLike[str]) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(_unescape(line.split()[1]) == target for line in f)


def _status(spec: MountSpec, state: str, **extra: object) -> None:
    write_json(spec.dir / "status.json", {"state": state, "pid": os.getpid(), **extra})


def _umount(path: str) -> None:
    if not is_mounted(path):
        return
    proc = subprocess.run(["umount", path], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        log.warning("umount %s: %s; detaching lazily", path, proc.stderr.strip())
        subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def _escape(path: str | Path) -> str:
    """overlayfs splits its options on ',' and ':'; a backslash keeps them in a path."""
    return str(path).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


_MS_RDONLY, _MS_REMOUNT, _MS_BIND = 1, 32, 4096
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | Path, target: str, fstype: str | None, flags: int,
           options: str | None = None) -> None:
    """mount(2) itself: the mount(8) program would cost a fork and an exec per mount."""
    result = _libc.mount(os.fsencode(source), os.fsencode(target),
                         None if fstype is None else fstype.encode(), ctypes.c_ulong(flags),
                         None if options is None else os.fsencode(options))
    if result != 0:
        err = ctypes.get_errno()
        what = f"mount {fstype or 'bind'} {source} on {target}" + (f" ({options})" if options
                                                                  else "")
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _overlay(spec: MountSpec) -> None:
    lowers = [_escape(layer.mountpoint) for layer in reversed(spec.layers)]  # top layer first
    target = spec.mountpoint
    Path(target).mkdir(parents=True, exist_ok=True)
    if spec.upper:
        upper, work = spec.dir / "upper", spec.dir / "work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        _mount("overlay", target, "overlay", 0, f"lowerdir={':'.join(lowers)},"
               f"upperdir={_escape(upper)},workdir={_escape(work)}")
    elif len(lowers) == 1:
        _mount(spec.layers[0].mountpoint, target, None, _MS_BIND)
        try:
            _mount("none", target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)
        except OSError:
            _umount(target)
            raise
    else:
        _mount("overlay", target, "overlay", _MS_RDONLY, f"lowerdir={':'.join(lowers)}")


class _Child:
    """A forked layer server."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.returncode = -9
                return
            time.sleep(0.02)


def _serve_layer(spec: MountSpec, index: int, feed: int | None, mounted_fd: int) -> int:
    """Body of a forked layer server: never returns into the daemon's code.

    It writes one line to ``mounted_fd`` once the kernel has initialised its FUSE session:
    ``INDEX ok ENTRIES PREFETCH`` (TOC entries, bytes of the landmark range), or
    ``INDEX failed REASON``.
    """
    from estargz.lazy.server import LayerServer, run_layer

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    setproctitle(f"estargz layer {spec.layers[index].digest[7:19]} {spec.layers[index].mountpoint}")

    def say(line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(mounted_fd, line.replace("\n", " ").encode(errors="replace")[:4000] + b"\n")
            os.close(mounted_fd)

    def mounted(server: LayerServer) -> None:
        say(f"{index} ok {len(server.reader.entries)} {server.reader.prefetch_size}")

    try:
        run_layer(spec, index, feed, on_mounted=mounted,
                  on_failed=lambda why: say(f"{index} failed {why}"))
        return 0
    except BaseException as exc:
        log.error("layer %d: %s", index, exc)
        say(f"{index} failed {type(exc).__name__}: {exc}")
        return 1


class Daemon:
    """``feeds``: per layer, the pipe on which ``rpull`` sends the layer's TOC (None: the layer
    servers read the TOCs from the store). ``ready_fd``: where to say ``ready`` or
    ``failed: why`` once, for the waiting rpull; ``named_fd``: where rpull then says that it
    named the image (end of file instead: rpull died before, and the mount is removed)."""

    def __init__(self, spec: MountSpec, feeds: list[int] | None = None,
                 ready_fd: int | None = None, named_fd: int | None = None) -> None:
        self.spec = spec
        self.feeds = feeds
        self.ready_fd = ready_fd
        self.named_fd = named_fd
        self.servers: list[_Child] = []
        self.layer_info: dict[int, tuple[int, int]] = {}
        """Per layer, once mounted: TOC entries and prefetch bytes."""
        self.stopping = False

    def _close_ready(self) -> None:
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.ready_fd)
            self.ready_fd = None

    def _tell(self, message: str) -> bool:
        """Say ``message`` to the rpull waiting for the mount; False if it is gone."""
        heard = True
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, message.encode() + b"\n")
            except OSError:  # (EPIPE: rpull was killed while it waited)
                heard = False
            self._close_ready()
        return heard

    def _named(self) -> bool:
        """Whether rpull named the image after hearing ``ready`` (False: it died first)."""
        if self.named_fd is None:
            return True
        try:
            return os.read(self.named_fd, 16).startswith(b"named")
        except OSError:
            return False
        finally:
            os.close(self.named_fd)
            self.named_fd = None

    def _abandon(self) -> None:
        """Remove every trace of a mount whose rpull died before it was ready: no image
        names it and nobody else knows of it."""
        log.info("the rpull of %s went away: removing the mount", self.spec.image)
        for server in self.servers:  # (a server still mounting when stop() ran)
            with contextlib.suppress(Exception):
                server.wait(timeout=10)
        with open("/proc/self/mounts") as mounts:
            below = [line.split()[1] for line in mounts
                     if line.split()[1].startswith(f"{self.spec.dir}/")]
        for path in sorted(below, reverse=True):
            _umount(path)
        root = self.spec.dir.parent.parent.parent
        if Path(self.spec.mountpoint) == root / "rootfs" / self.spec.id:  # made by rpull
            with contextlib.suppress(OSError):
                os.rmdir(self.spec.mountpoint)
        shutil.rmtree(self.spec.dir, ignore_errors=True)

    def start_servers(self) -> None:
        """Fork one server per layer (before this process starts any thread), wait until
        every one reports its FUSE session up."""
        readable, writable = os.pipe()
        try:
            for i, layer in enumerate(self.spec.layers):
                Path(layer.mountpoint).mkdir(parents=True, exist_ok=True)
                pid = os.fork()
                if pid == 0:
                    os.close(readable)
                    self._close_ready()
                    feed = self.feeds[i] if self.feeds else None
                    for other in self.feeds or []:
                        if other != feed:
                            os.close(other)
                    os._exit(_serve_layer(self.spec, i, feed, writable))
                self.servers.append(_Child(pid))
            for feed in self.feeds or []:
                os.close(feed)  # the servers have them
            self.feeds = None
            os.close(writable)
            writable = -1
            self._wait_mounted(readable)
        finally:
            os.close(readable)
            if writable >= 0:
                os.close(writable)

    def _wait_mounted(self, readable: int) -> None:
        deadline = time.monotonic() + _MOUNT_TIMEOUT
        pending = set(range(len(self.spec.layers)))
        buf = b""
        while pending:
            waiting = select.select([readable], [], [], 0.05)[0]
            data = os.read(readable, 8192) if waiting else b""
            if data:
                *lines, buf = (buf + data).split(b"\n")
                for line in lines:
                    number, state, rest = line.decode(errors="replace").split(" ", 2)
                    if state != "ok":
                        raise RuntimeError(f"layer {number}: {rest}")
                    entries, prefetch = rest.split()
                    self.layer_info[int(number)] = (int(entries), int(prefetch))
                    pending.discard(int(number))
                continue
            if waiting:  # end of file: every server has reported or exited
                time.sleep(0.05)
            for i, proc in enumerate(self.servers):
                if proc.poll() is not None:
                    raise RuntimeError(f"layer server {i} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"layers {sorted(pending)} not mounted after "
                                   f"{_MOUNT_TIMEOUT:.0f}s")

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        _umount(self.spec.mountpoint)
        for proc in self.servers:
            proc.terminate()
        for proc, layer in zip(self.servers, self.spec.layers, strict=False):
            proc.wait(timeout=10)
            _umount(layer.mountpoint)

    def run(self) -> int:
        setproctitle(f"estargz mount {self.spec.image} {self.spec.mountpoint}")
        (self.spec.dir / "daemon.pid").write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, lambda *_: self._terminate())
        signal.signal(signal.SIGINT, lambda *_: self._terminate())
        try:
            _status(self.spec, "starting")
            self.start_servers()
            _overlay(self.spec)
            _status(self.spec, "ready", mountpoint=self.spec.mountpoint)
            info = [self.layer_info[i] for i in range(len(self.spec.layers))]
            if not self._tell("ready " + " ".join(f"{n}/{p}" for n, p in info)) or \
                    not self._named():
                raise _Abandoned("the rpull that asked for this mount went away")
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
            if isinstance(exc, _Abandoned) or not self._tell(f"failed: {exc}"):
                self._abandon()
            return 1
        finally:
            with contextlib.suppress(FileNotFoundError):
                (self.spec.dir / "daemon.pid").unlink()
        _status(self.spec, "stopped")
        return 0

    def _terminate(self) -> None:
        log.info("terminating: unmounting %s", self.spec.mountpoint)
        self.stop()


class _Abandoned(RuntimeError):
    """Nobody waits for the mount any more."""


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s [%(process)d] %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def detach(log_path: Path, *, reap: bool = True) -> int | None:
    """Double-fork into a new session with stdin on /dev/null and stdout and stderr appended
    to ``log_path``. None in the detached process (which must end with ``os._exit``); in the
    caller, the pid of the short-lived intermediate process, already reaped unless ``reap`` is
    False (then the caller must ``os.waitpid`` it, at leisure)."""
    pid = os.fork()
    if pid:
        if reap:
            os.waitpid(pid, 0)
        return pid
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        # closefd=False: whoever replaces these streams later must not close 1 and 2 with them
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    except BaseException:
        os._exit(1)
    return None


def spawn(spec: MountSpec) -> tuple[int, int, list[int]]:
    """Start the daemon of ``spec`` detached from the caller, before the layers' TOCs are read:
    its layer servers mount meanwhile. Returns the read end of a pipe on which the daemon says
    ``ready`` or ``failed: why`` (EOF: it died); the write end of one on which the caller says
    ``named`` once the image has its name (closing it unsaid removes the mount); and per layer
    the pipe to hand the layer's TOC to its server with :func:`send_layer` (closing one unsent
    makes that server give up).

    Forking instead of starting a new interpreter saves the imports: the mount answers sooner.
    """
    ready_r, ready_w = os.pipe()
    named_r, named_w = os.pipe()
    feeds = [os.pipe() for _ in spec.layers]
    intermediate = detach(spec.dir / "daemon.log", reap=False)
    if intermediate is not None:
        os.close(ready_w)
        os.close(named_r)
        for r, _ in feeds:
            os.close(r)
        threading.Thread(target=os.waitpid, args=(intermediate, 0), daemon=True).start()
        return ready_r, named_w, [w for _, w in feeds]
    code = 1
    try:
        os.close(ready_r)
        os.close(named_w)
        for _, w in feeds:
            os.close(w)
        gc.enable()  # (a service worker that forked this runs without the collector)
        _logging()
        code = Daemon(spec, [r for r, _ in feeds], ready_fd=ready_w, named_fd=named_r).run()
    finally:
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    _logging()
    spec = MountSpec.load(args[0])
    return Daemon(spec).run()


if __name__ == "__main__":
    sys.exit(main())
