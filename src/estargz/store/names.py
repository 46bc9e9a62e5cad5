"""Image names as the store keys them: always fully qualified, the way Docker spells them.

``alpine`` and ``docker.io/library/alpine:latest`` must find the same image, so every name is
normalised on the way in: a missing registry becomes ``docker.io``, a single-component Docker
Hub repository gets ``library/``, and a name with neither tag nor digest gets ``:latest``.
"""

from __future__ import annotations

from estargz.errors import InvalidImageName, InvalidReference
from estargz.reference import DOCKER_HUB, Reference

__all__ = ["DEFAULT_REGISTRY", "familiar_name", "normalize_name", "split_name"]

DEFAULT_REGISTRY = DOCKER_HUB


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
    try:
        return str(Reference.parse(name))
    except InvalidReference as exc:
        reason = str(exc).removeprefix(f"invalid image reference {name!r}: ")
        raise InvalidImageName(f"image name {name!r}: {reason}") from None


def familiar_name(name: str) -> str:
    """The short form Docker shows (``alpine:latest``, ``user/app:1``), for docker archives."""
    repository, tag, digest = split_name(name)
    if repository.startswith(f"{DEFAULT_REGISTRY}/"):
        repository = repository[len(DEFAULT_REGISTRY) + 1 :]
        if repository.startswith("library/") and repository.count("/") == 1:
            repository = repository[len("library/") :]
    return repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
