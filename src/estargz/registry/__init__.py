"""An OCI distribution client, layered like httpx.

* :mod:`.reference` parses image references and builds base URLs (pure);
* :mod:`.credentials` finds credentials the way ``docker login`` stores them;
* :mod:`.auth` is an ``httpx.Auth`` flow for Basic and Bearer-token challenges;
* :mod:`.session` retries safe requests and turns failures into :class:`RegistryError`;
* :mod:`.blobs` and :mod:`.upload` read and push blobs; :mod:`.client` is the facade.
"""

from __future__ import annotations

from estargz._exports import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from estargz.errors import (
        AuthenticationError,
        CredentialsError,
        RegistryError,
        RegistryNotFound,
        RegistryUnavailable,
    )
    from estargz.reference import Reference, api_base, is_loopback_host
    from estargz.registry.auth import Challenge, RegistryAuth, parse_www_authenticate, scope_for
    from estargz.registry.client import DEFAULT_ACCEPT, RegistryBlob, RegistryClient
    from estargz.registry.credentials import Credentials, credentials_for, docker_config_path
    from estargz.registry.retry import RetryPolicy
    from estargz.registry.upload import BlobData, PushResult

__all__ = [
    "DEFAULT_ACCEPT",
    "AuthenticationError",
    "BlobData",
    "Challenge",
    "Credentials",
    "CredentialsError",
    "PushResult",
    "Reference",
    "RegistryAuth",
    "RegistryBlob",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFound",
    "RegistryUnavailable",
    "RetryPolicy",
    "api_base",
    "credentials_for",
    "docker_config_path",
    "is_loopback_host",
    "parse_www_authenticate",
    "scope_for",
]

__getattr__ = lazy_exports(__name__, globals(), {
    "estargz.errors": (
        "AuthenticationError", "CredentialsError", "RegistryError", "RegistryNotFound",
        "RegistryUnavailable",
    ),
    "estargz.reference": ("Reference", "api_base", "is_loopback_host"),
    "estargz.registry.auth": ("Challenge", "RegistryAuth", "parse_www_authenticate", "scope_for"),
    "estargz.registry.client": ("DEFAULT_ACCEPT", "RegistryBlob", "RegistryClient"),
    "estargz.registry.credentials": ("Credentials", "credentials_for", "docker_config_path"),
    "estargz.registry.retry": ("RetryPolicy",),
    "estargz.registry.upload": ("BlobData", "PushResult"),
})
