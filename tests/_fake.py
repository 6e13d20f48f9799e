"""A fake ASGI WebSocket peer driven by memory streams: deterministic unit tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.types import ASGIApp, Message

#: Bound for any single wait in a test: a hang fails fast instead of at the suite timeout.
WAIT = 5.0


class FakePeer:
    """The client and server sides of one WebSocket, as ASGI `receive`/`send` callables."""

    def __init__(
        self,
        path: str = "/ws",
        subprotocols: tuple[str, ...] = (),
        *,
        fail_on: str | None = None,
    ) -> None:
        """`fail_on`: an ASGI event type whose send raises OSError (the socket is gone)."""
        self.fail_on = fail_on
        self.to_app, self._app_inbox = anyio.create_memory_object_stream[Message](100)
        self._app_sends, self.from_app = anyio.create_memory_object_stream[Message](10_000)
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [],
            "subprotocols": list(subprotocols),
            "path_params": {},
        }
        self.sent: list[Message] = []
        self.on_send: Callable[[Message], None] | None = None

    # ASGI side

    async def receive(self) -> Message:
        return await self._app_inbox.receive()

    async def send(self, message: Message) -> None:
        if message["type"] == self.fail_on:
            raise OSError("connection reset by peer")
        self.sent.append(message)
        if self.on_send is not None:
            self.on_send(message)
        await self._app_sends.send(message)
        if message["type"] == "websocket.close":
            # As a server does once the client answers the close frame with its own.
            with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                self.to_app.send_nowait(
                    {"type": "websocket.disconnect", "code": message.get("code", 1000)}
                )

    def close(self) -> None:
        for stream in (self.to_app, self._app_inbox, self._app_sends, self.from_app):
            stream.close()

    # client side

    def queued_to_app(self) -> int:
        """Messages pushed by the client that the app has not read yet."""
        return self._app_inbox.statistics().current_buffer_used

    async def connect(self) -> None:
        await self.to_app.send({"type": "websocket.connect"})

    async def send_text(self, text: str) -> None:
        await self.to_app.send({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self.to_app.send({"type": "websocket.receive", "bytes": data})

    async def send_json(self, obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    async def disconnect(self, code: int = 1000) -> None:
        await self.to_app.send({"type": "websocket.disconnect", "code": code})

    async def next(self) -> Message:
        """The next event the app sent."""
        with anyio.fail_after(WAIT):
            return await self.from_app.receive()

    async def expect_accept(self) -> Message:
        message = await self.next()
        assert message["type"] == "websocket.accept", message
        return message

    async def next_text(self) -> str:
        message = await self.next()
        assert message["type"] == "websocket.send", message
        return message["text"]  # type: ignore[no-any-return]

    async def next_json(self) -> Any:
        message = await self.next()
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def expect_close(self) -> tuple[int, str]:
        """Skip data frames until the app's close event; its (code, reason)."""
        while True:
            message = await self.next()
            if message["type"] == "websocket.close":
                return message.get("code", 1000), message.get("reason", "")


@asynccontextmanager
async def serving(app: ASGIApp, peer: FakePeer) -> AsyncIterator[TaskGroup]:
    """Run `app` on `peer` in a task group; on exit, wait for the app to return.

    Anything the app raises (which would reach a real ASGI server) fails the test.
    """
    try:
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def run() -> None:
                try:
                    await app(peer.scope, peer.receive, peer.send)
                finally:
                    done.set()

            tg.start_soon(run)
            yield tg
            with anyio.fail_after(WAIT):
                await done.wait()
    finally:
        peer.close()
