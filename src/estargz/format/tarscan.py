"""Index an uncompressed tar without reading payloads: where each member's header and data lie.

The writer copies header bytes as they are (so metadata the TOC does not model survives) and
reads payloads with positional reads, so the scan keeps offsets, not data.
"""

from __future__ import annotations

import base64
import binascii
import tarfile
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from estargz.errors import InvalidTar
from estargz.format.types import TOCEntry

__all__ = ["TarMember", "clean_name", "entry_for", "json_safe", "scan_tar"]

_TYPES = {
    tarfile.REGTYPE: "reg",
    tarfile.AREGTYPE: "reg",
    tarfile.CONTTYPE: "reg",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class TarMember:
    """One tar member: its parsed header and where its bytes are in the source."""

    info: tarfile.TarInfo
    type: str
    header_start: int
    data_start: int
    end: int
    """Offset of the next member's first header byte (payload padding included)."""
    header_is_raw: bool
    """False when a global PAX header precedes it: its own header bytes are then incomplete."""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def payload_size(self) -> int:
        return self.info.size if self.type == "reg" else 0


def clean_name(name: str) -> str:
    """Normalise a tar or TOC name the way the Go reader does: rooted, cleaned, no leading '/'."""
    if name.startswith("./"):
        name = name[2:]  # "./etc/passwd", as `tar -C dir .` writes names
    if (name and name[0] not in "./" and name[-1] != "/" and "//" not in name
            and "/." not in name):
        return name  # already clean: the common case, checked without splitting
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def json_safe(text: str) -> str:
    """Names from tar may hold bytes that are not UTF-8; JSON cannot, so replace them as Go does."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _modtime(mtime: float) -> str:
    seconds = int(mtime + 0.5) if mtime >= 0 else -int(-mtime + 0.5)
    if seconds == 0:
        return ""
    try:
        return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError:
        return ""


def _xattrs(info: tarfile.TarInfo) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out[key[len("SCHILY.xattr.") :]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :])
            try:
                out.setdefault(name, base64.b64decode(value + "=" * (-len(value) % 4)))
            except (binascii.Error, ValueError):
                continue
    return out


def entry_for(member: TarMember) -> TOCEntry:
    """The TOC entry the Go writer would make for this member (offsets and digests left 0)."""
    info = member.info
    entry = TOCEntry(
        name=json_safe(info.name + ("/" if member.type == "dir" else "")),
        type=member.type,
        modtime=_modtime(info.mtime),
        mode=info.mode,
        uid=info.uid,
        gid=info.gid,
        xattrs=_xattrs(info),
    )
    if member.type == "reg":
        entry.size = info.size
    elif member.type in ("symlink", "hardlink"):
        entry.link_name = json_safe(info.linkname)
    elif member.type in ("char", "block"):
        entry.dev_major = info.devmajor
        entry.dev_minor = info.devminor
    # user/group names are filled by the writer, which knows the previous ones
    return entry


def scan_tar(fileobj: BinaryIO, size: int) -> tuple[list[TarMember], int]:
    """List the members of the tar in ``fileobj`` (seekable, ``size`` bytes long).

    Returns the members in archive order and the offset just past the last one (where the
    end-of-archive blocks, if any, begin).
    """
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r:", errorlevel=2)  # noqa: SIM115
    except tarfile.ReadError as exc:
        if size == 0 or _all_zero(fileobj, size):
            return [], 0
        raise InvalidTar(f"input is not a tar archive: {exc}") from exc
    members: list[TarMember] = []
    prev_end = 0
    raw_ok = True
    try:
        while True:
            info = tf.next()
            if info is None:
                break
            if info.offset != prev_end:
                raw_ok = False  # a global PAX header sat between: re-encode from here on
            kind = _TYPES.get(info.type)
            if kind is None or info.issparse():
                what = "GNU sparse file" if info.issparse() else f"type {info.type!r}"
                raise InvalidTar(f"{info.name!r}: unsupported tar entry ({what})")
            data_len = info.size if kind == "reg" else 0
            end = tf.offset
            if info.offset_data + data_len > size:
                raise InvalidTar(
                    f"{info.name!r}: payload of {data_len} bytes at offset {info.offset_data} "
                    f"runs past the end of the tar ({size} bytes): truncated input"
                )
            members.append(TarMember(info, kind, info.offset, info.offset_data, end, raw_ok))
            prev_end = end
        _check_end(fileobj, tf.offset, size)
    except tarfile.ReadError as exc:
        raise InvalidTar(f"malformed tar header after offset {prev_end}: {exc}") from exc
    finally:
        tf.members = []  # type: ignore[attr-defined]
    return members, prev_end


def _check_end(fileobj: BinaryIO, stop: int, size: int) -> None:
    """tarfile ends quietly at a cut or corrupt header; refuse that instead of dropping files.

    What follows the last member must be nothing (a tar without end blocks) or zero blocks.
    """
    if stop >= size:
        return
    fileobj.seek(stop)
    block = fileobj.read(tarfile.BLOCKSIZE)
    if not block.strip(b"\0"):
        return
    if len(block) < tarfile.BLOCKSIZE:
        raise InvalidTar(
            f"tar header at offset {stop} is cut short ({len(block)} of {tarfile.BLOCKSIZE} "
            "bytes): truncated input"
        )
    raise InvalidTar(f"invalid tar header at offset {stop} (bad checksum): corrupt input")


def _all_zero(fileobj: BinaryIO, size: int) -> bool:
    fileobj.seek(0)
    return size <= 1 << 20 and not fileobj.read(size).strip(b"\x00")
