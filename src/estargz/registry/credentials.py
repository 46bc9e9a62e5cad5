"""Registry credentials from the Docker client configuration, as ``docker login`` stores them.

Lookup order for a host: ``credHelpers[host]``, then ``credsStore``, then ``auths`` (base64
``auth``, ``username``/``password``, ``identitytoken``, ``registrytoken``). Helpers are run as
``docker-credential-<name> get`` with the server URL on stdin. Secrets never appear in reprs.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from estargz.errors import CredentialsError

__all__ = [
    "Credentials",
    "credentials_for",
    "docker_config_path",
    "run_credential_helper",
    "server_key",
]

_DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
_DOCKER_HUB_KEYS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT = 30.0
_TOKEN_USER = "<token>"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What to authenticate with. An all-empty value means anonymous.

    ``identity_token`` is an OAuth2 refresh token (``docker login`` with a token service);
    ``registry_token`` is a bearer token sent to the registry as is.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    @classmethod
    def from_user(cls, user: str) -> Credentials:
        """``USER[:PASSWORD]`` as given to ``--user``."""
        name, _, password = user.partition(":")
        return cls(username=name, password=password)

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    @property
    def has_basic(self) -> bool:
        return bool(self.username or self.password)


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG")
    if base:
        return Path(base) / "config.json"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".docker" / "config.json"


def server_key(key: str) -> str:
    """Normalise a config key (``https://host/v1/``, ``http://host``, ``host``) to ``host``."""
    key = key.strip()
    for prefix in ("https://", "http://"):
        if key.lower().startswith(prefix):
            key = key[len(prefix) :]
            break
    key = key.split("/", 1)[0].lower()
    return "docker.io" if key in _DOCKER_HUB_KEYS else key


def _helper_server_url(host: str) -> str:
    return _DOCKER_HUB_SERVER if server_key(host) == "docker.io" else host


def run_credential_helper(
    helper: str, host: str, env: Mapping[str, str] | None = None
) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` for ``host``; None if it has nothing stored."""
    env = dict(os.environ if env is None else env)
    program = f"docker-credential-{helper}"
    path = shutil.which(program, path=env.get("PATH"))
    if path is None:
        raise CredentialsError(f"credential helper {program} is configured but not on PATH")
    try:
        proc = subprocess.run(
            [path, "get"],
            input=_helper_server_url(host).encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialsError(f"credential helper {program} failed to run: {exc}") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        if "credentials not found" in out.lower() or "credentials not found" in (
            proc.stderr.decode(errors="replace").lower()
        ):
            return None
        detail = (out or proc.stderr.decode(errors="replace").strip())[:200]
        raise CredentialsError(f"{program} get {host}: exit status {proc.returncode}: {detail}")
    try:
        doc = orjson.loads(out)
    except orjson.JSONDecodeError:
        raise CredentialsError(f"{program} get {host}: output is not JSON") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{program} get {host}: output is not a JSON object")
    username, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
    if not username and not secret:
        return None
    if username == _TOKEN_USER:
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)


def _from_auth_entry(entry: Any, where: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise CredentialsError(f"{where}: entry is not a JSON object")
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, ValueError):  # (a UnicodeDecodeError is a ValueError)
            raise CredentialsError(f"{where}: 'auth' is not base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsError(f"{where}: 'auth' does not decode to user:password")
    creds = Credentials(
        username=username,
        password=password,
        identity_token=str(entry.get("identitytoken") or ""),
        registry_token=str(entry.get("registrytoken") or ""),
    )
    return None if creds.anonymous else creds


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialsError(f"{path}: {exc.strerror}") from None
    try:
        doc = orjson.loads(data) if data.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise CredentialsError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"{path}: not a JSON object")
    return doc


def credentials_for(
    host: str,
    *,
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    """Credentials stored for ``host`` (``host[:port]``), or None for anonymous access."""
    path = Path(config_path) if config_path is not None else docker_config_path(env)
    config = _load_config(path)
    want = server_key(host)
    helpers = config.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        raise CredentialsError(f"{path}: 'credHelpers' is not a JSON object")
    helper = next((str(v) for k, v in helpers.items() if server_key(k) == want), None)
    store = config.get("credsStore")
    for name in (helper, str(store) if store else None):
        if name:
            creds = run_credential_helper(name, host, env)
            if creds is not None:
                return creds
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        raise CredentialsError(f"{path}: 'auths' is not a JSON object")
    for key, entry in auths.items():
        if server_key(key) == want:
            found = _from_auth_entry(entry, f"{path}: auths[{key!r}]")
            if found is not None:
                return found
    return None
