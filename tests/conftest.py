"""Shared pytest fixtures."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from gotool import DEFAULT_CACHE_DIR, build_go_harness

if TYPE_CHECKING:  # imported lazily: only registry tests need bcrypt and cryptography
    from faultproxy import FaultProxy
    from lazykit import Images, Mounts
    from registry_fixture import RegistryServer


@pytest.fixture(scope="session")
def go_harness(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Path to the compiled Go interop harness (tests/go/esgzharness).

    Cached in $ESTARGZ_TEST_GO_CACHE or ~/.cache/estargz-tests/go so repeated runs
    skip the compile; falls back to a pytest temp dir when that is not writable.
    """
    cache = pathlib.Path(os.environ.get("ESTARGZ_TEST_GO_CACHE", DEFAULT_CACHE_DIR))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        writable = os.access(cache, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        cache = tmp_path_factory.mktemp("go-harness")
    return build_go_harness(cache)


# -- registries (tests/registry_fixture.py): docker-registry processes on 127.0.0.1 ----------


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """An open docker-registry (delete enabled), shared by the session: use ``repo`` names."""
    from registry_fixture import start_open

    server = start_open(tmp_path_factory.mktemp("registry-open"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A docker-registry with htpasswd Basic auth; ``.username``/``.password`` work."""
    from registry_fixture import start_basic

    server = start_basic(tmp_path_factory.mktemp("registry-basic"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A docker-registry with token auth; ``.token_server`` issues RS256 JWTs (don't mutate it:
    take a private one from ``registry_factory("token")`` for that)."""
    from registry_fixture import start_token

    server = start_token(tmp_path_factory.mktemp("registry-token"))
    yield server
    server.stop()
    assert server.token_server is not None
    server.token_server.close()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses, e.g. ``test/test-push-blob-1a2b3c4d``."""
    from registry_fixture import unique_repo

    return unique_repo(request.node.name)


@pytest.fixture
def registry_factory(tmp_path: pathlib.Path) -> Iterator[Callable[[str], RegistryServer]]:
    """``factory("open" | "basic" | "token")`` starts a private registry, stopped afterwards."""
    from registry_fixture import start_basic, start_open, start_token

    started: list[RegistryServer] = []
    starters = {"open": start_open, "basic": start_basic, "token": start_token}

    def factory(kind: str = "open") -> RegistryServer:
        server = starters[kind](tmp_path / f"registry-{len(started)}")
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
        if server.token_server is not None:
            server.token_server.close()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """``fault_proxy(upstream_host_port, upstream_headers=None)`` -> a started FaultProxy."""
    from faultproxy import FaultProxy

    proxies: list[FaultProxy] = []

    def factory(upstream: str, **kw: object) -> FaultProxy:
        proxy = FaultProxy(upstream, **kw)  # type: ignore[arg-type]
        proxies.append(proxy)
        return proxy

    yield factory
    for proxy in proxies:
        proxy.stop()


# -- lazy mounts (tests/lazykit.py) ----------------------------------------------------------


@pytest.fixture(scope="module")
def images(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Images:
    """The test images of tests/lazykit.py, pushed once per module to the shared registry."""
    from lazykit import Images

    return Images.seed(registry.host, tmp_path_factory.mktemp(request.module.__name__))


@pytest.fixture
def mounts(tmp_path: pathlib.Path) -> Iterator[Mounts]:
    """A store for lazy mounts; every mount made through it is unmounted afterwards."""
    from lazykit import lazy_mounts

    with lazy_mounts(tmp_path) as m:
        yield m


# -- no credential in any log the suite leaves ----------------------------------------------

TEST_SECRETS = ("s3cret-pw", "t0ken-pw")
"""The registry fixtures' passwords (registry_fixture.start_basic, start_token)."""


def _leaked_into_logs(root: pathlib.Path) -> list[str]:
    import base64

    needles = [s.encode() for s in TEST_SECRETS]
    needles += [base64.b64encode(f"{user}:{s}".encode())
                for user, s in (("alice", "s3cret-pw"), ("bob", "t0ken-pw"))]
    found = []
    for path in root.rglob("*.log"):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found += [f"{path}: holds {needle.decode()!r}" for needle in needles if needle in data]
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every log the tests made (mount daemons, layer servers, the service, registries) is
    searched for the test passwords: a credential in a log fails the run."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    leaks = _leaked_into_logs(factory.getbasetemp())
    if leaks:
        print("\ncredentials found in logs:\n" + "\n".join(leaks))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
