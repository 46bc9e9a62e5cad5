"""Options of the registry's HTTP client that the command line passes on: TLS files and the
``--http-dump`` of every request and response head."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

import httpx

from estargz.errors import RegistryError

__all__ = ["TLSFiles", "dump_hooks", "tls_context"]

TLSFiles = tuple[str, str, str]  # CA certificates, client certificate, its key ("": none)


def tls_context(ca_file: str = "", cert_file: str = "", key_file: str = ""
                ) -> ssl.SSLContext | None:
    """The TLS context for extra CA certificates and a client certificate (PEM files), or
    None for the default one. The extra CAs are trusted besides the system's."""
    if not (ca_file or cert_file or key_file):
        return None
    if key_file and not cert_file:
        raise RegistryError(f"--tlskey {key_file} needs --tlscert: the certificate of that key")
    for flag, path in (("--tlscacert", ca_file), ("--tlscert", cert_file), ("--tlskey", key_file)):
        if path and not os.path.isfile(path):  # ssl's own error would not name the file
            raise RegistryError(f"{flag} {path}: no such file or directory")
    context = httpx.create_ssl_context()
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise RegistryError(f"--tlscacert {ca_file}: no usable PEM certificate in it "
                            f"({exc.reason or exc})") from None
    try:
        if cert_file:
            context.load_cert_chain(cert_file, key_file or None)
    except ssl.SSLError as exc:
        key = f" (key {key_file})" if key_file else ""
        raise RegistryError(f"--tlscert {cert_file}{key}: not a PEM certificate and matching "
                            f"key ({exc.reason or exc})") from None
    return context


def dump_hooks(write: Callable[[str], None]) -> dict[str, list[Callable[..., None]]]:
    """httpx event hooks that write each request and response head (credentials hidden)."""

    def headers(items: httpx.Headers) -> list[str]:
        return [f"{k}: {'<hidden>' if k.lower() in _SECRET_HEADERS else v}"
                for k, v in items.items()]

    def request(req: httpx.Request) -> None:
        write("\n".join([f"> {req.method} {req.url}", *headers(req.headers)]))

    def response(resp: httpx.Response) -> None:
        write("\n".join([f"< {resp.status_code} {resp.reason_phrase} ({resp.request.method} "
                         f"{resp.request.url})", *headers(resp.headers)]))

    return {"request": [request], "response": [response]}


_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
