"""The store's resident service: ``estargz service start | stop | status``.

Like the stargz snapshotter, which is running before ``ctr-remote i rpull`` asks it anything,
the service keeps a warm interpreter next to the store: libraries imported, TLS trust loaded.
Each command handed over by the thin client (:mod:`estargz.cli.client`) runs in a process
forked from it, with the client's stdin, stdout, stderr, working directory and environment, so
it behaves exactly as it would have in the client's own process, minus the start-up time.
Only the same user may connect (checked with SO_PEERCRED), and the socket is mode 0600.

Mounts are not the service's: each still has its own daemon, so stopping the service leaves
them serving.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from setproctitle import setproctitle

from estargz.cli.client import (
    at_short_path,
    connect,
    installation,
    recv_message,
    send_message,
)
from estargz.errors import EstargzError
from estargz.lazy.daemon import detach
from estargz.paths import default_store_root, service_socket

__all__ = ["Service", "ServiceError", "service_pid"]

log = logging.getLogger("estargz.service")
_START_TIMEOUT = 30.0
_PEERCRED = struct.Struct("3i")


class ServiceError(EstargzError):
    """The service could not be started or stopped."""


def _state(root: str) -> Path:
    return Path(root) / "state"


def service_pid(root: str) -> int | None:
    """The running service's pid, if its socket answers."""
    sock = connect(service_socket(root))
    if sock is None:
        return None
    sock.close()
    try:
        return int((_state(root) / "service.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def _warm() -> argparse.ArgumentParser:
    """Import and set up, once, what every command would otherwise pay for at start."""
    from estargz.cli import image, lazy  # noqa: F401  (the commands it runs, imported once)
    from estargz.cli.main import build_parser
    from estargz.lazy import fuse, mount, server  # noqa: F401  (FUSE library lookup included)
    from estargz.registry.client import RegistryClient, default_ssl_context

    default_ssl_context()
    RegistryClient("127.0.0.1:1").close()  # the HTTP stack imports the rest on first use
    "localhost".encode("idna")  # (the codec sockets use for host names, imported on first use)
    parser = build_parser()
    parser.parse_args(["i", "rpull", "localhost/warm"])  # (argparse compiles patterns on use)
    return parser


class Service:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.state = _state(self.root)
        self.path = service_socket(self.root)
        self.stopping = False
        self.workers: set[int] = set()
        self.spare_pid = 0
        self.parser: argparse.ArgumentParser | None = None

    def _listen(self) -> socket.socket:
        other = connect(self.path)
        if other is not None:
            other.close()
            raise ServiceError(f"a service already answers on {self.path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # left by a service that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            at_short_path(self.path, sock.bind)
        finally:
            os.umask(old)
        sock.listen(64)
        sock.settimeout(0.5)
        return sock

    def run(self, on_listening: Callable[[], None] | None = None) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit code. ``on_listening`` is called
        once the socket takes connections."""
        self.state.mkdir(parents=True, exist_ok=True)
        setproctitle(f"estargz service {self.root}")
        self.parser = _warm()
        listener = self._listen()
        (self.state / "service.pid").write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        gc.freeze()  # what was loaded stays: workers' collections need not walk it
        log.info("estargz service %s ready on %s", installation(), self.path)
        if on_listening is not None:
            on_listening()
        spare = self._spare(listener)
        try:
            while not self.stopping:
                self._reap()
                try:
                    conn, _ = listener.accept()
                except (TimeoutError, InterruptedError):
                    continue
                with conn:
                    peer = self._allowed(conn)
                    if peer is not None:
                        spare = self._hand_over(listener, spare, conn, peer)
        finally:
            spare.close()  # the waiting worker sees the end and leaves
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            with contextlib.suppress(FileNotFoundError):
                (self.state / "service.pid").unlink()
            log.info("stopped")
        return 0

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _reap(self) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
                log.info("worker %d exited with %d", pid, os.waitstatus_to_exitcode(status))
            self.workers.discard(pid)

    def _allowed(self, conn: socket.socket) -> int | None:
        """The client's pid if it runs as this service's user, else None."""
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        peer_pid, peer_uid, _gid = _PEERCRED.unpack(raw)
        if peer_uid != os.geteuid():
            log.warning("refused pid %d: uid %d is not the service's", peer_pid, peer_uid)
            return None
        return int(peer_pid)

    def _spare(self, listener: socket.socket) -> socket.socket:
        """A worker forked ahead of time, waiting for its connection: forking costs the next
        client nothing. Returns the socket to hand the connection over on."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                listener.close()
                mine.close()
                code = _worker(theirs, self.parser)
            except BaseException:
                log.exception("worker failed")
            finally:
                os._exit(code)
        theirs.close()
        self.workers.add(pid)
        self.spare_pid = pid
        return mine

    def _hand_over(self, listener: socket.socket, spare: socket.socket,
                   conn: socket.socket, peer: int) -> socket.socket:
        """Give ``conn`` to the spare worker; returns the next spare."""
        try:
            send_message(spare, {"client": peer}, [conn.fileno()])
        except OSError as exc:  # the spare is gone: one made now takes the client
            log.warning("spare worker unavailable (%s); forking one", exc)
            spare.close()
            spare = self._spare(listener)
            send_message(spare, {"client": peer}, [conn.fileno()])
        spare.close()
        log.info("pid %d: worker %d", peer, self.spare_pid)
        return self._spare(listener)


def _stdio(fds: list[int]) -> None:
    """Take the client's stdin, stdout and stderr as this process's own."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    line = os.isatty(1)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1 if line else -1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115


def _receive_connection(channel: socket.socket) -> socket.socket | None:
    """The client connection the service hands over; None when the service stops first."""
    message = recv_message(channel, max_fds=1)
    if message is None or len(message[1]) != 1:
        return None
    return socket.socket(fileno=message[1][0])


def _watch_client(conn: socket.socket) -> None:
    """A client that goes away (killed, its terminal closed) is a Ctrl-C for its command:
    the kernel signals SIGIO when the client's end of the connection closes."""

    def gone(_signum: int, _frame: object) -> None:
        try:
            data = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            signal.signal(signal.SIGIO, signal.SIG_IGN)
            raise KeyboardInterrupt

    signal.signal(signal.SIGIO, gone)
    fcntl.fcntl(conn.fileno(), fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(conn.fileno(), fcntl.F_SETFL,
                fcntl.fcntl(conn.fileno(), fcntl.F_GETFL) | os.O_ASYNC)


def _forget_client(conn: socket.socket) -> None:
    """In a process forked by the command (a mount daemon): not the client's business."""
    signal.signal(signal.SIGIO, signal.SIG_IGN)
    conn.close()


def _worker(channel: socket.socket, parser: argparse.ArgumentParser | None) -> int:
    """One command, in a child of the service; returns the exit status for ``os._exit``.

    Forked ahead of time: it prepares, then waits on ``channel`` for its client's connection.
    """
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.disable()  # a worker lives for one command and ends with os._exit (daemons re-enable)
    with channel:
        found = _receive_connection(channel)
    if found is None:
        return 0
    conn = found
    conn.settimeout(None)
    message = recv_message(conn, max_fds=3)
    if message is None:
        return 1
    request, fds = message
    if not isinstance(request, dict) or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return 1
    if request.get("installation") != installation():
        send_message(conn, {"refused": f"service runs {installation()}"})
        for fd in fds:
            os.close(fd)
        return 1
    os.register_at_fork(after_in_child=lambda: _forget_client(conn))  # (mount daemons)
    logging.root.handlers.clear()  # the service's log handler would write to the client
    _stdio(fds)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = [str(a) for a in request["argv"]]
    sys.argv = ["estargz", *argv]
    setproctitle(" ".join(sys.argv))
    send_message(conn, {"pid": os.getpid()})
    from estargz.cli.main import run

    _watch_client(conn)
    try:
        code = run(argv, parser)
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        signal.signal(signal.SIGIO, signal.SIG_IGN)  # the client may hang up now
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    with contextlib.suppress(OSError):
        send_message(conn, {"exit": code})
    return code


def _root(args: argparse.Namespace) -> str:
    return os.path.abspath(args.root or default_store_root())


def _cmd_start(args: argparse.Namespace) -> int:
    root = _root(args)
    pid = service_pid(root)
    if pid is not None:
        print(f"estargz service already running (pid {pid}) on {service_socket(root)}")
        return 0
    from estargz.cli.common import open_store

    open_store(args)  # the store exists before anything is served from it
    state = _state(root)
    state.mkdir(parents=True, exist_ok=True)
    if args.foreground:
        _logging()
        return Service(root).run()
    failed_r, failed_w = os.pipe()  # the detached service says why it could not start
    if detach(state / "service.log") is None:
        code = 1
        try:
            os.close(failed_r)
            _logging()
            code = Service(root).run(on_listening=lambda: os.close(failed_w))
        except BaseException as exc:
            log.error("service failed: %s", exc)
            with contextlib.suppress(OSError):
                os.write(failed_w, f"{type(exc).__name__}: {exc}".encode()[:4000])
        finally:
            os._exit(code)
    os.close(failed_w)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            pid = service_pid(root)
            if pid is not None:
                print(f"estargz service running (pid {pid}) on {service_socket(root)}")
                return 0
            if select.select([failed_r], [], [], 0.02)[0]:
                why = os.read(failed_r, 4096).decode(errors="replace")
                if why or service_pid(root) is None:
                    raise ServiceError(f"the service did not start: {why or 'it died'} "
                                       f"(log: {state / 'service.log'})")
        raise ServiceError(f"the service did not start (log: {state / 'service.log'})")
    finally:
        os.close(failed_r)


def _cmd_stop(args: argparse.Namespace) -> int:
    root = _root(args)
    pid = service_pid(root)
    if pid is None:
        print("estargz service not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while service_pid(root) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    if service_pid(root) is not None:
        raise ServiceError(f"the service (pid {pid}) did not stop")
    print(f"estargz service stopped (pid {pid}); mounts keep serving")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    root = _root(args)
    pid = service_pid(root)
    if pid is None:
        print(f"estargz service not running for {root}")
        return 3
    print(f"estargz service running (pid {pid}) on {service_socket(root)}")
    return 0


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s [%(process)d] %(levelname)s %(message)s")
