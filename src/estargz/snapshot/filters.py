"""containerd's List filters over snapshot records: ``name==x``, ``labels."k"==v``, ``parent``.

A filter is selectors joined by commas, all of which must hold; a record is listed when any of
the request's filters holds (none: all records). A selector is a field path (``name``,
``parent``, ``kind``, ``labels.KEY``; parts may be double-quoted) and optionally an operator
(``==``, ``!=``, ``~=`` for a regular expression) with a value (bare or double-quoted). A bare
field path asks that the field be present and non-empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from estargz.snapshot.metadata import SnapshotError, SnapshotInfo

__all__ = ["compile_filters"]

_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|(==|!=|~=)|([,.])|([^\s",.=!~]+))')
Predicate = Callable[[SnapshotInfo], bool]


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SnapshotError(f"filter {text!r}: cannot parse at {text[pos:]!r}")
        quoted, op, sep, word = m.groups()
        if quoted is not None:
            out.append(("word", re.sub(r"\\(.)", r"\1", quoted)))
        elif op:
            out.append(("op", op))
        elif sep:
            out.append(("sep", sep))
        else:
            out.append(("word", word))
        pos = m.end()
    return out


def _field(info: SnapshotInfo, path: list[str]) -> str | None:
    if path == ["name"]:
        return info.key
    if path == ["parent"]:
        return info.parent
    if path == ["kind"]:
        return info.kind.name.lower()
    if len(path) >= 2 and path[0] == "labels":
        return info.labels.get(".".join(path[1:]))
    return None


def _selector(tokens: list[tuple[str, str]]) -> Predicate:
    path: list[str] = []
    i = 0
    while i < len(tokens) and tokens[i][0] != "op":
        kind, text = tokens[i]
        if kind == "word":
            path.append(text)
        elif text != ".":
            raise SnapshotError(f"filter: unexpected {text!r}")
        i += 1
    if not path:
        raise SnapshotError("filter: a selector needs a field")
    if i == len(tokens):
        return lambda info: bool(_field(info, path))
    op = tokens[i][1]
    value = "".join(t for _, t in tokens[i + 1:])
    if op == "==":
        return lambda info: _field(info, path) == value
    if op == "!=":
        return lambda info: _field(info, path) != value
    pattern = re.compile(value)
    return lambda info: bool(pattern.search(_field(info, path) or ""))


def _conjunction(text: str) -> Predicate:
    parts: list[list[tuple[str, str]]] = [[]]
    for token in _tokens(text):
        if token == ("sep", ","):
            parts.append([])
        else:
            parts[-1].append(token)
    selectors = [_selector(p) for p in parts if p]
    return lambda info: all(s(info) for s in selectors)


def compile_filters(filters: list[str]) -> Predicate:
    """One predicate for a List request's filters (raises SnapshotError if one cannot parse)."""
    alternatives = [_conjunction(f) for f in filters if f.strip()]
    if not alternatives:
        return lambda info: True
    return lambda info: any(a(info) for a in alternatives)
