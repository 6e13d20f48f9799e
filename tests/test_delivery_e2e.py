"""Delivery on real servers: middleware around `send`, at most once, and floods.

Each test runs on uvicorn (asyncio), hypercorn (asyncio) and hypercorn (trio).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from tests import _servers
from wsrooms import Hub, InvalidMessage, RoomEndpoint
from wsrooms.testing import ConnectionClosed, ServerName, WebSocketClient, connect, serve

pytestmark = pytest.mark.anyio

# Run on uvicorn, hypercorn (asyncio) and hypercorn (trio).
backend_and_server = _servers.backend_and_server
anyio_backend = _servers.anyio_backend
server_name = _servers.server_name

FRAME = 64 * 1024
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="")


class ContextVarMiddleware:
    """Sets a context variable around each `await send(...)` and resets it by its token
    (what tracing and logging middleware do)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def traced_send(message: Message) -> None:
            token = REQUEST.set(scope.get("path", ""))
            try:
                await send(message)
            finally:
                REQUEST.reset(token)  # raises if another task finishes this send

        await self.app(scope, receive, traced_send)


class TimeoutMiddleware:
    """Wraps each `await send(...)` in a cancel scope (`anyio.fail_after`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            with anyio.fail_after(60):
                await send(message)

        await self.app(scope, receive, bounded_send)


MIDDLEWARE: dict[str, Any] = {
    "contextvar": ContextVarMiddleware,
    "fail_after": TimeoutMiddleware,
    "opentelemetry": OpenTelemetryMiddleware,
}


class Relay(RoomEndpoint):
    """Members join "r" before accept; a message is broadcast to the others; "bad" is
    rejected with 1007 by the handler; on_disconnect codes are recorded by `who`."""

    encoding = "text"
    hub = Hub()
    codes: dict[str, int] = {}
    gone: anyio.Event

    async def on_connect(self, websocket: WebSocket) -> None:
        await self.join("r")
        await super().on_connect(websocket)

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> None:
        if data == "bad":
            raise InvalidMessage("bad")
        await self.broadcast("r", data, exclude_self=True)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        who = websocket.query_params.get("who", "?")
        self.codes[who] = close_code
        if who == "stuck":
            self.gone.set()


def room_class(**attrs: Any) -> type[Relay]:
    """A Relay class of its own: a fresh hub and record."""
    return type("Relay", (Relay,), {"hub": Hub(), "codes": {}, **attrs})


@asynccontextmanager
async def room_server(
    cls: type[RoomEndpoint], server_name: ServerName, middleware: Any = None
) -> AsyncIterator[Any]:
    app: ASGIApp = Starlette(routes=[WebSocketRoute("/ws", cls)])
    if middleware is not None:
        app = middleware(app)
    async with serve(app, server=server_name) as server:
        yield server


def payload(i: int) -> str:
    return f"{i:06d}".ljust(FRAME, "x")


async def read_indices(ws: WebSocketClient, count: int) -> list[int]:
    return [int((await ws.recv())[:6]) for _ in range(count)]


async def read_until_closed(ws: WebSocketClient, got: list[int]) -> None:
    while True:
        got.append(int((await ws.recv())[:6]))


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("middleware", sorted(MIDDLEWARE))
async def test_middleware_around_send_keeps_working_while_sockets_back_up(
    server_name: ServerName, middleware: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Members whose sockets back up, then read: every frame, in order; no error anywhere."""
    cls = room_class()
    messages = 200
    async with (
        room_server(cls, server_name, MIDDLEWARE[middleware]) as server,
        AsyncExitStack() as stack,
    ):
        sender = await stack.enter_async_context(connect(server.ws_url("/ws?who=sender")))
        members = [
            await stack.enter_async_context(
                connect(server.ws_url(f"/ws?who=m{i}"), receive_buffer=4096)
            )
            for i in range(3)
        ]
        with anyio.fail_after(60):
            for i in range(messages):  # 12.5 MiB per member: their sockets back up
                await sender.send(payload(i))
            got = []
            for member in members:  # then each reads
                got.append(await read_indices(member, messages))
        assert all(indices == list(range(messages)) for indices in got)
        await sender.send("still here")  # the sender's connection survived
        for member in members:
            assert await member.recv() == "still here"
        assert cls.codes == {}
    assert errors(caplog) == []


async def test_a_closed_members_queue_arrives_once_and_in_order(
    server_name: ServerName, caplog: pytest.LogCaptureFixture
) -> None:
    """200 frames queued for a member that is not reading, then the server closes it with
    1007: what arrives, arrives once and in order."""
    cls = room_class(close_timeout=10)
    messages = 200
    async with room_server(cls, server_name) as server, AsyncExitStack() as stack:
        sender = await stack.enter_async_context(connect(server.ws_url("/ws?who=sender")))
        member = await stack.enter_async_context(
            connect(server.ws_url("/ws?who=member"), receive_buffer=4096)
        )
        with anyio.fail_after(60):
            for i in range(messages):
                await sender.send(payload(i))
            await member.send("bad")  # its own handler closes it with 1007
            got: list[int] = []
            with pytest.raises(ConnectionClosed) as closed:
                await read_until_closed(member, got)
        assert got == list(range(len(got)))  # no frame twice, none out of order
        assert closed.value.code == 1007
        assert cls.codes["member"] == 1007
    assert errors(caplog) == []


async def test_a_flood_slows_its_sender_and_drops_no_reader(server_name: ServerName) -> None:
    """One client floods a room of 30 readers for 10 s: every reader stays and receives
    everything in order; a reader that really stops reading is still dropped (1008).

    A small `send_queue_size` makes the point: queues fill at once, yet a reader is judged
    by its socket, not by its queue."""
    cls = room_class(send_queue_size=64, gone=anyio.Event())
    async with room_server(cls, server_name) as server, AsyncExitStack() as stack:
        flooder = await stack.enter_async_context(connect(server.ws_url("/ws?who=flooder")))
        readers = [
            await stack.enter_async_context(connect(server.ws_url(f"/ws?who=r{i}")))
            for i in range(30)
        ]
        stuck = await stack.enter_async_context(
            connect(server.ws_url("/ws?who=stuck"), receive_buffer=4096)
        )
        sent = 0
        got: dict[int, list[int]] = {}

        async def flood() -> None:
            nonlocal sent
            deadline = anyio.current_time() + 10
            while sent < 1_000_000 and anyio.current_time() < deadline:
                await flooder.send(f"{sent:07d}" + "z" * 16000)
                sent += 1
            await flooder.send("end")

        async def read(index: int, ws: WebSocketClient) -> None:
            indices = got.setdefault(index, [])
            while (message := await ws.recv()) != "end":
                indices.append(int(message[:7]))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(flood)
                for index, reader in enumerate(readers):
                    tg.start_soon(read, index, reader)
        assert sent >= 100, sent  # a flood took place (how fast depends on the machine)
        assert all(indices == list(range(sent)) for indices in got.values())
        assert [who for who in cls.codes if who != "stuck"] == []  # no reader was dropped
        # The stuck reader was judged a slow consumer and left the room at once...
        assert cls.hub.statistics().slow_consumer_disconnects == 1
        assert len(cls.hub.members("r")) == 31
        # ...but hypercorn on trio shields a blocked write from cancellation, so its
        # connection ends (on_disconnect) only once its TCP connection does.
        await stuck.abort()
        with anyio.fail_after(10):
            await cls.gone.wait()
        assert cls.codes["stuck"] == 1008


async def test_a_flood_of_unawaited_pushes_drops_no_reader(server_name: ServerName) -> None:
    """The decorator API's caller-owned loop pushes without awaiting into a room of 30
    readers for 5 s: the pushing connection waits for room before its next read, so no
    reader is dropped, and every reader gets every message in order."""
    from starlette.routing import WebSocketRoute as Route

    from wsrooms import Room

    room = Room(send_queue_size=64)

    async def chat(websocket: WebSocket) -> None:
        async with room.connect(websocket):
            async for message in websocket.iter_text():
                room.push(message)  # not awaited

    app = Starlette(routes=[Route("/ws", chat)])
    async with serve(app, server=server_name) as server, AsyncExitStack() as stack:
        readers = [
            await stack.enter_async_context(connect(server.ws_url("/ws"))) for _ in range(30)
        ]
        flooder = await stack.enter_async_context(connect(server.ws_url("/ws")))
        sent = 0
        got: dict[int, list[int]] = {}

        async def flood() -> None:
            nonlocal sent
            deadline = anyio.current_time() + 5
            while sent < 1_000_000 and anyio.current_time() < deadline:
                await flooder.send(f"{sent:07d}" + "z" * 4000)
                sent += 1
            await flooder.send("end")

        async def read(index: int, ws: WebSocketClient) -> None:
            indices = got.setdefault(index, [])
            while (message := await ws.recv()) != "end":
                indices.append(int(message[:7]))

        with anyio.fail_after(50):
            async with anyio.create_task_group() as tg:
                tg.start_soon(flood)
                for index, reader in enumerate([*readers, flooder]):  # it hears itself too
                    tg.start_soon(read, index, reader)
        assert sent >= 100, sent
        assert all(indices == list(range(sent)) for indices in got.values())
        assert room.hub.statistics().slow_consumer_disconnects == 0
        assert len(room.connections) == 31
