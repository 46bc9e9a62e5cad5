"""The thin client: hand a command to the store's resident service, if one is running.

A Python CLI spends most of a short command starting up and importing its libraries; the
service (:mod:`estargz.cli.service`) has done both already. The client sends the command line,
the working directory, the environment and its own stdin, stdout and stderr (as file
descriptors, so output, progress bars and terminal checks behave as if the command ran here),
then waits for the exit code, passing on SIGINT, SIGTERM and SIGHUP. It imports nothing
heavy: it runs before the rest of the CLI is loaded.

Only the lazy-mount commands are handed over; anything else, or no service, or a service of
another installation, and the command runs in this process as before.
"""

from __future__ import annotations

import _socket
import array
import marshal
import os
import signal
import struct
import sys

import estargz
from estargz.paths import default_store_root, service_socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import FrameType

__all__ = [
    "FORWARDED",
    "at_short_path",
    "connect",
    "forward",
    "installation",
    "recv_message",
    "send_message",
]

FORWARDED = frozenset({"rpull", "umount", "mounts"})
"""``estargz i VERB`` commands the service runs: the ones that must answer quickly."""

_IMAGE_WORDS = ("i", "image", "images")
_HEADER = struct.Struct("!I")
_MAX_MESSAGE = 16 << 20
# Messages are marshal'ed dicts of strings: marshal is built in, where json and socket would
# pull in re, enum and more at every start. Only the same user's processes can connect.


def installation() -> str:
    """What must match between client and service: version and where the code lives."""
    return f"{estargz.__version__} {os.path.dirname(os.path.abspath(estargz.__file__))}"


def _target(argv: list[str]) -> str | None:
    """The store root if ``argv`` is a forwarded command, else None (cheap, no argparse)."""
    root = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg == "--root" and i + 1 < len(argv):
            root = argv[i + 1]
            i += 1
        elif arg.startswith("--root="):
            root = arg.partition("=")[2]
        elif arg != "--debug":
            return None  # --help, --version, anything unexpected: argparse decides
        i += 1
    if argv[i : i + 1] and argv[i] in _IMAGE_WORDS and argv[i + 1 : i + 2] and \
            argv[i + 1] in FORWARDED:
        return root or default_store_root()
    return None


def send_message(sock: _socket.socket, value: Mapping[str, object],
                 fds: list[int] | None = None) -> None:
    """One length-prefixed message, with file descriptors riding on its first byte."""
    data = marshal.dumps(value)  # type: ignore[arg-type]  # strings, lists, dicts, ints
    payload = _HEADER.pack(len(data)) + data
    if fds:
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))]
        sent = sock.sendmsg([payload], rights)
        if sent < len(payload):  # (an empty send to a peer that has already answered and
            sock.sendall(payload[sent:])  # closed fails, and the command would run twice)
    else:
        sock.sendall(payload)


def recv_message(sock: _socket.socket, max_fds: int = 0) -> tuple[object, list[int]] | None:
    """The next message and any file descriptors it carried; None at end of stream."""
    fds: list[int] = []
    buf = b""
    space = _socket.CMSG_SPACE(max_fds * 4) if max_fds else 0
    while len(buf) < _HEADER.size:
        data, ancdata, _flags, _addr = sock.recvmsg(_HEADER.size - len(buf), space)
        for level, kind, raw in ancdata:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(raw[: len(raw) - len(raw) % 4])
                fds.extend(got)
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        buf += data
    (length,) = _HEADER.unpack(buf)
    if length > _MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes is too large")
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("the stream ended inside a message")
        body += chunk
    try:
        return marshal.loads(body), fds
    except (EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"not a message: {exc}") from exc


def at_short_path(path: str, act: Callable[[str], None]) -> None:
    """``act(name)`` with a name for ``path`` that fits a socket address (108 bytes): long
    ones are reached through their directory's descriptor."""
    if len(path) < 100:
        act(path)
        return
    dirfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        act(f"/proc/self/fd/{dirfd}/{os.path.basename(path)}")
    finally:
        os.close(dirfd)


def connect(path: str) -> _socket.socket | None:
    """A connection to the service's socket at ``path``; None if nothing answers there."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        at_short_path(path, sock.connect)
    except OSError:
        sock.close()
        return None
    return sock


def forward(argv: list[str]) -> int | None:
    """Run ``argv`` in the service and return its exit code; None to run it here instead."""
    root = _target(argv)
    if root is None:
        return None
    sock = connect(service_socket(os.path.abspath(root)))
    if sock is None:
        return None
    try:
        return _forwarded(sock, argv)
    finally:
        sock.close()


def _forwarded(sock: _socket.socket, argv: list[str]) -> int | None:
    """The conversation with the service: request, worker pid, exit status."""
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
               "installation": installation()}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        send_message(sock, request, [0, 1, 2])
    except OSError:
        return None  # e.g. a closed stdin: nothing was handed over
    try:
        reply = recv_message(sock)
    except (OSError, ValueError) as exc:  # it may be running: never run it a second time here
        print(f"estargz: error: lost the service while it started the command: {exc}",
              file=sys.stderr)
        return 1
    if reply is None or not isinstance(reply[0], dict) or "pid" not in reply[0]:
        return None  # refused (another installation) or stopping before it began: run it here
    pid = int(reply[0]["pid"])

    def relay(signum: int, _frame: FrameType | None) -> None:
        try:  # noqa: SIM105  (contextlib would cost an import)
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, relay)
    try:
        reply = recv_message(sock)  # (a relayed signal does not interrupt the wait: PEP 475)
    except (OSError, ValueError):
        reply = None
    if reply is None or not isinstance(reply[0], dict) or "exit" not in reply[0]:
        print("estargz: error: the service's worker ended without an exit code "
              "(see the service log)", file=sys.stderr)
        return 1
    return int(reply[0]["exit"])
