"""Credentials never show: not in output or errors (``--json`` included), not in any log or
state file the commands leave readable, and not in any process's command line or title."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from clikit import Cli
from faultproxy import FaultProxy
from imagekit import files_layer, push_layers
from lazykit import lazy_mounts, wait_for
from registry_fixture import RegistryServer, unique_repo


def _leaks(text: str | bytes, secret: str) -> bool:
    data = text.encode() if isinstance(text, str) else text
    encoded = base64.b64encode(secret.encode())
    return secret.encode() in data or encoded[:-2] in data


def _cmdlines() -> dict[int, bytes]:
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            out[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
    return out


def test_the_command_line_shows_no_password(tmp_path: Path, basic_registry: RegistryServer,
                                            fault_proxy: Callable[..., FaultProxy]) -> None:
    """``--user USER:PASSWORD`` is in argv; ``ps`` must not show it while the command runs."""
    proxy = fault_proxy(basic_registry.host)
    proxy.add("delay", path=r"/v2/.*/manifests/", seconds=3, times=None)
    cli = Cli.at(tmp_path)
    secret = basic_registry.password
    proc = subprocess.Popen(cli.argv("pull", "--user", f"{basic_registry.username}:{secret}",
                                     f"{proxy.host}/{unique_repo('ps')}:v1"),
                            env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for("the request in flight", lambda: proxy.seen(path="/manifests/"), timeout=30)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"--user" in cmdline and basic_registry.username.encode() in cmdline
        assert not _leaks(cmdline, secret), cmdline
    finally:
        proc.kill()
        proc.communicate()


def test_credentials_never_show(tmp_path: Path, basic_registry: RegistryServer) -> None:
    user, password = basic_registry.username, basic_registry.password
    wrong = password + "-WRONG-but-secret"
    src = push_layers(basic_registry.host, "secret",
                      [files_layer({f"f{i}": os.urandom(3000) for i in range(40)})], tmp_path,
                      creds=f"{user}:{password}")
    esgz = src.replace(":v1", ":esgz")
    said: list[str] = []
    with lazy_mounts(tmp_path) as mounts:
        cli = mounts.cli

        def run(*args: str, ok: bool = True) -> None:
            proc = cli.run(*args)
            said.extend([proc.stdout, proc.stderr])
            assert (proc.returncode == 0) == ok, proc.stderr

        run("pull", "--user", f"{user}:{wrong}", src, ok=False)
        run("pull", "--user", f"{user}:{password}", src)
        run("convert", "--oci", "--estargz", src, esgz)
        run("push", "--user", f"{user}:{wrong}", esgz, ok=False)
        run("push", "--user", f"{user}:{password}", esgz)
        run("inspect", "--json", "--user", f"{user}:{password}", esgz)
        fresh = type(cli)(tmp_path / "lazy", cli.env)
        mounts.cli = fresh
        proc = fresh.run("rpull", "--user", f"{user}:{password}", esgz)
        said.extend([proc.stdout, proc.stderr])
        assert proc.returncode == 0, proc.stderr
        mounts.points.append(proc.stdout.strip())
        mount = Path(proc.stdout.strip())
        assert len(list(mount.iterdir())) == 40 and (mount / "f7").read_bytes()  # lazily read
        said.append(fresh("mounts", "--json"))

        processes = _cmdlines()  # the mount daemon and layer servers are running now
        for pid, cmdline in processes.items():
            assert not _leaks(cmdline, password), f"process {pid}: {cmdline!r}"

        for text in said:
            assert not _leaks(text, password) and not _leaks(text, wrong), text
        for root in (cli.root, fresh.root):
            for path in root.rglob("*"):
                if not path.is_file() or path.is_symlink():
                    continue
                if _leaks(path.read_bytes(), password):
                    mode = stat.S_IMODE(path.stat().st_mode)
                    assert path.name == "spec.json" and mode == 0o600, (
                        f"{path} (mode {mode:o}) holds the password")
