"""The limits a public server needs, on real servers (SPEC 1.3, 1.4, 2.1): `max_connections`,
`rate_limit`, `allowed_origins`, `max_rooms_per_connection`, room names from client input,
and the default codec's RFC 8259 rules, each with its close code or HTTP status.

uvicorn serves the asyncio runs and hypercorn (its trio worker) the trio runs. Every wait
is for an event, never a sleep; hub state is read through public queries only.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import BaseWSEndpoint, Hub, JoinRefused, Room, RoomEndpoint
from wsrooms.testing import InvalidStatus, WebSocketClient, connect, serve

pytestmark = pytest.mark.anyio


async def closed(ws: WebSocketClient) -> tuple[int | None, str | None]:
    with anyio.fail_after(10):
        await ws.wait_closed()
    return ws.close_code, ws.close_reason


def no_error_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return not [r for r in caplog.records if r.name == "wsrooms" and r.levelno >= logging.ERROR]


class Echo(BaseWSEndpoint):
    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.send_message({"echo": data})


# max_connections ----------------------------------------------------------------------------


async def test_one_connection_over_max_connections_gets_1013() -> None:
    """At max_connections, one more is accepted and closed at once with 1013; no hook runs
    for it and it joins no room; once one leaves, a new one is served again."""
    hub = Hub()
    connected: list[str] = []
    one_left = anyio.Event()

    class Capped(RoomEndpoint):
        max_connections = 2

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            if websocket.query_params["n"] == "1":
                one_left.set()

        async def on_connect(self, websocket: WebSocket) -> None:
            connected.append(websocket.query_params["n"])
            await self.join("r")
            await super().on_connect(websocket)

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.send_message({"echo": data})

    Capped.hub = hub
    app = Starlette(routes=[WebSocketRoute("/c", Capped)])
    async with serve(app) as server:
        async with connect(server.ws_url("/c?n=1")) as one, connect(server.ws_url("/c?n=2")):
            async with connect(server.ws_url("/c?n=3")) as three:
                assert await closed(three) == (1013, "try again later")
            assert connected == ["1", "2"]
            assert len(hub.members("r")) == 2
            await one.send_json("still served")
            with anyio.fail_after(10):
                assert await one.recv_json() == {"echo": "still served"}
            await one.close()
            with anyio.fail_after(10):
                await one_left.wait()
            async with connect(server.ws_url("/c?n=4")) as four:
                await four.send_json("served")
                with anyio.fail_after(10):
                    assert await four.recv_json() == {"echo": "served"}
    assert connected == ["1", "2", "4"]


# rate_limit ---------------------------------------------------------------------------------


async def test_a_client_over_rate_limit_is_closed_with_1008() -> None:
    """A burst of `messages` is handled; the one over the limit is not, and closes 1008."""
    handled: list[Any] = []

    class Limited(BaseWSEndpoint):
        rate_limit = (5, 60.0)

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            handled.append(data)
            await self.send_message(data)

    app = Starlette(routes=[WebSocketRoute("/l", Limited)])
    async with serve(app) as server, connect(server.ws_url("/l")) as ws:
        for i in range(5):
            await ws.send_json(i)
            with anyio.fail_after(10):
                assert await ws.recv_json() == i
        await ws.send_json("one too many")
        assert await closed(ws) == (1008, "rate limit")
    assert handled == [0, 1, 2, 3, 4]


# allowed_origins ----------------------------------------------------------------------------


class OriginChecked(Echo):
    allowed_origins = ("https://app.example.com", "http://localhost:8000")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("https://app.example.com", True),
        ("HTTPS://App.Example.com", True),
        ("http://localhost:8000", True),
        ("https://evil.example", False),
        ("http://app.example.com", False),
        ("http://localhost:8001", False),
        ("null", False),
    ],
)
async def test_allowed_origins(origin: str | None, allowed: bool) -> None:
    """Only a listed Origin (or none at all) gets through; any other gets HTTP 403."""
    app = Starlette(routes=[WebSocketRoute("/o", OriginChecked)])
    headers = {"Origin": origin} if origin is not None else None
    async with serve(app) as server:
        if allowed:
            async with connect(server.ws_url("/o"), headers=headers) as ws:
                await ws.send_json("hi")
                with anyio.fail_after(10):
                    assert await ws.recv_json() == {"echo": "hi"}
        else:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.ws_url("/o"), headers=headers):
                    pass  # pragma: no cover
            assert refused.value.status_code == 403


# max_rooms_per_connection -------------------------------------------------------------------


async def test_a_join_beyond_max_rooms_per_connection_is_refused() -> None:
    """The join past the bound raises JoinRefused: caught, the connection goes on;
    uncaught, it closes with 1008 "join refused"."""
    hub = Hub()

    class Rooms(RoomEndpoint):
        max_rooms_per_connection = 3

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            if data == "catch":
                try:
                    await self.join("one-too-many")
                except JoinRefused:
                    await self.send_message("refused")
                return
            if data == "raise":
                await self.join("one-too-many")
            for name in ("a", "b", "c"):
                await self.join(name)
            await self.send_message(sorted(self.rooms))

    Rooms.hub = hub
    app = Starlette(routes=[WebSocketRoute("/r", Rooms)])
    async with serve(app) as server, connect(server.ws_url("/r")) as ws:
        await ws.send_json("fill")
        with anyio.fail_after(10):
            assert await ws.recv_json() == ["a", "b", "c"]
        await ws.send_json("catch")
        with anyio.fail_after(10):
            assert await ws.recv() == "refused"
        assert hub.rooms() == {"a", "b", "c"}
        await ws.send_json("raise")
        assert await closed(ws) == (1008, "join refused")


# Room names from client input ---------------------------------------------------------------

BAD_ROOM_PATHS = ["/a%00b", "/a%0Ab", "/%C2%85", "/" + "x" * 257]


def named_room_app(before_accept: bool) -> tuple[Starlette, Hub]:
    hub = Hub()

    class Named(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            if before_accept:
                await self.join(websocket.path_params["room"])
                await super().on_connect(websocket)
            else:
                await super().on_connect(websocket)
                await self.join(websocket.path_params["room"])

    Named.hub = hub
    return Starlette(routes=[WebSocketRoute("/ws/{room}", Named)]), hub


@pytest.mark.parametrize("path", BAD_ROOM_PATHS)
async def test_a_bad_room_name_from_the_path_after_accept_is_1007(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A room name from the URL that breaks a rule closes with 1007 "invalid room name"
    after accept, never 1011; the log shows the client's path only escaped."""
    app, hub = named_room_app(before_accept=False)
    async with serve(app) as server, connect(server.ws_url("/ws" + path)) as ws:
        assert await closed(ws) == (1007, "invalid room name")
    assert hub.rooms() == frozenset()
    assert no_error_logged(caplog)
    for record in caplog.records:
        message = record.getMessage()
        assert "\x00" not in message
        assert "\n" not in message
        assert "\x85" not in message


@pytest.mark.parametrize("path", BAD_ROOM_PATHS)
async def test_a_bad_room_name_from_the_path_before_accept_is_403(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same names refused before accept answer the handshake with HTTP 403."""
    app, hub = named_room_app(before_accept=True)
    async with serve(app) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url("/ws" + path)):
                pass  # pragma: no cover
        assert refused.value.status_code == 403
    assert hub.rooms() == frozenset()
    assert no_error_logged(caplog)


async def test_a_bad_room_name_from_a_message_is_1007() -> None:
    """A room name taken from a message (an int, an empty string) closes with 1007."""

    class JoinFromMessage(RoomEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.join(data["room"])
            await self.send_message("joined")

    JoinFromMessage.hub = Hub()
    app = Starlette(routes=[WebSocketRoute("/j", JoinFromMessage)])
    async with serve(app) as server:
        for room in (5, "", "x" * 257, "a\nb", None):
            async with connect(server.ws_url("/j")) as ws:
                await ws.send_json({"room": room})
                assert await closed(ws) == (1007, "invalid room name"), room


# The default codec on a real server ---------------------------------------------------------


def relay_app() -> tuple[Starlette, Hub]:
    hub = Hub()

    class Relay(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await self.join("r")
            await super().on_connect(websocket)

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.broadcast("r", data, exclude_self=True)

    Relay.hub = hub
    return Starlette(routes=[WebSocketRoute("/relay", Relay)]), hub


NOT_JSON: list[str | bytes] = [
    "[" * 980 + "]" * 980,  # the probe's 1,960-byte message that gave 1011
    '{"a":' * 5000 + "1" + "}" * 5000,
    ("[" * 980 + "]" * 980).encode(),  # in a binary frame
    "[NaN,-Infinity]",
    '{"x":Infinity}',
    "1e999",
    '"\\ud800"',
    '{"a":1}'.encode("utf-16"),
]


async def test_what_is_not_rfc_8259_json_closes_1007_and_is_relayed_nowhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deep nesting, NaN, Infinity, 1e999, a lone surrogate, UTF-16: each closes its sender
    with 1007 and no other member receives it; the room goes on."""
    app, _ = relay_app()
    async with (
        serve(app) as server,
        connect(server.ws_url("/relay")) as listener,
        connect(server.ws_url("/relay")) as speaker,
    ):
        for number, frame in enumerate(NOT_JSON):
            async with connect(server.ws_url("/relay")) as attacker:
                await attacker.send(frame)
                assert await closed(attacker) == (1007, "invalid JSON"), frame[:20]
            await speaker.send_json({"after": number})
            with anyio.fail_after(10):
                # The first thing the listener gets is the speaker's: nothing else came.
                assert await listener.recv_json() == {"after": number}
    assert no_error_logged(caplog)


async def test_a_very_deep_compressed_message_is_1007() -> None:
    """300,000 levels sent compressed (600,000 bytes inflated) close with 1007, quickly."""
    app, _ = relay_app()
    async with (
        serve(app) as server,
        connect(server.ws_url("/relay"), compression="deflate") as ws,
    ):
        await ws.send("[" * 300_000 + "]" * 300_000)
        assert await closed(ws) == (1007, "invalid JSON")


# The decorator API's caller-owned block -----------------------------------------------------


def api2_app() -> tuple[Starlette, Room]:
    room = Room()

    async def chat2(websocket: WebSocket) -> None:
        async with room.connect(websocket):
            async for message in websocket.iter_text():
                room.push(message)

    return Starlette(routes=[WebSocketRoute("/chat2", chat2)]), room


@pytest.mark.parametrize(
    ("frame", "code"),
    [("x" * (3 * 1024 * 1024), 1009), (b"binary", 1003)],
)
async def test_the_caller_owned_block_enforces_the_limits(frame: str | bytes, code: int) -> None:
    """In `async with room.connect(ws)`, a 3 MiB frame closes with 1009 and a binary frame
    with 1003; neither reaches the other members, who keep receiving."""
    app, _ = api2_app()
    async with (
        serve(app, ws_max_size=8 * 1024 * 1024) as server,
        connect(server.ws_url("/chat2")) as listener,
        connect(server.ws_url("/chat2")) as speaker,
        connect(server.ws_url("/chat2"), max_size=None) as attacker,
    ):
        await attacker.send(frame)
        assert (await closed(attacker))[0] == code
        await speaker.send("after")
        with anyio.fail_after(10):
            assert await listener.recv() == "after"


async def test_max_connections_is_per_class() -> None:
    """A subclass counts its own connections: the parent's are not in its count."""

    class Parent(Echo):
        max_connections = 1

    class Child(Parent):
        pass

    app = Starlette(routes=[WebSocketRoute("/p", Parent), WebSocketRoute("/c", Child)])
    async with serve(app) as server, AsyncExitStack() as stack:
        await stack.enter_async_context(connect(server.ws_url("/p")))
        child = await stack.enter_async_context(connect(server.ws_url("/c")))
        await child.send_json("served")
        with anyio.fail_after(10):
            assert await child.recv_json() == {"echo": "served"}
        extra = await stack.enter_async_context(connect(server.ws_url("/c")))
        assert await closed(extra) == (1013, "try again later")
