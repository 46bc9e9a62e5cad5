"""Credentials from a real config.json in a temp DOCKER_CONFIG, and real helper programs."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import stat

import pytest

from estargz.digest import sha256_digest
from estargz.errors import AuthenticationError, CredentialsError
from estargz.registry import Credentials, RegistryClient, credentials_for, docker_config_path
from registry_fixture import RegistryServer


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def docker_config(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """An empty $DOCKER_CONFIG directory and a bin/ directory first on PATH for helpers."""
    config = tmp_path / "docker"
    config.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return config


def _write(config: pathlib.Path, doc: object) -> None:
    (config / "config.json").write_text(json.dumps(doc))


def _helper(config: pathlib.Path, name: str, script: str) -> pathlib.Path:
    """A docker-credential-<name> program; it logs its argv and stdin to <name>.log."""
    path = config.parent / "bin" / f"docker-credential-{name}"
    log = config.parent / f"{name}.log"
    path.write_text(f"#!/bin/sh\nread -r server\necho \"$1 $server\" >> {log}\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return log


def test_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    assert docker_config_path({"DOCKER_CONFIG": "/x"}) == pathlib.Path("/x/config.json")
    assert docker_config_path({"HOME": "/home/u"}) == pathlib.Path("/home/u/.docker/config.json")


def test_no_config_means_anonymous(docker_config: pathlib.Path) -> None:
    assert credentials_for("127.0.0.1:5000") is None


def test_auths_base64_and_plain_fields(docker_config: pathlib.Path) -> None:
    _write(docker_config, {"auths": {
        "127.0.0.1:5000": {"auth": _b64("alice:pa:ss")},
        "https://reg.example/v1/": {"username": "bob", "password": "pw"},
        "http://tok.example": {"identitytoken": "refresh-abc"},
        "https://index.docker.io/v1/": {"auth": _b64("hub:hubpw")},
        "empty.example": {},
    }})
    assert credentials_for("127.0.0.1:5000") == Credentials("alice", "pa:ss")
    assert credentials_for("reg.example") == Credentials("bob", "pw")
    assert credentials_for("tok.example") == Credentials(identity_token="refresh-abc")
    for hub in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert credentials_for(hub) == Credentials("hub", "hubpw")
    assert credentials_for("empty.example") is None
    assert credentials_for("127.0.0.1:5001") is None  # the port is part of the host


def test_explicit_config_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps({"auths": {"r.io": {"auth": _b64("u:p")}}}))
    assert credentials_for("r.io", config_path=path) == Credentials("u", "p")


def test_secrets_not_in_repr() -> None:
    text = repr(Credentials("alice", "hunter2", identity_token="idtok", registry_token="regtok"))
    assert "alice" in text
    assert not any(s in text for s in ("hunter2", "idtok", "regtok"))


def test_cred_helper_for_host(docker_config: pathlib.Path) -> None:
    log = _helper(docker_config, "fake",
                  'echo \'{"ServerURL":"x","Username":"helper-user","Secret":"helper-pw"}\'')
    _write(docker_config, {"credHelpers": {"127.0.0.1:5000": "fake"},
                           "auths": {"127.0.0.1:5000": {"auth": _b64("file:pw")}}})
    assert credentials_for("127.0.0.1:5000") == Credentials("helper-user", "helper-pw")
    assert log.read_text() == "get 127.0.0.1:5000\n"  # verb in argv, server URL on stdin
    assert credentials_for("other.io") is None


def test_creds_store_token_user_and_docker_hub_url(docker_config: pathlib.Path) -> None:
    log = _helper(docker_config, "store",
                  'echo \'{"ServerURL":"x","Username":"<token>","Secret":"refresh-1"}\'')
    _write(docker_config, {"credsStore": "store"})
    assert credentials_for("docker.io") == Credentials(identity_token="refresh-1")
    assert log.read_text() == "get https://index.docker.io/v1/\n"


def test_helper_without_entry_falls_back_to_auths(docker_config: pathlib.Path) -> None:
    _helper(docker_config, "empty", 'echo "credentials not found in native keychain"; exit 1')
    _write(docker_config, {"credsStore": "empty", "auths": {"r.io": {"auth": _b64("u:p")}}})
    assert credentials_for("r.io") == Credentials("u", "p")
    assert credentials_for("s.io") is None


def test_broken_helpers_and_configs(docker_config: pathlib.Path) -> None:
    _write(docker_config, {"credsStore": "missing"})
    with pytest.raises(CredentialsError, match="docker-credential-missing is configured but not"):
        credentials_for("r.io")
    _helper(docker_config, "crash", 'echo "keychain locked" >&2; exit 3')
    _write(docker_config, {"credHelpers": {"r.io": "crash"}})
    with pytest.raises(CredentialsError, match="exit status 3: keychain locked"):
        credentials_for("r.io")
    _helper(docker_config, "garbage", "echo not-json")
    _write(docker_config, {"credHelpers": {"r.io": "garbage"}})
    with pytest.raises(CredentialsError, match="not JSON"):
        credentials_for("r.io")
    (docker_config / "config.json").write_text("{not json")
    with pytest.raises(CredentialsError, match=r"config\.json: not valid JSON"):
        credentials_for("r.io")
    _write(docker_config, {"auths": {"r.io": {"auth": "%%%"}}})
    with pytest.raises(CredentialsError, match="not base64"):
        credentials_for("r.io")


def test_client_reads_docker_config(docker_config: pathlib.Path, basic_registry: RegistryServer,
                                    repo: str) -> None:
    """No explicit credentials: the client finds them in $DOCKER_CONFIG when challenged."""
    user, password = basic_registry.username, basic_registry.password
    _write(docker_config, {"auths": {basic_registry.host: {"auth": _b64(f"{user}:{password}")}}})
    data = b"from the docker config"
    with RegistryClient(basic_registry.host, backoff=0.01) as client:
        assert client.push_blob(repo, sha256_digest(data), len(data), data) == "uploaded"


def test_helper_credentials_reach_the_registry(docker_config: pathlib.Path,
                                               basic_registry: RegistryServer, repo: str) -> None:
    user, password = basic_registry.username, basic_registry.password
    _helper(docker_config, "fake",
            f'echo \'{{"ServerURL":"x","Username":"{user}","Secret":"{password}"}}\'')
    _write(docker_config, {"credHelpers": {basic_registry.host: "fake"}})
    data = b"from a credential helper"
    with RegistryClient(basic_registry.host, backoff=0.01) as client:
        assert client.push_blob(repo, sha256_digest(data), len(data), data) == "uploaded"


def test_explicit_credentials_override_config(docker_config: pathlib.Path,
                                              basic_registry: RegistryServer, repo: str) -> None:
    _write(docker_config, {"auths": {basic_registry.host: {"auth": _b64("alice:wrong")}}})
    data = b"explicit wins"
    creds = (basic_registry.username, basic_registry.password)
    with RegistryClient(basic_registry.host, credentials=creds, backoff=0.01) as client:
        assert client.push_blob(repo, sha256_digest(data), len(data), data) == "uploaded"
    with RegistryClient(basic_registry.host, backoff=0.01) as client, pytest.raises(
        AuthenticationError, match="credentials of user 'alice' were rejected"
    ):
        client.blob_size(repo, sha256_digest(data))
