"""Typed OCI documents: descriptor, platform, manifest, index.

Parsing keeps fields this code does not model (``extra``), so a document read and written back
loses nothing. Documents that are not changed are never re-serialised: their original bytes are
what is stored and pushed, so their digests stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from estargz.digest import parse_digest, sha256_digest
from estargz.errors import FormatError, InvalidPlatform
from estargz.image.mediatypes import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST

__all__ = [
    "Descriptor",
    "Index",
    "InvalidDocument",
    "Manifest",
    "Platform",
    "dumps",
    "loads",
    "parse_document",
]


class InvalidDocument(FormatError):
    """A manifest, index or config that is not valid JSON of the expected shape."""


def dumps(doc: dict[str, Any]) -> bytes:
    """Serialise a document we create (compact, stable key order as given)."""
    return orjson.dumps(doc)


def loads(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidDocument(f"{what}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidDocument(f"{what}: not a JSON object")
    return doc


def _str(doc: dict[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise InvalidDocument(f"{what}: field {key!r} must be a string")
    return value


def _annotations(doc: dict[str, Any], what: str) -> dict[str, str]:
    """The ``annotations`` of a descriptor, manifest or index: strings to strings, or refused."""
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise InvalidDocument(f"{what}: annotations must map strings to strings")
    return dict(annotations)


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]`` as in ``--platform linux/arm64/v8``."""
        parts = text.strip().split("/")
        if len(parts) < 2 or not all(parts):
            raise InvalidPlatform(f"platform {text!r} is not os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else "")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Platform:
        return cls(
            str(doc.get("os", "")),
            str(doc.get("architecture", "")),
            str(doc.get("variant", "")),
            str(doc.get("os.version", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, other: Platform) -> bool:
        """Whether an image for ``other`` satisfies a request for ``self``."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or not other.variant or self.variant == other.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, media_type: str, data: bytes, **kw: Any) -> Descriptor:
        return cls(media_type, sha256_digest(data), len(data), **kw)

    @classmethod
    def from_dict(cls, doc: Any, what: str = "descriptor") -> Descriptor:
        if not isinstance(doc, dict):
            raise InvalidDocument(f"{what}: not a JSON object")
        digest = _str(doc, "digest", what)
        try:
            parse_digest(digest)
        except ValueError as exc:
            raise InvalidDocument(f"{what}: {exc}") from None
        size = doc.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidDocument(f"{what}: field 'size' must be a non-negative integer")
        platform = doc.get("platform")
        known = {"mediaType", "digest", "size", "annotations", "platform"}
        return cls(
            media_type=_str(doc, "mediaType", what, ""),
            digest=digest,
            size=size,
            annotations=_annotations(doc, what),
            platform=Platform.from_dict(platform) if isinstance(platform, dict) else None,
            extra={k: v for k, v in doc.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        out.update(self.extra)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        return out

    def with_annotations(self, **updates: str) -> Descriptor:
        return replace(self, annotations={**self.annotations, **updates})


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2)."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], what: str = "manifest") -> Manifest:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidDocument(f"{what}: 'layers' must be an array")
        known = {"schemaVersion", "mediaType", "config", "layers", "annotations"}
        return cls(
            media_type=_str(doc, "mediaType", what, OCI_MANIFEST),
            config=Descriptor.from_dict(doc.get("config"), f"{what} config"),
            layers=[Descriptor.from_dict(d, f"{what} layer {i}") for i, d in enumerate(layers)],
            annotations=_annotations(doc, what),
            extra={k: v for k, v in doc.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [d.to_dict() for d in self.layers],
        }
        out.update(self.extra)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class Index:
    """An image index (OCI) or manifest list (Docker)."""

    media_type: str
    manifests: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], what: str = "index") -> Index:
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise InvalidDocument(f"{what}: 'manifests' must be an array")
        known = {"schemaVersion", "mediaType", "manifests", "annotations"}
        return cls(
            media_type=_str(doc, "mediaType", what, OCI_INDEX),
            manifests=[
                Descriptor.from_dict(d, f"{what} entry {i}") for i, d in enumerate(manifests)
            ],
            annotations=_annotations(doc, what),
            extra={k: v for k, v in doc.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [d.to_dict() for d in self.manifests],
        }
        out.update(self.extra)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return dumps(self.to_dict())


def parse_document(data: bytes, media_type: str = "", what: str = "document") -> Manifest | Index:
    """A manifest or an index, told apart by media type (given or in the JSON) or by shape."""
    doc = loads(data, what)
    kind = _str(doc, "mediaType", what, "") or media_type
    if kind in INDEX_TYPES or (not kind and "manifests" in doc):
        return Index.from_dict(doc, what)
    if kind in MANIFEST_TYPES or (not kind and "layers" in doc):
        return Manifest.from_dict(doc, what)
    raise InvalidDocument(f"{what}: unsupported media type {kind!r}")
