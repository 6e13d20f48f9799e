"""What a hostile client tries, on real servers: each attack costs only the attacker.

Regression tests for what held when a hostile probe tried the library as a new user
would: malformed frames close only their sender, thousands of rooms and hundreds of
connections dropped without a close frame leave an empty hub, members that reset in the
middle of a broadcast cost the others nothing, and a handler's error text never reaches a
client. uvicorn serves the asyncio runs and hypercorn (its trio worker) the trio runs.

These tests open hundreds of connections, so asyncio runs here without debug mode (which
slows this load severalfold); every other test uses it. Hub state is read through the
public queries only, and every wait is for an event, never a sleep.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import BaseWSEndpoint, Hub, InvalidMessage, RoomEndpoint
from wsrooms.testing import ConnectionClosed, WebSocketClient, connect, serve

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


class Counter:
    """Counts events and wakes a waiter when a target is reached."""

    def __init__(self) -> None:
        self.count = 0
        self.codes: list[int] = []
        self._target = 0
        self._reached: anyio.Event | None = None

    def add(self, code: int | None = None) -> None:
        self.count += 1
        if code is not None:
            self.codes.append(code)
        if self._reached is not None and self.count >= self._target:
            self._reached.set()

    async def wait_for(self, target: int) -> None:
        """Wait until `target` events have happened (callers bound the wait)."""
        if self.count < target:
            self._target = target
            self._reached = anyio.Event()
            await self._reached.wait()


async def closed(ws: WebSocketClient) -> tuple[int | None, str | None]:
    with anyio.fail_after(10):
        await ws.wait_closed()
    return ws.close_code, ws.close_reason


async def read_until_closed(ws: WebSocketClient) -> list[str | bytes]:
    frames: list[str | bytes] = []
    with anyio.fail_after(10):
        try:
            while True:
                frames.append(await ws.recv())
        except ConnectionClosed:
            return frames


# Malformed input ---------------------------------------------------------------------------


def relay_app() -> tuple[Starlette, Hub, Counter]:
    """Room "r" on three endpoints, one per encoding; each member relays what it gets."""
    hub = Hub()
    ended = Counter()

    class Relay(RoomEndpoint):
        max_message_size = 1000

        async def on_connect(self, websocket: WebSocket) -> None:
            await self.join("r")
            await super().on_connect(websocket)

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            if data == {"reject": True}:
                raise InvalidMessage("rejected by the app")
            await self.broadcast("r", data, exclude_self=True)

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            ended.add(close_code)

    class JsonRelay(Relay):
        hub = Hub()  # replaced below: one hub for the three classes

    JsonRelay.hub = hub
    TextRelay = type("TextRelay", (JsonRelay,), {"encoding": "text"})
    BytesRelay = type("BytesRelay", (JsonRelay,), {"encoding": "bytes"})
    app = Starlette(
        routes=[
            WebSocketRoute("/json", JsonRelay),
            WebSocketRoute("/text", TextRelay),
            WebSocketRoute("/bytes", BytesRelay),
        ]
    )
    return app, hub, ended


BIG = 1001
# (endpoint, frame the client sends, close code, reason)
MALFORMED: list[tuple[str, str | bytes, int, str]] = [
    ("/json", "x" * BIG, 1009, "message too big"),
    ("/json", b"x" * BIG, 1009, "message too big"),
    ("/text", "é" * BIG, 1009, "message too big"),
    ("/bytes", b"\x00" * BIG, 1009, "message too big"),
    ("/json", "{", 1007, "invalid JSON"),
    ("/json", "", 1007, "invalid JSON"),
    ("/json", "[1,]", 1007, "invalid JSON"),
    ("/json", "{'a': 1}", 1007, "invalid JSON"),
    ("/json", '{"a":1} trailing', 1007, "invalid JSON"),
    ("/json", '"unterminated', 1007, "invalid JSON"),
    ("/json", '"raw\x01control"', 1007, "invalid JSON"),
    ("/json", b"\xff\xfe", 1007, "invalid JSON"),
    ("/json", b'"\xc3"', 1007, "invalid JSON"),
    ("/json", b"", 1007, "invalid JSON"),
    ("/json", '{"reject": true}', 1007, "rejected by the app"),
    ("/text", b"binary to a text endpoint", 1003, "text frames expected"),
    ("/bytes", "text to a bytes endpoint", 1003, "binary frames expected"),
]


async def test_malformed_input_closes_only_its_sender(caplog: pytest.LogCaptureFixture) -> None:
    """Each malformed frame closes its sender with its code, logged below ERROR; the room
    keeps relaying."""
    app, hub, ended = relay_app()
    async with (
        serve(app) as server,
        connect(server.ws_url("/json")) as listener,
        connect(server.ws_url("/json")) as speaker,
    ):
        for number, (path, frame, code, reason) in enumerate(MALFORMED):
            async with connect(server.ws_url(path)) as attacker:
                await attacker.send(frame)
                assert await closed(attacker) == (code, reason), (path, frame[:20])
            with anyio.fail_after(20):
                await ended.wait_for(number + 1)
            assert ended.codes[-1] == code
            # The others are still in the room and still receiving.
            assert len(hub.members("r")) == 2
            await speaker.send_json({"after": number})
            with anyio.fail_after(10):
                assert await listener.recv_json() == {"after": number}
    with anyio.fail_after(20):
        await ended.wait_for(len(MALFORMED) + 2)
    assert hub.connections == frozenset()
    assert hub.rooms() == frozenset()
    assert not [r for r in caplog.records if r.name == "wsrooms" and r.levelno >= logging.ERROR]


# Many rooms, many connections --------------------------------------------------------------

ROOMS = 20_000


async def test_twenty_thousand_rooms_are_left_after_a_reset() -> None:
    """One connection in 20,000 rooms resets: it leaves them all, on_leave for each."""
    hub = Hub()
    left = Counter()
    ended = Counter()

    class Hoarder(RoomEndpoint):
        if hasattr(RoomEndpoint, "max_rooms_per_connection"):
            max_rooms_per_connection = ROOMS

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            for i in range(data):
                await self.join(f"room-{i}")
            await self.send_message(len(self.rooms))

        async def on_leave(self, room: str) -> None:
            left.add()

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            ended.add(close_code)

    Hoarder.hub = hub
    app = Starlette(routes=[WebSocketRoute("/hoard", Hoarder)])
    async with serve(app) as server, connect(server.ws_url("/hoard")) as ws:
        await ws.send_json(ROOMS)
        with anyio.fail_after(30):
            assert await ws.recv_json() == ROOMS
        assert len(hub.rooms()) == ROOMS
        await ws.abort()
        with anyio.fail_after(10):
            await left.wait_for(ROOMS)
        with anyio.fail_after(20):
            await ended.wait_for(1)
        assert hub.rooms() == frozenset()
        assert hub.connections == frozenset()
    assert left.count == ROOMS


DROPPED = 300


async def test_connections_dropped_without_close_frames_leave_an_empty_hub() -> None:
    """300 members reset their TCP connections: every on_disconnect runs, the hub empties."""
    hub = Hub()
    ended = Counter()

    class Member(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await self.join("lobby")
            await self.join(f"own-{websocket.query_params['n']}")
            await super().on_connect(websocket)

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            ended.add(close_code)

    Member.hub = hub
    app = Starlette(routes=[WebSocketRoute("/m", Member)])
    async with serve(app) as server, AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(connect(server.ws_url(f"/m?n={n}")))
            for n in range(DROPPED)
        ]
        assert len(hub.members("lobby")) == DROPPED
        assert len(hub.rooms()) == DROPPED + 1
        for ws in clients:
            await ws.abort()
        with anyio.fail_after(30):
            await ended.wait_for(DROPPED)
        assert hub.connections == frozenset()
        assert hub.rooms() == frozenset()
    # uvicorn reports a reset client as 1005 (1006 with a send in flight), hypercorn 1006.
    assert set(ended.codes) <= {1005, 1006}


MEMBERS = 60
MESSAGES = 200
RESET_AFTER = 50


async def test_members_resetting_mid_broadcast_cost_the_others_nothing() -> None:
    """30 of 60 members reset while a broadcast stream runs: the other 30 get every
    message, in order, and none of them is dropped or closed."""
    hub = Hub()
    ended = Counter()

    class Stream(RoomEndpoint):
        encoding = "text"

        async def on_connect(self, websocket: WebSocket) -> None:
            await self.join("r")
            await super().on_connect(websocket)

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> None:
            await self.broadcast("r", data, exclude_self=True)

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            ended.add(close_code)

    Stream.hub = hub
    app = Starlette(routes=[WebSocketRoute("/s", Stream)])
    received: dict[int, list[int]] = {}

    async def member(index: int, ws: WebSocketClient) -> None:
        got = received.setdefault(index, [])
        resets = index % 2 == 0
        for _ in range(RESET_AFTER if resets else MESSAGES):
            got.append(int(await ws.recv()))
        if resets:
            await ws.abort()

    async with serve(app) as server, AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(connect(server.ws_url("/s")))
        members = [
            await stack.enter_async_context(connect(server.ws_url("/s"))) for _ in range(MEMBERS)
        ]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for index, ws in enumerate(members):
                    tg.start_soon(member, index, ws)
                for i in range(MESSAGES):
                    await publisher.send(str(i))
        with anyio.fail_after(20):
            await ended.wait_for(MEMBERS // 2)
        assert len(hub.members("r")) == MEMBERS // 2 + 1
        survivors = [ws for index, ws in enumerate(members) if index % 2]
        assert not any(ws.closed for ws in survivors)
        assert not publisher.closed
    assert all(received[i] == list(range(MESSAGES)) for i in range(1, MEMBERS, 2))
    assert all(received[i] == list(range(RESET_AFTER)) for i in range(0, MEMBERS, 2))
    assert hub.dropped == 0
    assert 1008 not in ended.codes  # nobody was taken for a slow consumer


# Errors ------------------------------------------------------------------------------------

SECRET = "postgres://admin:hunter2@db.internal"


class Leaky(BaseWSEndpoint):
    """A handler with a bug whose message holds a secret."""

    failures: ClassVar[tuple[type[Exception], ...]] = (RuntimeError, KeyError, ValueError)

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        if data == "ok":
            await self.send_message("fine")
            return
        raise self.failures[int(data)](f"cannot connect to {SECRET}")


@pytest.mark.parametrize("failure", [0, 1, 2])
async def test_a_handler_error_text_never_reaches_the_client(
    failure: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler's exception closes with 1011 "internal error": its text is logged for the
    developer and sent to no one."""
    app = Starlette(routes=[WebSocketRoute("/leaky", Leaky)])
    async with serve(app) as server, connect(server.ws_url("/leaky")) as ws:
        await ws.send_json("ok")
        await ws.send_json(str(failure))
        frames = await read_until_closed(ws)
        assert (ws.close_code, ws.close_reason) == (1011, "internal error")
    assert frames == ["fine"]
    assert all("hunter2" not in str(frame) for frame in frames)
    # The developer sees it, with its traceback, at ERROR.
    logged = [r for r in caplog.records if r.name == "wsrooms" and r.levelno == logging.ERROR]
    assert any(r.exc_info and "hunter2" in str(r.exc_info[1]) for r in logged)
