"""TOC JSON: encoding as the Go writer does it (field order, ``omitempty``) and strict decoding."""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from operator import attrgetter
from typing import Any

import msgspec
import orjson

from estargz.errors import InvalidTOC
from estargz.format.types import ENTRY_TYPES, MAX_DEVICE, MAX_ID, TOCEntry

__all__ = ["decode_toc", "encode_toc", "paused_gc", "toc_digest"]

# (python attribute, JSON name, kind) in the Go struct's order, so that our TOCs read like theirs.
_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("name", "name", str),
    ("type", "type", str),
    ("size", "size", int),
    ("modtime", "modtime", str),
    ("link_name", "linkName", str),
    ("mode", "mode", int),
    ("uid", "uid", int),
    ("gid", "gid", int),
    ("user_name", "userName", str),
    ("group_name", "groupName", str),
    ("offset", "offset", int),
    ("inner_offset", "innerOffset", int),
    ("dev_major", "devMajor", int),
    ("dev_minor", "devMinor", int),
    ("xattrs", "xattrs", dict),
    ("digest", "digest", str),
    ("chunk_offset", "chunkOffset", int),
    ("chunk_size", "chunkSize", int),
    ("chunk_digest", "chunkDigest", str),
)
_MAX_INT = (1 << 63) - 1
_LIMITS = {"uid": MAX_ID, "gid": MAX_ID, "devMajor": MAX_DEVICE, "devMinor": MAX_DEVICE}
"""Fields a system holds in fewer bits: larger values could only fail later, half-way."""
MAX_NAME_BYTES = 4095
"""Longest name or link target a POSIX system can use (PATH_MAX less its NUL)."""
MAX_COMPONENT_BYTES = 255
"""Longest single name component (NAME_MAX)."""


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: building thousands of objects in a row otherwise
    sets off collections of older generations, up to the whole heap, that cost more than the
    building itself; afterwards the new objects are looked at once.

    Collection only waits, it is not lost, and it comes back as it was. Threads that overlap
    need no coordination: one that found it paused leaves it to the one that paused it, so it
    may come back early, never stay off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def toc_digest(toc_json: bytes) -> str:
    """The TOC digest: sha256 over the exact JSON bytes."""
    return "sha256:" + hashlib.sha256(toc_json).hexdigest()


def _entry_to_dict(e: TOCEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"name": e.name, "type": e.type}
    for attr, json_name, _kind in _FIELDS[2:]:
        value = getattr(e, attr)
        if not value:
            continue
        if attr == "xattrs":
            value = {k: base64.b64encode(v).decode("ascii") for k, v in sorted(value.items())}
        out[json_name] = value
    return out


def encode_toc(entries: Iterable[TOCEntry]) -> bytes:
    """Serialise a TOC; zero fields are left out like Go's ``omitempty``."""
    doc = {"version": 1, "entries": [_entry_to_dict(e) for e in entries]}
    return orjson.dumps(doc)


def _check_int(value: Any, where: str, json_name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidTOC(f"{where}: field {json_name!r} must be an integer, got {value!r}")
    if value < 0 or value > _LIMITS.get(json_name, _MAX_INT):
        raise InvalidTOC(f"{where}: field {json_name!r} out of range: {value}")
    return value


def _check_path(value: str, where: str, what: str, components: bool) -> None:
    """A name or link target that no file system could hold is refused here, with its
    entry named, rather than failing half-way through an extraction or a mount."""
    if "\0" in value:
        raise InvalidTOC(f"{where}: {what} holds a NUL byte")
    if len(value) <= MAX_COMPONENT_BYTES and value.isascii():
        return  # (one byte a character: short enough)
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise InvalidTOC(f"{where}: {what} of {size} bytes is longer than {MAX_NAME_BYTES}")
    if components and size > MAX_COMPONENT_BYTES:
        for part in value.split("/"):
            if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
                raise InvalidTOC(f"{where}: {what} has a component longer than "
                                 f"{MAX_COMPONENT_BYTES} bytes")


def _check_strings(entry: TOCEntry, index: int) -> None:
    where = f"TOC entry #{index}"
    _check_path(entry.name, where, "name", components=True)
    where = f"TOC entry #{index} ({entry.name!r})"
    _check_path(entry.link_name, where, "linkName", components=entry.type == "hardlink")
    for key in entry.xattrs:
        if "\0" in key:
            raise InvalidTOC(f"{where}: xattr name {key!r} holds a NUL byte")


_KINDS = {json_name: kind for _attr, json_name, kind in _FIELDS}
_ATTRS = {json_name: attr for attr, json_name, _kind in _FIELDS}


def _decode_xattrs(value: Any, where: str) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise InvalidTOC(f"{where}: field 'xattrs' must be an object")
    xattrs: dict[str, bytes] = {}
    for key, b64 in value.items():
        if not isinstance(b64, str):
            raise InvalidTOC(f"{where}: xattr {key!r} is not base64 text")
        try:
            xattrs[key] = base64.b64decode(b64, validate=True)
        except binascii.Error as exc:
            raise InvalidTOC(f"{where}: xattr {key!r} is not valid base64") from exc
    return xattrs


def _decode_entry(raw: Any, index: int) -> TOCEntry:
    """One entry; the common case is a tight loop, errors are explained on a slow path."""
    if type(raw) is not dict:
        raise InvalidTOC(f"TOC entry #{index}: not a JSON object")
    kwargs: dict[str, Any] = {}
    for json_name, value in raw.items():
        kind: Any = _KINDS.get(json_name)
        if kind is None or value is None:
            continue  # unknown fields are tolerated, as Go's decoder does
        if type(value) is not kind or (
                kind is int and not 0 <= value <= _LIMITS.get(json_name, _MAX_INT)):
            where = f"TOC entry #{index} ({raw.get('name')!r})"
            if kind is int:
                _check_int(value, where, json_name)
            elif json_name == "name":
                raise InvalidTOC(f"TOC entry #{index}: missing or non-string 'name'")
            elif kind is str:
                raise InvalidTOC(f"{where}: field {json_name!r} must be a string")
            else:
                value = _decode_xattrs(value, where)
        elif kind is dict:
            value = _decode_xattrs(value, f"TOC entry #{index} ({raw.get('name')!r})")
        kwargs[_ATTRS[json_name]] = value
    name = kwargs.get("name")
    if name is None:
        raise InvalidTOC(f"TOC entry #{index}: missing or non-string 'name'")
    if kwargs.get("type") not in ENTRY_TYPES:
        raise InvalidTOC(f"TOC entry #{index} ({name!r}): unknown type {raw.get('type')!r}")
    entry = TOCEntry(**kwargs)
    _check_strings(entry, index)
    return entry


class _TOC(msgspec.Struct, gc=False):
    entries: list[TOCEntry] | None = None


_DECODER = msgspec.json.Decoder(_TOC)


def _decode_slowly(toc_json: bytes) -> list[TOCEntry]:
    """Entry by entry: tolerates nulls (Go's decoder ignores them) and names the first bad
    entry and field."""
    try:
        doc = orjson.loads(toc_json)
    except orjson.JSONDecodeError as exc:
        raise InvalidTOC(f"TOC is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidTOC("TOC is not a JSON object")
    raw_entries = doc.get("entries")
    if raw_entries is None:
        return []
    if not isinstance(raw_entries, list):
        raise InvalidTOC("TOC 'entries' is not an array")
    return [_decode_entry(raw, i) for i, raw in enumerate(raw_entries)]


def decode_toc(toc_json: bytes) -> list[TOCEntry]:
    """Parse and type-check a TOC; the semantic checks live in the reader's index.

    A well-formed TOC decodes in one pass in C, straight into entries (a third of the time
    of parsing to dicts and building entries from them); anything else (invalid JSON or
    field types, unknown entry types, nulls) is decoded again slowly, to be accepted as
    Go's decoder would or refused with the exact entry and field named.
    """
    with paused_gc():  # the parsed entries are thousands of new objects
        try:
            entries = _DECODER.decode(toc_json).entries
        except (msgspec.MsgspecError, UnicodeDecodeError):  # (not UTF-8: the latter)
            return _decode_slowly(toc_json)
        if entries is None:
            return []
        if not ENTRY_TYPES.issuperset({e.type for e in entries}) or b"\\u0000" in toc_json:
            return _decode_slowly(toc_json)  # (JSON writes a NUL as \u0000)
        _check_long_strings(entries, ascii_only=toc_json.isascii() and b"\\u" not in toc_json)
        return entries


def _check_long_strings(entries: list[TOCEntry], ascii_only: bool) -> None:
    """The length checks of :func:`_check_strings`, for the entries that could fail them: a
    name is at most 4 bytes a character, and exactly 1 when the TOC is all ASCII."""
    short = MAX_COMPONENT_BYTES if ascii_only else MAX_COMPONENT_BYTES // 4
    if max(map(len, map(_name_of, entries)), default=0) <= short and \
            max(map(len, map(_link_of, entries)), default=0) <= short:
        return
    for index, entry in enumerate(entries):
        if len(entry.name) > short or len(entry.link_name) > short:
            _check_strings(entry, index)


_name_of = attrgetter("name")
_link_of = attrgetter("link_name")
