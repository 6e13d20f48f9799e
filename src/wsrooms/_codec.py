"""Encoding of outgoing messages into ASGI `websocket.send` events."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import Message

__all__ = ["JsonDumps", "JsonLoads", "dumps", "encode"]

JsonDumps = Callable[[Any], str | bytes]
JsonLoads = Callable[[str | bytes], Any]


def dumps(obj: Any) -> str:
    """Serialise to compact JSON text, as Starlette's `send_json` does."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


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
