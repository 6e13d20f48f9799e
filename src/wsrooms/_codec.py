"""Frames in and out: the default JSON codec, inbound decoding and outbound ASGI events.

The default codec speaks RFC 8259 JSON only. Python's `json` module accepts `NaN`,
`Infinity` and numbers that overflow to `inf`, which no browser's `JSON.parse` takes, and
it recurses once per nesting level, so a deep enough document raises `RecursionError`.
`loads` turns all of these into `ValueError` (malformed JSON, close 1007) and never writes
them back out: `dumps` refuses `NaN` and `Infinity`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any, Literal, NoReturn

from starlette.types import Message

from ._exceptions import CloseCode

__all__ = [
    "MAX_JSON_DEPTH",
    "Encoding",
    "JsonDumps",
    "JsonLoads",
    "Rejected",
    "decode",
    "dumps",
    "encode",
    "loads",
]

JsonDumps = Callable[[Any], str | bytes]
JsonLoads = Callable[[str | bytes], Any]
Encoding = Literal["json", "text", "bytes"] | None

#: Deepest nesting of arrays and objects that `loads` takes. Real messages nest a few
#: levels; 256 is twice serde_json's default (128), well above what any protocol needs,
#: and far enough below Python's recursion limit (1000) to leave room for the frames
#: beneath the receive loop and for user code that walks or re-encodes the result.
MAX_JSON_DEPTH = 256

# A JSON string, or an unterminated one up to the end of the text (so the scan stays
# linear on malformed input: every quote starts a match that always succeeds).
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
# A \u escape of a UTF-16 surrogate, unless its backslash is itself escaped. Matches
# pairs too (an emoji escaped as by `json.dumps`); the check it triggers is exact.
_SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


_decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)
_decode = _decoder.decode


def dumps(obj: Any) -> str:
    """Serialise to compact JSON text, as Starlette's `send_json` does.

    Raises:
        ValueError: `obj` holds a float `nan` or `inf`, which JSON cannot express.
        TypeError: `obj` holds something JSON cannot express.
    """
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(data: str | bytes) -> Any:
    """Parse one JSON text, strictly RFC 8259: the default `json_loads` of wsrooms.

    Bytes are decoded as UTF-8, strictly (no UTF-16/32 detection, no BOM). On top of what
    `json.loads` rejects, these are malformed: `NaN`, `Infinity`, `-Infinity`, a number
    that overflows a float (`1e999`), nesting of arrays and objects deeper than
    `MAX_JSON_DEPTH` (256), and a `\\u` escape of a lone UTF-16 surrogate (which could not
    be encoded into a text frame again). Ordinary messages pay two C-speed counts for the
    depth bound; only a message with more than 256 brackets is scanned.

    Raises:
        ValueError: `data` is not JSON by these rules (`json.JSONDecodeError`, a
            subclass, where the parser found it). Never `RecursionError`.
    """
    text = data if isinstance(data, str) else str(data, "utf-8")
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_depth(text)
    try:
        value = _decode(text)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ValueError("JSON nested too deeply") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        # A lone surrogate cannot be sent on again: encoding it to UTF-8 fails.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("JSON string holds a lone UTF-16 surrogate") from None
    return value


def _check_depth(text: str) -> None:
    """Raise `ValueError` if arrays and objects nest deeper than `MAX_JSON_DEPTH`.

    Brackets inside strings do not count. Every step runs in C: strip the strings, keep
    the brackets (as ASCII bytes), take the running sum.
    """
    structure = _STRING.sub("", text).encode("ascii", "ignore")
    brackets = structure.translate(None, _NOT_BRACKETS)
    if max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


class Rejected(Exception):
    """An inbound message that closes the connection: `code` and `reason` for the close.

    Args:
        code: The close code: 1003, 1007 or 1009.
        reason: The fixed, short reason sent to the client.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code} {self.reason}"


_UNSUPPORTED_DATA = CloseCode.UNSUPPORTED_DATA
_INVALID_DATA = CloseCode.INVALID_DATA
_MESSAGE_TOO_BIG = CloseCode.MESSAGE_TOO_BIG


def decode(message: Message, encoding: Encoding, loads: JsonLoads, max_size: int) -> Any:
    """Turn one ASGI `websocket.receive` message into the data a handler gets.

    Args:
        message: The ASGI message. One with neither `text` nor `bytes` counts as an
            empty binary frame.
        encoding: `"json"`, `"text"`, `"bytes"`, or `None` for the message itself.
        loads: The endpoint's `json_loads`. Any exception it raises is malformed input:
            client data never produces a 1011.
        max_size: The largest message taken: characters for a text frame, bytes for a
            binary frame.

    Returns:
        The parsed JSON, the text, the bytes, or `message` itself.

    Raises:
        Rejected: 1009 "message too big", 1003 "binary frames expected" or
            "text frames expected", or 1007 "invalid JSON" (a binary frame that is not
            UTF-8 included). Nothing else.
    """
    text = message.get("text")
    if text is not None:
        if len(text) > max_size:
            raise Rejected(_MESSAGE_TOO_BIG, "message too big")
        if encoding == "json":
            try:
                return loads(text)
            except Exception:
                raise Rejected(_INVALID_DATA, "invalid JSON") from None
        if encoding == "text":
            return text
        if encoding == "bytes":
            raise Rejected(_UNSUPPORTED_DATA, "binary frames expected")
        return message
    raw = message.get("bytes") or b""
    if len(raw) > max_size:
        raise Rejected(_MESSAGE_TOO_BIG, "message too big")
    if encoding == "json":
        try:
            return loads(raw)
        except Exception:  # a UnicodeDecodeError included
            raise Rejected(_INVALID_DATA, "invalid JSON") from None
    if encoding == "bytes":
        return raw
    if encoding == "text":
        raise Rejected(_UNSUPPORTED_DATA, "text frames expected")
    return message


def encode(message: Any, json_dumps: JsonDumps) -> Message:
    """Build the ASGI event that sends `message` as one WebSocket frame.

    A `str` becomes a text frame, `bytes`-like a binary frame, anything else JSON text
    made by `json_dumps` (which may return UTF-8 `bytes`, as orjson and msgspec do).
    The event is built once and may be handed to many connections: ASGI servers only
    read it.
    """
    if isinstance(message, str):
        return {"type": "websocket.send", "text": message}
    if isinstance(message, bytes | bytearray | memoryview):
        return {"type": "websocket.send", "bytes": bytes(message)}
    text = json_dumps(message)
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return {"type": "websocket.send", "text": text}
