"""Real registries for tests: Debian's ``docker-registry`` on 127.0.0.1, open, with htpasswd
Basic auth, or with token auth backed by a small RS256 token server running in the test.

Plain helpers and classes; tests/conftest.py turns them into fixtures.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from estargz.registry import Credentials, RegistryClient

__all__ = [
    "RegistryServer",
    "TokenRequest",
    "TokenServer",
    "free_port",
    "htpasswd_line",
    "start_basic",
    "start_open",
    "start_token",
    "unique_repo",
]

REGISTRY_BIN = "docker-registry"
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (the registry binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def htpasswd_line(user: str, password: str) -> str:
    """``user:$2b$...``, what ``htpasswd -nbB`` prints (bcrypt is all docker-registry takes)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{user}:{hashed}"


def unique_repo(label: str) -> str:
    """A fresh, valid repository name, so tests can share one registry process."""
    slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
    slug = "-".join(p for p in slug.split("-") if p)[:40] or "t"
    return f"test/{slug}-{uuid.uuid4().hex[:8]}"


# -- token server ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _libtrust_key_id(key: rsa.RSAPublicKey) -> str:
    """docker/libtrust's key ID: base32 of the first 240 bits of SHA-256(SPKI DER), in 4s."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


@dataclass
class TokenRequest:
    method: str
    user: str | None
    scopes: list[str]
    granted: list[dict[str, Any]]
    status: int


@dataclass
class TokenServer:
    """Issues registry tokens (JWT, RS256) the way a Docker token service does.

    ``users`` maps user names to passwords, ``refresh_tokens`` maps identity tokens to users.
    Authenticated users get every action they ask for; anonymous ones only ``pull``.
    ``expired_tokens`` makes the next N tokens already expired (the registry rejects them
    although ``expires_in`` says otherwise), ``failures`` answers the next N requests with
    503, ``token_field`` picks the JSON field(s) used.
    """

    directory: pathlib.Path
    users: dict[str, str] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    service: str = "estargz-test"
    issuer: str = "estargz-test-issuer"
    expires_in: int = 300
    expired_tokens: int = 0
    failures: int = 0
    token_field: str = "both"
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = self.directory / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.kid = _libtrust_key_id(self._key.public_key())
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer((HOST, 0), _TokenHandler)
        self._server.daemon_threads = True
        self._server.token_server = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/token"

    def registry_auth(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(self.cert_path)}}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def issue(self, user: str | None, scopes: list[str]) -> tuple[str, list[dict[str, Any]]]:
        granted = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = wanted if user else [a for a in wanted if a == "pull"]
            if allowed:
                granted.append({"type": kind, "name": name, "actions": allowed})
        now = int(time.time())
        with self._lock:
            expired = self.expired_tokens > 0
            self.expired_tokens -= 1 if expired else 0
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now - 3600 if expired else now + self.expires_in,
            "nbf": now - 3700 if expired else now - 10,
            "iat": now - 3700 if expired else now,
            "jti": uuid.uuid4().hex,
            "access": granted,
        }
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode()))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature), granted


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def ts(self) -> TokenServer:
        return self.server.token_server  # type: ignore[attr-defined,no-any-return]

    def _reply(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _grant(self, method: str, user: str | None, scopes: list[str]) -> None:
        token, granted = self.ts.issue(user, scopes)
        self.ts.requests.append(TokenRequest(method, user, scopes, granted, 200))
        doc: dict[str, Any] = {"expires_in": self.ts.expires_in}
        if self.ts.token_field in ("token", "both"):
            doc["token"] = token
        if self.ts.token_field in ("access_token", "both"):
            doc["access_token"] = token
        self._reply(200, doc)

    def _deny(self, method: str, user: str | None, scopes: list[str]) -> None:
        self.ts.requests.append(TokenRequest(method, user, scopes, [], 401))
        self._reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                      "message": "invalid username or password"}]})

    def _failing(self) -> bool:
        with self.ts._lock:
            if self.ts.failures <= 0:
                return False
            self.ts.failures -= 1
        self.ts.requests.append(TokenRequest(self.command, None, [], [], 503))
        self._reply(503, {"errors": [{"code": "UNAVAILABLE", "message": "try again"}]})
        return True

    def do_GET(self) -> None:
        if self._failing():
            return
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        user: str | None = None
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.ts.users.get(name) != password:
                return self._deny("GET", name, scopes)
            user = name
        self._grant("GET", user, scopes)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
        refresh = (form.get("refresh_token") or [""])[0]
        user = self.ts.refresh_tokens.get(refresh)
        if (form.get("grant_type") or [""])[0] != "refresh_token" or user is None:
            return self._deny("POST", None, scopes)
        self._grant("POST", user, scopes)


# -- registry ------------------------------------------------------------------------------


class RegistryServer:
    """One ``docker-registry serve`` process on 127.0.0.1 with its own storage directory.

    ``auth`` is the ``auth:`` section of the config (None: open). ``username``/``password``
    are the working credentials for auth variants; ``token_server`` is set for token auth.
    """

    def __init__(self, root: pathlib.Path, *, auth: dict[str, Any] | None = None,
                 username: str = "", password: str = "",
                 token_server: TokenServer | None = None,
                 tls: tuple[pathlib.Path, pathlib.Path] | None = None) -> None:
        self.root = root
        self.tls = tls
        """(certificate, key) in PEM: the registry speaks HTTPS only."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.auth = auth
        self.username = username
        self.password = password
        self.token_server = token_server
        self.config_path = root / "config.yml"
        self.log_path = root / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.username, self.password)

    def client(self, **kw: Any) -> RegistryClient:
        """A client for this registry with its working credentials and fast retries."""
        kw.setdefault("credentials", self.credentials)
        kw.setdefault("backoff", 0.01)
        return RegistryClient(self.host, **kw)

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "storage")},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "estargz-test-secret"},
        }
        if self.tls:
            config["http"]["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        if self.auth:
            config["auth"] = self.auth
        self.config_path.write_text(json.dumps(config, indent=1))  # JSON is valid YAML

    def start(self, timeout: float = 15.0) -> RegistryServer:
        self._write_config()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._proc.returncode}:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            try:
                status = httpx.get(f"{self.url}/v2/", timeout=1.0, verify=False).status_code
            except httpx.TransportError:
                status = 0
            if status in (200, 401):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry on {self.host} did not answer /v2/ in "
                                   f"{timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Die at once, as a crashed registry would (connections reset, no cleanup)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_open(root: pathlib.Path) -> RegistryServer:
    return RegistryServer(root).start()


def start_basic(
    root: pathlib.Path, user: str = "alice", password: str = "s3cret-pw"
) -> RegistryServer:
    htpasswd = root / "htpasswd"
    root.mkdir(parents=True, exist_ok=True)
    htpasswd.write_text(htpasswd_line(user, password) + "\n")
    auth = {"htpasswd": {"realm": "estargz-test", "path": str(htpasswd)}}
    return RegistryServer(root, auth=auth, username=user, password=password).start()


def start_token(
    root: pathlib.Path, user: str = "bob", password: str = "t0ken-pw"
) -> RegistryServer:
    tokens = TokenServer(root / "token", users={user: password},
                         refresh_tokens={"refresh-" + user: user})
    server = RegistryServer(root, auth=tokens.registry_auth(), username=user, password=password,
                            token_server=tokens)
    try:
        return server.start()
    except BaseException:
        tokens.close()
        raise
