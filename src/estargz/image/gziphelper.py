"""Which program decompresses gzip source layers: an external helper, or the built-in inflate.

ctr-remote's ``--estargz-gzip-helper`` names pigz, igzip or gzip. A helper is used only when it
is installed and decompresses faster than zlib-ng in this process; the choice follows the
measurements of ``benchmarks/gzip_helper.py`` (docs/benchmarks.md), where only igzip wins:
pigz inflates on one thread (its other threads only read, write and check) and GNU gzip is
zlib's inflate without zlib-ng's speed-ups.
"""

from __future__ import annotations

import shutil

__all__ = ["GZIP_HELPERS", "GzipHelperChoice", "choose_gzip_helper"]

GZIP_HELPERS = ("pigz", "igzip", "gzip")

# helpers measured faster than the built-in inflate (docs/benchmarks.md)
_FASTER = frozenset({"igzip"})


class GzipHelperChoice:
    """The command to decompress with (None: the built-in inflate) and what to tell the user
    (empty when the helper is used as asked)."""

    __slots__ = ("command", "note")

    def __init__(self, command: tuple[str, ...] | None, note: str) -> None:
        self.command = command
        self.note = note


def choose_gzip_helper(name: str | None) -> GzipHelperChoice:
    """The decompressor for ``--estargz-gzip-helper name`` (None: none was asked for)."""
    if not name:
        return GzipHelperChoice(None, "")
    if name not in GZIP_HELPERS:
        raise ValueError(f"unknown gzip helper {name!r} (one of {', '.join(GZIP_HELPERS)})")
    path = shutil.which(name)
    if path is None:
        return GzipHelperChoice(
            None, f"{name} is not installed: gzip layers are decompressed by the built-in "
            "inflate (zlib-ng)")
    if name not in _FASTER:
        return GzipHelperChoice(
            None, f"{name} decompresses slower than the built-in inflate (zlib-ng), which is "
            "used instead (measurements: docs/benchmarks.md)")
    return GzipHelperChoice((path, "-d", "-c"), "")
