"""Command-line values with units: sizes (``64K``, ``4G``), durations in seconds, counts."""

from __future__ import annotations

import argparse

__all__ = ["parse_count", "parse_seconds", "parse_size"]


def parse_size(text: str) -> int:
    """Sizes accept a plain byte count or a K/M/G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    given = text
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(number) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {given!r} (bytes, or with a unit: 64K, 4M, 1G)") from None
    if value < 0:
        raise argparse.ArgumentTypeError("sizes cannot be negative")
    return value


def parse_seconds(text: str) -> float:
    """A positive number of seconds (fractions allowed)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


def parse_count(text: str) -> int:
    """A whole number, zero or more (workers, concurrent transfers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a count cannot be negative")
    return value
