"""The default JSON codec speaks RFC 8259 only, and decoding maps every bad frame to a close
code of SPEC 1.4 (1003, 1007, 1009), never to an exception that escapes.

Plain synchronous functions: no event loop needed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from wsrooms import CloseCode
from wsrooms._codec import MAX_JSON_DEPTH, Rejected, decode, dumps, encode, loads


def nested_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def text_frame(text: str) -> dict[str, Any]:
    return {"type": "websocket.receive", "text": text}


def binary_frame(data: bytes) -> dict[str, Any]:
    return {"type": "websocket.receive", "bytes": data}


# dumps ------------------------------------------------------------------------------------


def test_dumps_is_compact_and_keeps_unicode() -> None:
    """dumps writes compact JSON and leaves non-ASCII text as it is."""
    assert dumps({"a": [1, 2.5, None], "b": "é🎉"}) == '{"a":[1,2.5,null],"b":"é🎉"}'


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf"), {"x": [float("inf")]}]
)
def test_dumps_never_writes_nan_or_infinity(value: Any) -> None:
    """dumps refuses NaN and Infinity, which are not JSON, with a ValueError."""
    with pytest.raises(ValueError):
        dumps(value)


# loads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (
            '{"a":[1,2.5,-3e2,true,false,null],"b":"x"}',
            {"a": [1, 2.5, -300.0, True, False, None], "b": "x"},
        ),
        ('"tab\\tand \\u00e9"', "tab\tand é"),
        ('"\\ud83c\\udf89"', "🎉"),  # a surrogate pair, as json.dumps escapes an emoji
        ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, then plain text
        ("1e308", 1e308),
        ("-0.0", -0.0),
        ("12345678901234567890123456789", 12345678901234567890123456789),
        ('["[[[[", "{{{{"]', ["[[[[", "{{{{"]),
    ],
)
def test_loads_takes_rfc_8259_json(text: str, value: Any) -> None:
    """Ordinary JSON parses as the stdlib parses it, from text and from UTF-8 bytes."""
    assert loads(text) == value
    assert loads(text.encode("utf-8")) == value


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "[NaN,-Infinity]",
        '{"x":Infinity}',
        "-Infinity",
        "1e999",
        "-1e999",
        "[1," + "9" * 400 + ".5]",  # overflows a float without an exponent
        "1" * 5000,  # longer than Python's int-string limit
        '"\\ud800"',  # a lone high surrogate
        '{"\\udc00":1}',  # a lone low surrogate, in a key
        '"\\ud83c x"',
        "{'a': 1}",
        "",
        "[1,]",
    ],
)
def test_loads_rejects_what_is_not_json(text: str) -> None:
    """NaN, Infinity, overflowing numbers, lone surrogates and syntax errors are ValueError."""
    with pytest.raises(ValueError):
        loads(text)


def test_nesting_up_to_the_bound_parses() -> None:
    """Arrays and objects nested exactly MAX_JSON_DEPTH deep parse."""
    assert MAX_JSON_DEPTH >= 64
    assert loads(nested_arrays(MAX_JSON_DEPTH)) is not None
    assert loads(nested_objects(MAX_JSON_DEPTH)) is not None
    mixed = '[{"a":' * (MAX_JSON_DEPTH // 2) + "1" + "}]" * (MAX_JSON_DEPTH // 2)
    assert loads(mixed) is not None


@pytest.mark.parametrize(
    "text",
    [
        nested_arrays(MAX_JSON_DEPTH + 1),
        nested_objects(MAX_JSON_DEPTH + 1),
        nested_arrays(980),  # the probe's 1,960-byte message that gave 1011
        nested_objects(5000),
        "[" * 2000,  # unbalanced
        '[1, "x", ' * 300 + "]" * 300,  # deep with strings in between
    ],
)
def test_deeper_nesting_is_a_value_error_never_a_recursion_error(text: str) -> None:
    """Nesting beyond MAX_JSON_DEPTH is malformed JSON (ValueError), text or bytes."""
    with pytest.raises(ValueError, match="nested deeper"):
        loads(text)
    with pytest.raises(ValueError, match="nested deeper"):
        loads(text.encode())


def test_a_very_deep_message_fails_fast() -> None:
    """300,000 levels (600,000 bytes) fail quickly, in C, without recursing."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match="nested deeper"):
        loads(nested_arrays(300_000))
    assert time.perf_counter() - start < 5  # about 30 ms; generous for a loaded machine


def test_brackets_inside_strings_do_not_count() -> None:
    """A shallow document whose strings hold many brackets and escaped quotes parses."""
    text = json.dumps(["[" * 1000, '"{' * 500 + "\\", {"k": "]" * 300}])
    assert loads(text) == json.loads(text)


def test_brackets_in_an_unterminated_string_fail_quickly() -> None:
    """A never-closed string full of escaped quotes is scanned in linear time."""
    text = "[" * 300 + '"' + '\\"' * 200_000
    start = time.perf_counter()
    with pytest.raises(ValueError):
        loads(text)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "data",
    [
        b'"\xff"',  # not UTF-8
        b'"\xc3"',  # truncated sequence
        b'"\xed\xa0\x80"',  # an encoded surrogate
        '{"a":1}'.encode("utf-16"),  # the stdlib would sniff and accept UTF-16
        '{"a":1}'.encode("utf-32-le"),
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    ],
)
def test_bytes_must_be_utf_8(data: bytes) -> None:
    """Bytes are decoded as strict UTF-8: anything else is a ValueError."""
    with pytest.raises(ValueError):
        loads(data)


def test_what_loads_returns_can_be_sent_on() -> None:
    """Whatever loads accepts, dumps can write again as UTF-8 text."""
    for text in ['[1.5,"\\ud83c\\udf89",{"a":null}]', nested_arrays(MAX_JSON_DEPTH), "1e308"]:
        dumps(loads(text)).encode("utf-8")


# decode -----------------------------------------------------------------------------------

TOO_BIG = (CloseCode.MESSAGE_TOO_BIG, "message too big")
INVALID_JSON = (CloseCode.INVALID_DATA, "invalid JSON")
WANT_BINARY = (CloseCode.UNSUPPORTED_DATA, "binary frames expected")
WANT_TEXT = (CloseCode.UNSUPPORTED_DATA, "text frames expected")


def outcome(message: dict[str, Any], encoding: Any, max_size: int = 100) -> Any:
    try:
        return decode(message, encoding, loads, max_size)
    except Rejected as exc:
        return (exc.code, exc.reason)


@pytest.mark.parametrize(
    ("message", "encoding", "expected"),
    [
        (text_frame('{"a":1}'), "json", {"a": 1}),
        (binary_frame(b'{"a":1}'), "json", {"a": 1}),
        (text_frame("hi"), "text", "hi"),
        (binary_frame(b"\x00\xff"), "bytes", b"\x00\xff"),
        (text_frame("hi"), "bytes", WANT_BINARY),
        (binary_frame(b"hi"), "text", WANT_TEXT),
        (text_frame("{"), "json", INVALID_JSON),
        (binary_frame(b'"\xff"'), "json", INVALID_JSON),
        (binary_frame(b"\xff\xfe"), "json", INVALID_JSON),
        (text_frame("[NaN,-Infinity]"), "json", INVALID_JSON),
        (text_frame('{"x":Infinity}'), "json", INVALID_JSON),
        (text_frame("1e999"), "json", INVALID_JSON),
        (binary_frame(nested_arrays(980).encode()), "json", INVALID_JSON),
        (text_frame(nested_objects(5000)), "json", INVALID_JSON),
        ({"type": "websocket.receive"}, "bytes", b""),  # neither key: empty bytes
        ({"type": "websocket.receive", "text": None, "bytes": None}, "bytes", b""),
        ({"type": "websocket.receive", "text": None, "bytes": b"[]"}, "json", []),
        ({"type": "websocket.receive"}, "json", INVALID_JSON),
        ({"type": "websocket.receive"}, "text", WANT_TEXT),
    ],
)
def test_decode(message: dict[str, Any], encoding: Any, expected: Any) -> None:
    """Each frame type and encoding gives the handler's data or its close code and reason."""
    assert outcome(message, encoding, max_size=1_000_000) == expected


@pytest.mark.parametrize("encoding", ["json", "text", "bytes", None])
def test_decode_checks_size_first(encoding: Any) -> None:
    """Over max_size is 1009 whatever the encoding and frame type."""
    assert outcome(text_frame('"' + "x" * 99 + '"'), encoding, max_size=100) == TOO_BIG
    assert outcome(binary_frame(b"x" * 101), encoding, max_size=100) == TOO_BIG


def test_size_counts_characters_of_text_and_bytes_of_binary() -> None:
    """A text frame is measured in characters, a binary frame in bytes."""
    text = '"' + "é" * 98 + '"'  # 100 characters, 198 bytes in UTF-8
    assert outcome(text_frame(text), "json", max_size=100) == "é" * 98
    assert outcome(binary_frame(text.encode()), "json", max_size=100) == TOO_BIG
    assert outcome(binary_frame(text.encode()), "json", max_size=198) == "é" * 98


def test_decode_with_no_encoding_returns_the_message() -> None:
    """encoding=None hands the raw ASGI message on, text or bytes."""
    for message in (text_frame("x"), binary_frame(b"x"), {"type": "websocket.receive"}):
        assert decode(message, None, loads, 10) is message


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        KeyError("k"),
        TypeError("t"),
        RecursionError(),
        UnicodeDecodeError("utf-8", b"", 0, 1, "x"),
        Exception(),
    ],
)
def test_any_error_of_a_user_loads_is_invalid_json(error: Exception) -> None:
    """Whatever a plugged-in json_loads raises on client input is 1007, never a 1011."""

    def user_loads(data: str | bytes) -> Any:
        raise error

    for message in (text_frame("1"), binary_frame(b"1")):
        with pytest.raises(Rejected) as rejected:
            decode(message, "json", user_loads, 100)
        assert (rejected.value.code, rejected.value.reason) == INVALID_JSON


def test_a_user_loads_gets_the_frame_as_received() -> None:
    """A plugged-in json_loads gets str for a text frame and bytes for a binary one."""
    seen: list[Any] = []

    def user_loads(data: str | bytes) -> Any:
        seen.append(data)
        return 1

    decode(text_frame("1"), "json", user_loads, 100)
    decode(binary_frame(b"1"), "json", user_loads, 100)
    assert seen == ["1", b"1"]


def test_rejected_carries_code_and_reason() -> None:
    """Rejected exposes the close code and the fixed reason."""
    exc = Rejected(CloseCode.INVALID_DATA, "invalid JSON")
    assert (exc.code, exc.reason) == (1007, "invalid JSON")
    assert str(exc) == "1007 invalid JSON"


# encode -----------------------------------------------------------------------------------


def test_encode_frames() -> None:
    """str is a text frame, bytes-like a binary frame, anything else JSON text."""
    assert encode("x", dumps) == {"type": "websocket.send", "text": "x"}
    assert encode(bytearray(b"x"), dumps) == {"type": "websocket.send", "bytes": b"x"}
    assert encode({"a": 1}, lambda o: b'{"a":1}') == {"type": "websocket.send", "text": '{"a":1}'}
