"""Image references (``[host[:port]/]repository[:tag][@digest]``) and registry base URLs.

The one parser of image names: the store keys its images by ``str(Reference.parse(name))``
and the registry client talks to what the same parse yields.

Pure string work, no I/O, so every rule (Docker Hub's ``library/`` prefix, loopback hosts that
talk plain HTTP) is tested without a registry. Normalisation follows the Docker/containerd
grammar: the first component is a host only if it contains ``.`` or ``:`` or is ``localhost``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from estargz.digest import parse_digest
from estargz.errors import InvalidReference

__all__ = [
    "DOCKER_HUB",
    "Reference",
    "api_base",
    "is_loopback_host",
    "split_host",
    "validate_repository",
]

DOCKER_HUB = "docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOSTNAME = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_MAX_NAME = 255


def split_host(host: str) -> tuple[str, int | None]:
    """``("127.0.0.1", 5000)`` from ``"127.0.0.1:5000"``; IPv6 hosts keep their brackets."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise ValueError(f"registry host {host!r}: unclosed '['")
        name, rest = host[: end + 1], host[end + 1 :]
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            raise ValueError(f"registry host {host!r}: {name} is not an IPv6 address") from None
        if not rest:
            return name, None
        if not rest.startswith(":"):
            raise ValueError(f"registry host {host!r}: junk after ']'")
        port_text = rest[1:]
    else:
        name, sep, port_text = host.partition(":")
        if not sep:
            port_text = ""
        if not name or not _HOSTNAME.match(name):
            raise ValueError(f"registry host {host!r} is not a valid host name")
        if not sep:
            return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"registry host {host!r}: port must be a number 1-65535")
    return name, int(port_text)


def is_loopback_host(host: str) -> bool:
    """Whether ``host[:port]`` is this machine: ``localhost``, 127.0.0.0/8 or ``[::1]``."""
    name, _ = split_host(host)
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def api_base(host: str, plain_http: bool | None = None) -> str:
    """The URL the ``/v2/`` API of ``host`` lives under.

    ``plain_http=None`` picks plain HTTP for loopback hosts only, as containerd and ctr-remote
    do; Docker Hub's names map to its API host.
    """
    split_host(host)
    if host.lower() in _DOCKER_HUB_ALIASES:
        host = _DOCKER_HUB_API
    if plain_http is None:
        plain_http = is_loopback_host(host)
    return f"{'http' if plain_http else 'https'}://{host}"


def validate_repository(repository: str) -> str:
    """Return ``repository`` unchanged, or raise ValueError saying what is wrong with it."""
    if not repository:
        raise ValueError("repository name is empty")
    if not _REPOSITORY.match(repository):
        raise ValueError(
            f"repository name {repository!r} must be lowercase letters, digits and separators "
            "(., _, __, -) in /-separated components"
        )
    return repository


def _is_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or (
        component.startswith("[")
    )


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image reference; ``str()`` gives the full normalised form."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        split_host(self.registry)
        validate_repository(self.repository)
        if self.tag is not None and not _TAG.match(self.tag):
            raise ValueError(f"tag {self.tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting "
                             "with '.' or '-'")
        if self.digest is not None:
            parse_digest(self.digest)
        if len(f"{self.registry}/{self.repository}") > _MAX_NAME:
            raise ValueError(f"image name {self.name!r} is longer than {_MAX_NAME} characters")

    @classmethod
    def parse(cls, text: str, *, default_tag: str = "latest") -> Reference:
        """Parse ``alpine``, ``127.0.0.1:5000/a/b:t``, ``x/y@sha256:...``, ``h/r:t@sha256:...``.

        Docker Hub names get ``docker.io`` and single-component ones ``library/``; a reference
        with neither tag nor digest gets ``default_tag``. Raises :class:`InvalidReference`
        (a ValueError) saying what is wrong.
        """
        try:
            return cls._parse(text, default_tag)
        except InvalidReference:
            raise
        except ValueError as exc:
            raise InvalidReference(str(exc)) from None

    @classmethod
    def _parse(cls, text: str, default_tag: str) -> Reference:
        if not text or text != text.strip():
            raise ValueError(f"invalid image reference {text!r}: empty or has surrounding spaces")
        rest, at, digest = text.partition("@")
        if at:
            try:
                parse_digest(digest)
            except ValueError:
                raise ValueError(
                    f"invalid image reference {text!r}: {digest!r} is not a sha256/sha512 digest"
                ) from None
        first, slash, remainder = rest.partition("/")
        if slash and _is_host(first):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        # a tag is whatever follows the last ':' of the path (a host's port is already split off)
        name, colon, tag = path.rpartition(":")
        if not colon or "/" in tag:
            name, tag = path, ""
        if colon and not tag:
            raise ValueError(f"invalid image reference {text!r}: empty tag after ':'")
        if registry.lower() in _DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
            if name and "/" not in name:
                name = f"library/{name}"
        try:
            split_host(registry)
        except ValueError as exc:
            raise ValueError(f"invalid image reference {text!r}: {exc}") from None
        if not name:
            raise ValueError(f"invalid image reference {text!r}: no repository name")
        if name.lower() != name:
            raise ValueError(f"invalid image reference {text!r}: repository must be lowercase")
        try:
            return cls(
                registry,
                name,
                tag or (None if at else default_tag) or None,
                digest if at else None,
            )
        except ValueError as exc:
            raise ValueError(f"invalid image reference {text!r}: {exc}") from None

    @property
    def name(self) -> str:
        """``registry/repository`` (no tag or digest)."""
        return f"{self.registry}/{self.repository}"

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.registry)

    def api_base(self, plain_http: bool | None = None) -> str:
        return api_base(self.registry, plain_http)

    def with_tag(self, tag: str) -> Reference:
        """Same repository, this tag, no digest."""
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """Same repository and tag, pinned to ``digest``."""
        return replace(self, digest=digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
