"""Tiny plain-ASGI apps for the tests of `wsrooms.testing`: no framework, no wsrooms."""

from __future__ import annotations

import json

import anyio
from starlette.types import Receive, Scope, Send


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then send every text or bytes message back as it came."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def describe(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then send the request's path, query string and `x-token` header as JSON."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    headers = dict(scope["headers"])
    token = headers.get(b"x-token", b"").decode()
    query = scope["query_string"].decode()
    await send({"type": "websocket.send", "text": json.dumps([scope["path"], query, token])})
    message = await receive()
    assert message["type"] == "websocket.disconnect"


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse the handshake: `websocket.close` before `websocket.accept` (HTTP 403)."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.close", "code": 1008})


class CloseWith:
    """Accept, send one text message, then close with a given code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "bye"})
        await send({"type": "websocket.close", "code": self.code, "reason": self.reason})


class Subprotocols:
    """Accept with the first subprotocol the client offers that this app speaks."""

    def __init__(self, *supported: str) -> None:
        self.supported = supported

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        chosen = next((p for p in scope["subprotocols"] if p in self.supported), None)
        await send({"type": "websocket.accept", "subprotocol": chosen})
        await send({"type": "websocket.send", "text": chosen or ""})
        message = await receive()
        assert message["type"] == "websocket.disconnect"


class Recorder:
    """Accept, announce it, then wait for the disconnect and record its code.

    Every message received meanwhile is recorded too. Create it inside a running event
    loop (it holds anyio events).
    """

    def __init__(self) -> None:
        self.accepted = anyio.Event()
        self.disconnected = anyio.Event()
        self.received: list[str | bytes] = []
        self.codes: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "accepted"})
        self.accepted.set()
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    self.codes.append(message.get("code", 1000))
                    return
                self.received.append(message.get("text") or message.get("bytes") or b"")
        finally:
            self.disconnected.set()


class Flood:
    """Accept, then send `count` binary messages of `size` bytes; record progress.

    `done` is set once every message is handed to the server, which a client that does
    not read prevents as soon as the buffers on the way are full.
    """

    def __init__(self, *, count: int, size: int) -> None:
        self.count = count
        self.size = size
        self.sent = 0
        self.done = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        payload = b"x" * self.size
        for _ in range(self.count):
            await send({"type": "websocket.send", "bytes": payload})
            self.sent += 1
        self.done.set()
        message = await receive()
        assert message["type"] == "websocket.disconnect"


class Lifespan:
    """An app with a lifespan: records startup and shutdown, echoes them over WebSocket."""

    def __init__(self, *, fail_startup: bool = False) -> None:
        self.fail_startup = fail_startup
        self.events: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if self.fail_startup:
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                        return
                    self.events.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": ",".join(self.events)})
        message = await receive()
        assert message["type"] == "websocket.disconnect"
