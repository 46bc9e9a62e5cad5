"""TOC JSON: Go's field names and ``omitempty``, base64 xattrs, and strict type checks on decode."""

from __future__ import annotations

import gc
import hashlib
import json
import random
import threading
from typing import Any

import msgspec
import pytest

from estargz.errors import InvalidTOC
from estargz.format import TOCEntry, decode_toc, encode_toc, toc, toc_digest
from estargz.format.toc import _decode_slowly, paused_gc

GO_FIELD_ORDER = [
    "name", "type", "size", "modtime", "linkName", "mode", "uid", "gid", "userName",
    "groupName", "offset", "innerOffset", "devMajor", "devMinor", "xattrs", "digest",
    "chunkOffset", "chunkSize", "chunkDigest",
]


def full_entry() -> TOCEntry:
    return TOCEntry(
        name="usr/bin/tool",
        type="reg",
        size=10,
        modtime="2023-11-14T22:13:20Z",
        link_name="target",
        mode=0o4755,
        uid=1000,
        gid=1001,
        user_name="alice",
        group_name="staff",
        dev_major=8,
        dev_minor=1,
        xattrs={"user.b": b"\x00\xff", "security.capability": b"cap"},
        digest="sha256:" + "a" * 64,
        offset=512,
        inner_offset=1024,
        chunk_offset=4096,
        chunk_size=8192,
        chunk_digest="sha256:" + "b" * 64,
    )


def _doc(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    assert isinstance(doc, dict)
    return doc


def test_zero_fields_are_omitted() -> None:
    doc = _doc(encode_toc([TOCEntry(name="a/", type="dir"), TOCEntry(name="f", type="reg")]))
    assert doc == {
        "version": 1,
        "entries": [{"name": "a/", "type": "dir"}, {"name": "f", "type": "reg"}],
    }


def test_field_names_and_order_are_go_ones() -> None:
    doc = _doc(encode_toc([full_entry()]))
    (raw,) = doc["entries"]
    assert list(raw) == GO_FIELD_ORDER
    assert raw["linkName"] == "target"
    assert raw["userName"] == "alice"
    assert raw["groupName"] == "staff"
    assert raw["innerOffset"] == 1024
    assert raw["chunkOffset"] == 4096
    assert raw["chunkSize"] == 8192
    assert raw["devMajor"] == 8
    assert raw["mode"] == 0o4755


def test_xattrs_are_base64_and_sorted() -> None:
    (raw,) = _doc(encode_toc([full_entry()]))["entries"]
    assert raw["xattrs"] == {"security.capability": "Y2Fw", "user.b": "AP8="}
    assert list(raw["xattrs"]) == ["security.capability", "user.b"]


def test_round_trip() -> None:
    entries = [
        full_entry(),
        TOCEntry(name="usr/bin/tool", type="chunk", offset=600, chunk_offset=8192,
                 chunk_digest="sha256:" + "c" * 64),
        TOCEntry(name="dev/null", type="char", dev_major=1, dev_minor=3, mode=0o666),
        TOCEntry(name="link", type="symlink", link_name="usr/bin/tool"),
        TOCEntry(name="p", type="fifo"),
    ]
    assert decode_toc(encode_toc(entries)) == entries


def test_digest_is_sha256_of_exact_bytes() -> None:
    data = encode_toc([full_entry()])
    assert toc_digest(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert toc_digest(data + b" ") != toc_digest(data)


def test_go_style_indented_toc_decodes() -> None:
    text = (
        '{\n\t"version": 1,\n\t"entries": [\n\t\t{\n\t\t\t"name": "a",\n\t\t\t"type": "reg",'
        '\n\t\t\t"size": 3,\n\t\t\t"xattrs": {"user.x": "eXk="}\n\t\t}\n\t]\n}'
    )
    (entry,) = decode_toc(text.encode())
    assert entry == TOCEntry(name="a", type="reg", size=3, xattrs={"user.x": b"yy"})


def test_unknown_fields_and_nulls_are_tolerated() -> None:
    data = json.dumps({
        "version": 1,
        "future": [1, 2],
        "entries": [{"name": "a", "type": "reg", "size": 2, "numLink": 3, "nested": {"x": 1},
                     "linkName": None}],
    }).encode()
    assert decode_toc(data) == [TOCEntry(name="a", type="reg", size=2)]


def test_missing_entries_is_an_empty_toc() -> None:
    assert decode_toc(b'{"version": 1}') == []
    assert decode_toc(b'{"version": 1, "entries": null}') == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "TOC is not valid JSON"),
        (b"", "TOC is not valid JSON"),
        (b"[]", "TOC is not a JSON object"),
        (b"42", "TOC is not a JSON object"),
        (b'"x"', "TOC is not a JSON object"),
        (b'{"entries": {}}', "TOC 'entries' is not an array"),
        (b'{"entries": "a"}', "TOC 'entries' is not an array"),
    ],
)
def test_document_shape_is_checked(data: bytes, message: str) -> None:
    with pytest.raises(InvalidTOC, match=message):
        decode_toc(data)


def _one(raw: Any) -> bytes:
    return json.dumps({"version": 1, "entries": [{"name": "ok", "type": "dir"}, raw]}).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (1, r"TOC entry #1: not a JSON object"),
        ([], r"TOC entry #1: not a JSON object"),
        ({"type": "reg"}, r"TOC entry #1: missing or non-string 'name'"),
        ({"name": 5, "type": "reg"}, r"TOC entry #1: missing or non-string 'name'"),
        ({"name": "f"}, r"TOC entry #1 \('f'\): unknown type None"),
        ({"name": "f", "type": "socket"}, r"TOC entry #1 \('f'\): unknown type 'socket'"),
        ({"name": "f", "type": "REG"}, r"unknown type 'REG'"),
        ({"name": "f", "type": "reg", "size": "12"}, r"\('f'\): field 'size' must be an integer"),
        ({"name": "f", "type": "reg", "size": 1.5}, r"field 'size' must be an integer"),
        ({"name": "f", "type": "reg", "size": True}, r"field 'size' must be an integer"),
        ({"name": "f", "type": "reg", "size": -1}, r"\('f'\): field 'size' out of range: -1"),
        ({"name": "f", "type": "reg", "offset": -5}, r"field 'offset' out of range: -5"),
        ({"name": "f", "type": "reg", "innerOffset": -1}, r"field 'innerOffset' out of range"),
        ({"name": "f", "type": "reg", "chunkSize": -1}, r"field 'chunkSize' out of range"),
        ({"name": "f", "type": "reg", "uid": -1}, r"field 'uid' out of range"),
        ({"name": "f", "type": "reg", "mode": 1 << 63}, r"field 'mode' out of range"),
        ({"name": "f", "type": "reg", "modtime": 0}, r"field 'modtime' must be a string"),
        ({"name": "f", "type": "reg", "digest": ["x"]}, r"field 'digest' must be a string"),
        ({"name": "f", "type": "symlink", "linkName": 1}, r"field 'linkName' must be a string"),
        ({"name": "f", "type": "reg", "xattrs": ["a"]}, r"field 'xattrs' must be an object"),
        ({"name": "f", "type": "reg", "xattrs": {"user.a": 1}}, r"xattr 'user.a' is not base64"),
        ({"name": "f", "type": "reg", "xattrs": {"user.a": "!!"}}, r"'user.a' is not valid base64"),
    ],
)
def test_entries_are_type_checked(raw: Any, message: str) -> None:
    with pytest.raises(InvalidTOC, match=message):
        decode_toc(_one(raw))


def test_largest_int_is_accepted() -> None:
    (_, entry) = decode_toc(_one({"name": "f", "type": "reg", "size": (1 << 63) - 1}))
    assert entry.size == (1 << 63) - 1


# --- the fast decoder against the slow one, and the collector paused meanwhile --------------


def test_entries_of_many_key_sets_decode_in_toc_order() -> None:
    raws: list[dict[str, Any]] = [
        {"name": "d/", "type": "dir", "mode": 0o755},
        {"name": "d/f", "type": "reg", "size": 3, "offset": 10, "chunkDigest": "sha256:f"},
        {"name": "d/l", "type": "symlink", "linkName": "f"},
        {"name": "d/g", "type": "reg", "size": 4, "offset": 20, "chunkDigest": "sha256:g"},
        {"name": "d/n", "type": "reg", "size": None, "future": 1},  # tolerated, one by one
        {"name": "d/x", "type": "reg", "xattrs": {"user.a": "eXk="}},
    ]
    entries = decode_toc(json.dumps({"version": 1, "entries": raws}).encode())
    assert entries == [
        TOCEntry(name="d/", type="dir", mode=0o755),
        TOCEntry(name="d/f", type="reg", size=3, offset=10, chunk_digest="sha256:f"),
        TOCEntry(name="d/l", type="symlink", link_name="f"),
        TOCEntry(name="d/g", type="reg", size=4, offset=20, chunk_digest="sha256:g"),
        TOCEntry(name="d/n", type="reg"),
        TOCEntry(name="d/x", type="reg", xattrs={"user.a": b"yy"}),
    ]
    assert len({id(e.xattrs) for e in entries}) == len(entries)  # each its own, as by default


_ODD_VALUES = [
    None, True, False, 0, 1, -1, 1.0, 1.5, 1e30, (1 << 63) - 1, 1 << 63, 1 << 64, -(1 << 63),
    "", "x", "12", "YQ==", "YQ", "Y Q==", "YQ==\n", "-_8=", "AA==AA==", "\u00e9", "\ud800",
    [], ["a"], {}, {"user.a": "YQ=="}, {"user.a": "!!"}, {"user.a": None}, {"user.a": 1},
    {"": ""}, "reg", "dir", "chunk", "socket",
]
_KEYS = [*GO_FIELD_ORDER, "future", "Name", "SIZE", "chunk_digest"]
_SOUND: dict[str, Any] = {
    "name": "a/b", "type": "symlink", "modtime": "2023-11-14T22:13:20Z", "linkName": "a",
    "userName": "u", "groupName": "g", "digest": "sha256:00", "chunkDigest": "sha256:11",
    "xattrs": {"user.a": "YQ==", "trusted.b": ""}, "future": {"x": [1, None]},
}


def _random_toc(rng: random.Random) -> bytes:
    """A TOC as JSON text, mostly sound, with odd values, keys and bytes mixed in: duplicate
    keys, escapes, invalid UTF-8 and broken documents, which Python's json cannot write."""
    entries = []
    for _ in range(rng.randrange(6)):
        fields = {"name": f"f{rng.randrange(3)}", "type": rng.choice(["reg", "dir", "chunk"])}
        for _ in range(rng.randrange(5)):
            key = rng.choice(_KEYS)
            fields[key] = rng.choice(_ODD_VALUES) if rng.random() < 0.2 else _SOUND.get(
                key, rng.randrange(1 << 20))
        text = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}"
                         for k, v in fields.items())
        if rng.random() < 0.1:
            text += f', "{rng.choice(_KEYS)}": {json.dumps(rng.choice(_ODD_VALUES))}'  # twice
        entries.append("{" + text + "}" if rng.random() < 0.95 else json.dumps(
            rng.choice(_ODD_VALUES)))
    body = "[" + ", ".join(entries) + "]"
    doc = rng.choice([f'{{"version": 1, "entries": {body}}}', f'{{"entries": {body}, "x": 2}}',
                      body, '{"entries": null}', f'{{"entries": {body}'])
    data = doc.encode()
    if rng.random() < 0.05:
        data = data.replace(b"f1", b"f\xff", 1)  # not UTF-8
    if rng.random() < 0.05:
        data = data.replace(b'"f0"', b'"\\ud800"', 1)  # a lone surrogate, escaped
    return data


def _outcome(decode: Any, data: bytes) -> list[TOCEntry] | str:
    try:
        return list(decode(data))
    except InvalidTOC as exc:
        return f"refused: {exc}"


def test_fast_decoding_accepts_and_refuses_what_the_slow_one_does() -> None:
    """decode_toc decodes in C and falls back to the slow, explaining decoder on any doubt:
    the two must agree on every document, sound or not."""
    rng = random.Random(20261127)
    accepted = fast_path = 0
    for _ in range(20_000):
        data = _random_toc(rng)
        fast, slow = _outcome(decode_toc, data), _outcome(_decode_slowly, data)
        assert fast == slow, data
        accepted += isinstance(fast, list) and bool(fast)
        try:
            toc._DECODER.decode(data)
            fast_path += 1
        except (msgspec.MsgspecError, UnicodeDecodeError):
            pass
    assert accepted > 1500 and fast_path > 5000  # neither all refused nor all slow


def test_the_first_bad_entry_is_named_whichever_batch_it_is_in() -> None:
    raws = [
        {"name": "a", "type": "reg", "size": 1},
        {"name": "b", "type": "dir", "mode": -1},
        {"name": "c", "type": "reg", "size": -2},  # same keys as #0, so checked first
    ]
    with pytest.raises(InvalidTOC, match=r"TOC entry #1 \('b'\): field 'mode' out of range"):
        decode_toc(json.dumps({"version": 1, "entries": raws}).encode())


def test_paused_gc_gives_the_collector_back_as_it_was() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with paused_gc():
            assert not gc.isenabled()
            with paused_gc():
                pass
            assert not gc.isenabled()  # the outer one is still building
        assert gc.isenabled()
        with pytest.raises(ValueError), paused_gc():
            raise ValueError
        assert gc.isenabled()
        gc.disable()
        with paused_gc():
            pass
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        (gc.enable if was else gc.disable)()


def test_paused_gc_in_overlapping_threads_never_leaves_the_collector_off() -> None:
    was = gc.isenabled()
    gc.enable()
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with paused_gc():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    try:
        with paused_gc():
            thread.start()
            assert inside.wait(10)
        leave.set()
        thread.join(10)
        assert gc.isenabled()
    finally:
        leave.set()
        (gc.enable if was else gc.disable)()
