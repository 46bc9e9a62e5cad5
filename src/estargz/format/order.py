"""Which tar members go into the blob, and in what order.

Rules of the Go builder, kept: a name seen twice keeps only its last member, at the last
position; landmarks and TOCs already in the input are dropped (they are written anew);
prioritized files come first, each preceded by its parent directories and, for a hardlink, by
its target. One rule improved: a parent directory that has no entry in the tar is not an error
(the Go builder refuses such tars, although they are common).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from estargz.errors import BuildError
from estargz.format.tarscan import TarMember, clean_name
from estargz.format.types import LANDMARK_NAMES, TOC_TAR_NAME

__all__ = ["Ordering", "order_members"]


@dataclass(slots=True)
class Ordering:
    prioritized: list[TarMember]
    rest: list[TarMember]
    missed: list[str]


def _ancestors(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts))]  # "", "a", "a/b", ... (not name)


def order_members(
    members: Iterable[TarMember], prioritized: Iterable[str], *, allow_missing: bool
) -> Ordering:
    pending: dict[str, TarMember] = {}
    for m in members:
        key = clean_name(m.name)
        if key in LANDMARK_NAMES or key == TOC_TAR_NAME:
            continue
        pending.pop(key, None)  # last one wins, at its own position
        pending[key] = m
    moved: dict[str, TarMember] = {}

    def take(key: str) -> None:
        m = pending.pop(key, None)
        if m is None:
            return
        if m.type == "hardlink":
            target = clean_name(m.info.linkname)
            for parent in _ancestors(target):
                take(parent)
            take(target)
        moved[key] = m

    missed: list[str] = []
    for wanted in prioritized:
        key = clean_name(wanted)
        if key not in pending and key not in moved:
            if not allow_missing:
                raise BuildError(f"prioritized file {wanted!r} is not in the input tar")
            missed.append(wanted)
            continue
        for parent in _ancestors(key) if key else []:
            take(parent)
        take(key)
    return Ordering(list(moved.values()), list(pending.values()), missed)
