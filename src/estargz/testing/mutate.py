"""Hypothesis strategies that damage valid inputs the ways hostile or broken ones differ.

Bytes: flipped, overwritten, inserted, cut out, truncated, and spliced from another seed. JSON
documents: any value replaced by one of another type, sign, size or encoding (a number where a
string was, a negative size, a string of 5,000 characters, a NUL, a lone surrogate, a nesting
deep enough to trouble a recursive parser).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

__all__ = ["json_mutated", "mutated"]

_ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63), 1.5, float("1e308"),
    "", "x" * 5000, "\x00", "a\x00b", "\udcff", "../../etc/passwd", "/abs", "é" * 200,
    [], {}, [[[[[[[[[[[]]]]]]]]]]], {"a": {"b": {"c": {}}}}, "sha256:" + "0" * 64, "sha256:",
]


@st.composite
def _byte_ops(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "cut", "truncate", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord('"'), ord("{")]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 512))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, max(len(other) - 1, 0)))
            data[at:] = other[start:]
    return bytes(data)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a value sits."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    holder = doc
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return doc


@st.composite
def _json_ops(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    doc = json.loads(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(_paths(doc)))
        value = draw(st.one_of(st.sampled_from(_ODD_VALUES), st.integers(), st.text(max_size=20)))
        doc = _replace(doc, where, copy.deepcopy(value))  # (the constants stay as they are)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def json_mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Seeds (JSON documents) with values changed in type, size, sign or encoding."""
    return _json_ops(seeds)


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Seeds damaged byte-wise (and, when they are JSON, value-wise), and arbitrary bytes."""
    strategies = [_byte_ops(seeds), st.binary(max_size=4096)]
    if all(_is_json(s) for s in seeds):
        strategies.append(_json_ops(seeds))
    return st.one_of(strategies)


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True
