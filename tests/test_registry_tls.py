"""TLS: a registry's certificate is verified unless the user says otherwise; a private CA is
trusted once configured (``SSL_CERT_FILE``), as for every other client on the machine."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estargz.errors import RegistryError
from estargz.registry import RegistryClient
from registry_fixture import RegistryServer


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _certificates(out: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 that it signed: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("estargz test CA"))
          .issuer_name(_name("estargz test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = out / "ca.pem", out / "server.pem", out / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer,
                                                                              Path]]:
    root = tmp_path_factory.mktemp("tls-registry")
    ca, cert, key = _certificates(root)
    with RegistryServer(root / "registry", tls=(cert, key)) as server:
        yield server, ca


def test_a_certificate_nobody_vouches_for_is_refused(
        tls_registry: tuple[RegistryServer, Path]) -> None:
    server, _ = tls_registry
    with RegistryClient(server.host, plain_http=False, retries=0) as client, \
            pytest.raises(RegistryError, match=r"(?i)certificate"):
        client.ping()


def test_skip_verify_accepts_it(tls_registry: tuple[RegistryServer, Path]) -> None:
    server, _ = tls_registry
    with RegistryClient(server.host, plain_http=False, insecure_skip_verify=True) as client:
        client.ping()


def test_the_configured_ca_is_trusted(tls_registry: tuple[RegistryServer, Path]) -> None:
    """In a fresh process, as a user would: ``SSL_CERT_FILE`` names the CA bundle."""
    server, ca = tls_registry
    script = ("import sys; from estargz.registry import RegistryClient\n"
              "RegistryClient(sys.argv[1], plain_http=False, retries=0).ping()\n"
              "print('ok')")
    env = {**os.environ, "SSL_CERT_FILE": str(ca)}
    proc = subprocess.run([sys.executable, "-c", script, server.host], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.strip() == "ok", proc.stderr
    env["SSL_CERT_FILE"] = "/etc/ssl/certs/ca-certificates.crt"  # the system's: not our CA
    proc = subprocess.run([sys.executable, "-c", script, server.host], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "certificate" in proc.stderr.lower(), proc.stderr
