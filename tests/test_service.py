"""The store's resident service: ``estargz service start | status | stop``, and the thin client
that hands ``i rpull | umount | mounts`` to it.

A command answered by the service must look exactly like one run in the client's process:
same stdout and stderr, same exit code, same mount; Ctrl-C reaches it; another user cannot
connect; no service, a dead one or one of another installation, and the command runs locally.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from estargz.cli.client import connect, installation, recv_message, send_message
from estargz.paths import service_socket
from lazykit import (
    ESTARGZ_ONLY,
    Images,
    Mounts,
    assert_same_tree,
    snapshot,
    umoci_rootfs,
)


def _estargz(root: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "estargz.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, check=False, env=env)


def _title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def _workers_logged(root: Path) -> int:
    log = root / "state" / "service.log"
    return log.read_text().count(": worker ") if log.exists() else 0


@pytest.fixture
def service(mounts: Mounts) -> Iterator[Path]:
    """A running service for the store of ``mounts``; stopped afterwards (before the mounts
    are undone)."""
    root = mounts.cli.root
    proc = _estargz(root, "service", "start", env=mounts.cli.env)
    assert proc.returncode == 0, proc.stderr
    try:
        yield root
    finally:
        _estargz(root, "service", "stop", env=mounts.cli.env)


def test_start_status_stop(tmp_path: Path) -> None:
    root = tmp_path / "store"
    assert _estargz(root, "service", "status").returncode == 3
    started = _estargz(root, "service", "start")
    try:
        assert started.returncode == 0, started.stderr
        assert "running (pid" in started.stdout
        sock = service_socket(str(root))
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        status = _estargz(root, "service", "status")
        assert status.returncode == 0 and "running" in status.stdout
        again = _estargz(root, "service", "start")  # idempotent: one service per store
        assert again.returncode == 0 and "already running" in again.stdout
        pid = int((root / "state" / "service.pid").read_text())
        assert pid == int(status.stdout.split("pid ")[1].split(")")[0])
    finally:
        stopped = _estargz(root, "service", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not os.path.exists(service_socket(str(root)))
    assert _estargz(root, "service", "status").returncode == 3


def test_rpull_through_the_service_is_the_same_mount(images: Images, mounts: Mounts,
                                                     service: Path, tmp_path: Path) -> None:
    ref = images.get("default")
    before = _workers_logged(service)
    proc = mounts.rpull(ref)
    assert _workers_logged(service) == before + 1  # the service ran it
    assert "layers lazy" in proc.stderr and "lazy (TOC sha256:" in proc.stderr
    root = Path(proc.stdout.strip())
    want = snapshot(umoci_rootfs(ref, tmp_path / "umoci"), skip=ESTARGZ_ONLY)
    assert_same_tree(snapshot(root), want)
    rows = mounts.cli.mounts()  # also answered by the service
    assert [row["mountpoint"] for row in rows] == [str(root)]
    # ps tells them apart: no daemon looks like the service (pkill -f stays safe)
    service_pid = int((service / "state" / "service.pid").read_text())
    daemon_pid = int((mounts.state_dir(root) / "daemon.pid").read_text())
    assert _title(service_pid) == f"estargz service {service}"
    assert _title(daemon_pid) == f"estargz mount {ref} {root}"
    assert _workers_logged(service) == before + 2
    # the mount daemon does not belong to the service: stopping it leaves the mount serving
    _estargz(service, "service", "stop", env=mounts.cli.env)
    assert (root / "bin" / "sh").exists()
    assert mounts.cli("umount", str(root)).strip() == str(root)


def test_errors_and_exit_codes_come_back(images: Images, mounts: Mounts, service: Path) -> None:
    missing = f"{images.host}/no-such-repo:v1"
    proc = mounts.rpull(missing, ok=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("estargz: error: ") and "Traceback" not in proc.stderr
    usage = mounts.cli.run("rpull")  # argparse's exit status and message
    assert usage.returncode == 2 and "required" in usage.stderr
    assert not list((service / "state" / "mounts").glob("*"))  # the failed rpull left nothing


def test_interrupt_reaches_the_worker(mounts: Mounts, service: Path) -> None:
    """Ctrl-C on the client stops the command in the service: a registry that never answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the kernel, nothing ever replies
    host = f"127.0.0.1:{silent.getsockname()[1]}"
    cmd = [sys.executable, "-m", "estargz.cli.main", "--root", str(service), "i", "rpull",
           f"{host}/hang:v1"]
    with silent:
        before = _workers_logged(service)
        client = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=mounts.cli.env)
        deadline = time.monotonic() + 20
        while _workers_logged(service) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _workers_logged(service) == before + 1
        time.sleep(0.3)
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=20)
    assert client.returncode == 130, err
    assert "interrupted" in err


def test_no_service_or_a_dead_one_runs_locally(images: Images, mounts: Mounts) -> None:
    assert mounts.cli.mounts() == []  # (creates the store)
    sock = service_socket(str(mounts.cli.root))
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock)  # a socket file nobody listens on, as a killed service leaves it
    stale.close()
    proc = mounts.rpull("--no-background-fetch", images.get("default"))
    assert (Path(proc.stdout.strip()) / "bin" / "sh").exists()


def test_other_installation_and_other_users_are_refused(service: Path) -> None:
    path = service_socket(str(service))
    sock = connect(path)
    assert sock is not None
    try:
        send_message(sock, {"argv": ["i", "mounts"], "cwd": "/", "env": {},
                            "installation": "0.0.0 /elsewhere"}, [0, 1, 2])
        reply = recv_message(sock)
    finally:
        sock.close()
    assert reply is not None and "refused" in reply[0]  # type: ignore[operator]
    assert installation() in reply[0]["refused"]  # type: ignore[index]

    pid = os.fork()
    if pid == 0:  # as nobody: the socket's mode already keeps it out
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            code = 0 if connect(path) is None else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_concurrent_commands_each_get_a_worker(images: Images, mounts: Mounts,
                                               service: Path) -> None:
    """Three rpulls at once through one service: three workers, three working mounts."""
    ref = images.get("default")
    before = _workers_logged(service)
    procs = [subprocess.Popen([sys.executable, "-m", "estargz.cli.main", "--root",
                               str(service), "i", "rpull", "-q", "--no-background-fetch", ref],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=mounts.cli.env) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    points = [out.strip() for out, _ in results]
    mounts.points.extend(p for p in points if p)
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    assert len(set(points)) == 3
    assert all((Path(p) / "bin" / "sh").exists() for p in points)
    assert _workers_logged(service) == before + 3


def test_a_store_path_longer_than_a_socket_address(tmp_path: Path) -> None:
    """sun_path holds 108 bytes: service and client reach the socket through its directory."""
    root = tmp_path / ("d" * 60) / ("e" * 60) / "store"
    assert len(service_socket(str(root))) > 108
    assert _estargz(root, "service", "start").returncode == 0
    try:
        before = _workers_logged(root)
        listed = _estargz(root, "i", "mounts", "--json")
        assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stderr
        assert _workers_logged(root) == before + 1  # answered by the service
    finally:
        assert _estargz(root, "service", "stop").returncode == 0


def test_a_command_handed_over_never_runs_twice(tmp_path: Path) -> None:
    """A fast worker answers and hangs up at once: the client reports its exit status and
    does not run the command again itself (an empty send after the hand-over used to fail
    there, and the client took that for a service that never got the command)."""
    root = tmp_path / "store"
    assert _estargz(root, "i", "mounts").returncode == 0  # (creates the store)
    os.makedirs(os.path.dirname(service_socket(str(root))), exist_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(service_socket(str(root)))
    listener.listen(1)
    got: list[object] = []

    def fake_service() -> None:
        conn, _ = listener.accept()
        with conn:
            message = recv_message(conn, max_fds=3)
            assert message is not None
            got.append(message[0])
            for fd in message[1]:
                os.close(fd)
            send_message(conn, {"pid": os.getpid()})
            send_message(conn, {"exit": 7})

    thread = threading.Thread(target=fake_service)
    thread.start()
    try:
        proc = _estargz(root, "i", "rpull", "not a reference")
    finally:
        thread.join(timeout=10)
        listener.close()
    assert got and got[0]["argv"][-1] == "not a reference"  # type: ignore[index]
    assert proc.returncode == 7, proc.stderr  # the service's answer
    assert "InvalidReference" not in proc.stderr  # not run a second time, here


class _SentAll:
    """A socket whose first send takes everything and whose peer then hangs up."""

    def sendmsg(self, buffers: list[bytes], ancdata: object) -> int:
        return sum(len(b) for b in buffers)

    def sendall(self, data: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_message_sent_whole_needs_no_second_send() -> None:
    send_message(_SentAll(), {"argv": ["i", "mounts"]}, [0, 1, 2])  # type: ignore[arg-type]


def test_a_killed_client_stops_its_command(mounts: Mounts, service: Path) -> None:
    """SIGKILL cannot be relayed: the worker sees the client's end close and stops as for
    Ctrl-C, instead of running on for nobody."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    host = f"127.0.0.1:{silent.getsockname()[1]}"
    cmd = [sys.executable, "-m", "estargz.cli.main", "--root", str(service), "i", "rpull",
           f"{host}/hang:v1"]
    log = service / "state" / "service.log"
    with silent:
        before = _workers_logged(service)
        client = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, env=mounts.cli.env)
        deadline = time.monotonic() + 20
        while _workers_logged(service) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _workers_logged(service) == before + 1
        worker = int(log.read_text().rsplit(": worker ", 1)[1].split()[0])
        time.sleep(0.3)
        client.kill()
        client.wait(timeout=10)
        deadline = time.monotonic() + 20
        while f"worker {worker} exited" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert f"worker {worker} exited with 130" in log.read_text()


def test_a_service_that_cannot_start_says_why_at_once(tmp_path: Path) -> None:
    """The detached service reports its failure to `service start`, which does not wait out
    its timeout: here a directory sits where the socket belongs."""
    root = tmp_path / "store"
    assert _estargz(root, "i", "mounts").returncode == 0  # (creates the store)
    os.makedirs(service_socket(str(root)))
    started = time.monotonic()
    proc = _estargz(root, "service", "start")
    assert proc.returncode == 1
    assert "the service did not start: IsADirectoryError" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 15  # (the start timeout is 30 s)
    assert _estargz(root, "service", "status").returncode == 3
