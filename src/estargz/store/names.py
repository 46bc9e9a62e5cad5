"""Image names as the store keys them: always fully qualified, the way Docker spells them.

``alpine`` and ``docker.io/library/alpine:latest`` must find the same image, so every name is
normalised on the way in: a missing registry becomes ``docker.io``, a single-component Docker
Hub repository gets ``library/``, and a name with neither tag nor digest gets ``:latest``.
"""

from __future__ import annotations

import re

from estargz.errors import InvalidImageName

__all__ = ["DEFAULT_REGISTRY", "familiar_name", "normalize_name", "split_name"]

DEFAULT_REGISTRY = "docker.io"
_LEGACY_REGISTRIES = frozenset({"index.docker.io", "registry-1.docker.io"})

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")
_MAX_NAME = 255


def split_name(name: str) -> tuple[str, str, str]:
    """``(repository, tag, digest)`` of a normalised name; tag or digest may be empty."""
    name = normalize_name(name)
    rest, _, digest = name.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1 :], digest
    return rest, "", digest


def normalize_name(name: str) -> str:
    """The fully qualified form of ``name``; raises :class:`InvalidImageName` if it has none."""
    rest, at, digest = name.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise InvalidImageName(f"image name {name!r}: {digest!r} is not a valid digest")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = ""
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidImageName(f"image name {name!r}: {tag!r} is not a valid tag")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
        if not _DOMAIN.fullmatch(domain):
            raise InvalidImageName(f"image name {name!r}: {domain!r} is not a valid registry")
    else:
        domain, path = DEFAULT_REGISTRY, rest
    if domain in _LEGACY_REGISTRIES:
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in path:
        path = "library/" + path
    if not path or not all(_COMPONENT.fullmatch(c) for c in path.split("/")):
        raise InvalidImageName(
            f"image name {name!r}: repository {path!r} must be lowercase letters, digits and "
            "separators (. _ __ -)"
        )
    repository = f"{domain}/{path}"
    if len(repository) > _MAX_NAME:
        raise InvalidImageName(f"image name {name!r}: longer than {_MAX_NAME} characters")
    if not tag and not digest:
        tag = "latest"
    return repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def familiar_name(name: str) -> str:
    """The short form Docker shows (``alpine:latest``, ``user/app:1``), for docker archives."""
    repository, tag, digest = split_name(name)
    if repository.startswith(f"{DEFAULT_REGISTRY}/"):
        repository = repository[len(DEFAULT_REGISTRY) + 1 :]
        if repository.startswith("library/") and repository.count("/") == 1:
            repository = repository[len("library/") :]
    return repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
