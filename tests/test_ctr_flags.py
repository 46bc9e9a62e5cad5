"""The ctr flags estargz implements for ``i pull``, ``i push`` and the registry: each does what
ctr does, against the real registry (``--print-chainid``, ``--max-concurrent-*``, push
``--manifest``/``--platform``, ``--refresh``, ``--http-dump``, the TLS files)."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clikit import Cli, assert_clear_error
from estargz.errors import RegistryError
from estargz.registry import RegistryClient
from estargz.registry.httpopts import tls_context
from imagekit import files_layer, write_oci_index, write_oci_layout
from registry_fixture import RegistryServer, unique_repo


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


LAYERS = [files_layer({"etc/one": b"1\n"}), files_layer({"etc/two": b"2\n"}),
          files_layer({"etc/three": b"3\n"})]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    write_oci_layout(tmp_path / "one", "v1", LAYERS)
    write_oci_index(tmp_path / "multi", "v1",
                    {"linux/amd64": LAYERS[:2], "linux/arm64": LAYERS[2:]})
    cli = Cli.at(tmp_path)
    cli("import", str(tmp_path / "one"), "--name", "local/one:v1")
    cli("import", str(tmp_path / "multi"), "--name", "local/multi:v1")
    return cli


def test_pull_prints_the_chain_id(cli: Cli, registry: RegistryServer, tmp_path: Path) -> None:
    ref = f"{registry.host}/{unique_repo('chainid')}:v1"
    cli("push", ref, "local/one:v1")
    fresh = Cli.at(tmp_path, "fresh")
    out = fresh("pull", "--print-chainid", "--max-concurrent-downloads", "1", ref).splitlines()
    chain = _sha(LAYERS[0])
    for raw in LAYERS[1:]:
        chain = _sha(f"{chain} {_sha(raw)}".encode())
    assert out[1] == f"image chain ID: {chain}"
    assert len(out) == 2


def test_push_one_manifest_by_digest_or_platform(cli: Cli, registry: RegistryServer) -> None:
    repo = f"{registry.host}/{unique_repo('push-manifest')}"
    index_digest = cli("push", f"{repo}:multi", "local/multi:v1").split()[1]
    with RegistryClient(registry.host) as client:
        index = json.loads(client.get_manifest(repo.split("/", 1)[1], index_digest)[0])
    arm = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    out = cli("push", "--platform", "linux/arm64", "--max-concurrent-uploaded-layers", "1",
              f"{repo}:arm", "local/multi:v1")
    assert out.split()[1] == arm["digest"]
    out = cli("push", "--manifest", arm["digest"], f"{repo}:bydigest")
    assert out.split()[1] == arm["digest"]
    with RegistryClient(registry.host) as client:
        for tag in ("arm", "bydigest"):
            assert client.get_manifest(repo.split("/", 1)[1], tag)[2] == arm["digest"]
    line = cli.fails("push", "--platform", "linux/s390x", f"{repo}:none", "local/multi:v1")
    assert "matches 0 manifests" in line and "linux/amd64" in line


def test_refresh_token_and_http_dump(cli: Cli, token_registry: RegistryServer) -> None:
    """``--refresh`` authenticates with an OAuth2 refresh token; ``--http-dump`` shows every
    request and answer, credentials hidden."""
    assert token_registry.token_server is not None
    ref = f"{token_registry.host}/{unique_repo('refresh')}:v1"
    proc = cli.run("push", "--refresh", "refresh-bob", "--http-dump", ref, "local/one:v1")
    assert proc.returncode == 0, proc.stderr
    assert token_registry.token_server.requests[-1].method == "POST"
    assert token_registry.token_server.requests[-1].user == "bob"
    assert f"> PUT http://{token_registry.host}/v2/" in proc.stderr
    assert "< 201 Created" in proc.stderr
    assert "authorization: <hidden>" in proc.stderr.lower()
    assert "refresh-bob" not in proc.stderr
    line = cli.fails("push", "--refresh", "wrong-token", ref, "local/one:v1")
    assert "401" in line


# -- TLS: a registry endpoint that wants a client certificate --------------------------------


def _cert(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          ca: bool = False) -> tuple[bytes, bytes, x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem_key, subject, key


class _V2(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS ``/v2/`` on 127.0.0.1 that wants a client certificate of its CA; the PEM
    files are in the returned directory (ca.pem, client.pem, client.key)."""
    ca_pem, _, ca_name, ca_key = _cert("test CA", None, ca=True)
    server_pem, server_key, _, _ = _cert("127.0.0.1", (ca_name, ca_key))
    client_pem, client_key, _, _ = _cert("client", (ca_name, ca_key))
    for name, data in (("ca.pem", ca_pem), ("server.pem", server_pem),
                       ("server.key", server_key), ("client.pem", client_pem),
                       ("client.key", client_key)):
        (tmp_path / name).write_bytes(data)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    context.load_verify_locations(tmp_path / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _V2)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_tls_files_verify_the_server_and_present_the_client(
        tls_server: tuple[str, Path]) -> None:
    host, pem = tls_server
    ca, cert, key = (str(pem / n) for n in ("ca.pem", "client.pem", "client.key"))
    with RegistryClient(host, plain_http=False, retries=0, tls=tls_context(ca, cert, key)) as c:
        c.ping()
    with RegistryClient(host, plain_http=False, retries=0, tls=tls_context(ca)) as c, \
            pytest.raises(RegistryError):  # no client certificate: the server hangs up
        c.ping()
    with RegistryClient(host, plain_http=False, retries=0, tls=tls_context("", cert, key)
                        ) as c, pytest.raises(RegistryError, match="CERTIFICATE_VERIFY_FAILED"):
        c.ping()  # a server certificate no trusted CA signed


def test_bad_tls_files_are_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    line = cli.fails("pull", "--tlscacert", str(tmp_path / "junk.pem"), "127.0.0.1:1/a:b")
    assert f"--tlscacert {tmp_path / 'junk.pem'}: no usable PEM certificate" in line
    line = cli.fails("pull", "--tlskey", str(tmp_path / "junk.pem"), "127.0.0.1:1/a:b")
    assert "needs --tlscert" in line
    proc = cli.run("pull", "--tlscert", str(tmp_path / "nope.pem"), "127.0.0.1:1/a:b")
    assert proc.returncode == 1
    assert assert_clear_error(proc.stderr.splitlines()[-1] + "\n").endswith(
        "nope.pem: no such file or directory")
