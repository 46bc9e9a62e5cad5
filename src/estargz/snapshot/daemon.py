"""The snapshotter's process: the gRPC server on a unix socket, run until SIGTERM or SIGINT.

The socket's directory is made mode 0700 and the socket 0600 before anyone can connect (the
umask is tightened around bind), so only root (containerd) reaches it. On a signal the server
stops taking calls, lets running ones finish for a few seconds and closes the database; the
snapshots stay on disk for the next start, and lazily mounted layers keep serving the
containers that use them (their daemons are processes of their own); a start mounts again
those whose daemon is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import grpc

from estargz.errors import EstargzError
from estargz.snapshot.service import SnapshotsServicer, add_to_server
from estargz.snapshot.snapshotter import Snapshotter

__all__ = ["DEFAULT_SOCKET", "SnapshotterDaemon", "default_root"]

log = logging.getLogger("estargz.snapshot")
DEFAULT_SOCKET = "/run/estargz/snapshotter.sock"
_GRACE = 5.0


def default_root(store_root: str) -> Path:
    """The snapshotter's state beside the store's: ``STORE/snapshotter``."""
    return Path(store_root) / "snapshotter"


class SnapshotterDaemon:
    """One snapshotter served on one socket."""

    def __init__(self, address: str, root: Path, store_root: str, *,
                 background_fetch: bool = True) -> None:
        self.address = address
        self.snapshotter = Snapshotter(root, store_root, background_fetch=background_fetch)
        self._server: grpc.Server | None = None
        self._stop = threading.Event()

    def _listen(self) -> grpc.Server:
        path = Path(self.address)
        if len(os.fsencode(path)) > 107:
            raise EstargzError(f"{path}: too long for a unix socket path (107 bytes at most)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        if path.is_socket():
            path.unlink()
        elif path.exists():
            raise EstargzError(f"{path}: exists and is not a socket")
        server = grpc.server(ThreadPoolExecutor(max_workers=16, thread_name_prefix="snapshots"))
        add_to_server(SnapshotsServicer(self.snapshotter), server)
        old = os.umask(0o177)
        try:
            port = server.add_insecure_port(f"unix:{path}")
        finally:
            os.umask(old)
        if port == 0:
            raise EstargzError(f"{path}: cannot listen on this socket")
        os.chmod(path, 0o600)
        return server

    def serve(self) -> None:
        """Serve until :meth:`stop` or SIGTERM/SIGINT (when called from the main thread)."""
        self.snapshotter.restore()  # before containerd can ask about those snapshots
        server = self._server = self._listen()
        server.start()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        log.info("serving containerd.services.snapshots.v1.Snapshots on %s (root %s)",
                 self.address, self.snapshotter.root)
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            server.stop(_GRACE).wait()
            self.snapshotter.close()
            with_socket = Path(self.address)
            if with_socket.is_socket():
                with_socket.unlink()
            log.info("stopped")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s: shutting down", signal.Signals(signum).name)
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
