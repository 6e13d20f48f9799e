"""End to end: the examples and the guarantees on real servers with real WebSocket clients.

uvicorn serves the asyncio runs and hypercorn (its trio worker) the trio runs, both on the
test's own event loop and a free loopback port (`wsrooms.testing`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from examples import actions, chat, feed, room_api, turns
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import BaseWSEndpoint
from wsrooms.testing import ConnectionClosed, InvalidStatus, Server, connect, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
async def chat_server() -> AsyncIterator[Server]:
    async with serve(chat.app, lifespan=True) as server:
        yield server


async def recv_json(ws: Any) -> Any:
    with anyio.fail_after(10):
        return await ws.recv_json()


async def test_chat_example_three_clients_two_rooms() -> None:
    """3 clients in 2 rooms: every message reaches exactly the members of its room."""
    async with serve(chat.app, lifespan=True) as server:
        async with (
            connect(server.ws_url("/ws/red?name=ann")) as ann,
            connect(server.ws_url("/ws/red?name=bob")) as bob,
            connect(server.ws_url("/ws/blue?name=cat")) as cat,
        ):
            # Join notices: ann sees herself and bob; bob sees himself; cat sees herself.
            assert (await recv_json(ann))["name"] == "ann"
            assert await recv_json(ann) == {"event": "join", "name": "bob", "members": 2}
            assert (await recv_json(bob))["name"] == "bob"
            assert (await recv_json(cat))["name"] == "cat"
            await ann.send_json({"text": "hello red"})
            await cat.send_json({"text": "hello blue"})
            red = {"event": "message", "name": "ann", "text": "hello red"}
            blue = {"event": "message", "name": "cat", "text": "hello blue"}
            assert await recv_json(ann) == red
            assert await recv_json(bob) == red
            assert await recv_json(cat) == blue
            await bob.send_json({"text": "second"})
            assert (await recv_json(ann))["text"] == "second"
            assert (await recv_json(bob))["text"] == "second"
            await cat.close()
            await ann.close()
            assert await recv_json(bob) == {"event": "leave", "name": "ann", "members": 1}
    # The server has shut down: every connection has left every room.
    assert chat.hub.connections == frozenset()
    assert chat.hub.rooms() == frozenset()


async def test_chat_rejects_bad_input(chat_server: Server) -> None:
    """The chat closes with 1007 and a readable reason on a message of the wrong shape."""
    async with connect(chat_server.ws_url("/ws/lobby")) as ws:
        await recv_json(ws)  # own join notice
        await ws.send_json({"no": "text"})
        with anyio.fail_after(10):
            await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (1007, 'send {"text": "..."}')


async def test_chat_page_is_served(chat_server: Server) -> None:
    """The demo serves its browser page at /."""
    stream = await anyio.connect_tcp(chat_server.host, chat_server.port)
    async with stream:
        await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = b""
        with anyio.fail_after(10):
            try:
                while True:
                    body += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    assert body.startswith(b"HTTP/1.1 200")
    assert b"new WebSocket(" in body


async def test_feed_example_one_feed_per_connection() -> None:
    """Feed: however many "subscribe" arrive, one feed streams consecutive ticks."""
    async with serve(feed.app) as server:
        async with connect(server.ws_url("/feed")) as ws:
            for _ in range(3):
                await ws.send("subscribe")
            got = [await recv_json(ws) for _ in range(12)]
        infos = [m for m in got if "info" in m]
        ticks = [m["tick"] for m in got if "tick" in m]
        assert infos == [{"info": "already subscribed"}] * 2
        assert ticks == list(range(len(ticks)))


async def test_actions_example_request_response() -> None:
    """Actions: concurrent requests get answers matched by id; a bad one closes 1007."""
    async with serve(actions.app) as server:
        async with connect(server.ws_url("/actions")) as ws:
            await ws.send_json({"id": 1, "action": "add", "args": [1, 2]})
            await ws.send_json({"id": 2, "action": "mul", "args": [3, 4]})
            await ws.send_json({"id": 3, "action": "concat", "args": ["a", "b"]})
            answers = {m["id"]: m["result"] for m in [await recv_json(ws) for _ in range(3)]}
            assert answers == {1: 3, 2: 12, 3: "ab"}
            await ws.send_json({"id": 4, "action": "nope"})
            with anyio.fail_after(10):
                await ws.wait_closed()
            assert ws.close_code == 1007


async def test_turns_example() -> None:
    """Turns: the server answers each odd number with the next even one; out of turn: 1007."""
    async with serve(turns.app) as server:
        async with connect(server.ws_url("/turns")) as ws:
            for n in (1, 3, 5):
                await ws.send_json(n)
                assert await recv_json(ws) == n + 1
            await ws.send_json(9)
            with anyio.fail_after(10):
                await ws.wait_closed()
            assert (ws.close_code, ws.close_reason) == (1007, "not your turn: say 7")


async def test_room_api_on_fastapi() -> None:
    """The Room proposal on FastAPI: API 1, API 2, listen-only and the client-id subclass."""
    async with (
        serve(room_api.app) as server,
        connect(server.ws_url("/chat")) as api1,
        connect(server.ws_url("/chat2")) as api2,
        connect(server.ws_url("/listen")) as listener,
        connect(server.ws_url("/chat/42")) as client42,
        connect(server.ws_url("/listening_ws/43")) as client43,
    ):
        await api2.send("text from api 2")
        for ws in (api1, api2, listener):
            with anyio.fail_after(10):
                assert await ws.recv() == "text from api 2"
        await client42.send_json("hi")
        assert await recv_json(client43) == {"from": 42, "message": "hi"}
    assert room_api.room.connections == frozenset()
    assert room_api.chat_room.connections == frozenset()


class Gate(BaseWSEndpoint):
    subprotocols = ("v2", "v1")

    async def on_connect(self, websocket: WebSocket) -> None:
        if websocket.query_params.get("token") != "ok":
            await websocket.close()
            return
        await self.accept(websocket)

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.send_message({"subprotocol": websocket.scope.get("subprotocols")})


async def test_refused_handshakes_get_http_403() -> None:
    """A refusal in on_connect and a subprotocol mismatch both answer HTTP 403, never 500."""
    app = Starlette(routes=[WebSocketRoute("/gate", Gate)])
    async with serve(app) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.ws_url("/gate?token=bad"), subprotocols=["v1"]):
                pass  # pragma: no cover
        assert refused.value.status_code == 403
        with pytest.raises(InvalidStatus) as mismatch:
            async with connect(server.ws_url("/gate?token=ok"), subprotocols=["v3"]):
                pass  # pragma: no cover
        assert mismatch.value.status_code == 403
        async with connect(server.ws_url("/gate?token=ok"), subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v1"  # the client's order decides


class Burst(BaseWSEndpoint):
    """Each message starts a task that sends 50 numbered frames."""

    max_tasks = 32

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        for i in range(50):
            await self.send_message({"task": data, "i": i, "pad": "x" * 200})
            if i % 10 == 0:
                await anyio.lowlevel.checkpoint()


async def test_twenty_tasks_sending_at_once() -> None:
    """20 tasks sending on one connection at once: every frame intact, each task in order."""
    app = Starlette(routes=[WebSocketRoute("/burst", Burst)])
    async with serve(app) as server:
        async with connect(server.ws_url("/burst")) as ws:
            for task in range(20):
                await ws.send_json(task)
            seen: dict[int, list[int]] = {task: [] for task in range(20)}
            for _ in range(20 * 50):
                frame = await recv_json(ws)  # a torn frame would not parse
                assert frame["pad"] == "x" * 200
                seen[frame["task"]].append(frame["i"])
        assert all(order == list(range(50)) for order in seen.values())


async def test_client_vanishing_ends_the_connection() -> None:
    """A client that drops TCP without a close frame: tasks cancelled, on_disconnect runs."""
    ended = anyio.Event()
    state: dict[str, Any] = {}

    class Forever(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.send_message("running")
            try:
                await anyio.sleep_forever()
            finally:
                state["cancelled"] = True

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            state["code"] = close_code
            ended.set()

    app = Starlette(routes=[WebSocketRoute("/f", Forever)])
    async with serve(app) as server:
        async with connect(server.ws_url("/f")) as ws:
            await ws.send_json(1)
            with anyio.fail_after(10):
                assert await ws.recv() == "running"
            await ws.abort()
        with anyio.fail_after(10):
            await ended.wait()
    assert state["cancelled"] is True
    assert state["code"] in (1005, 1006)  # uvicorn reports 1005, hypercorn 1006


async def test_idle_timeout_on_a_real_server() -> None:
    """idle_timeout closes a silent client with 1000 "idle timeout"."""

    class Idle(BaseWSEndpoint):
        idle_timeout = 0.2

    app = Starlette(routes=[WebSocketRoute("/idle", Idle)])
    async with serve(app) as server, connect(server.ws_url("/idle")) as ws:
        with anyio.fail_after(10), pytest.raises(ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1000, "idle timeout")


async def test_oversized_message_on_a_real_server() -> None:
    """A text message over max_message_size closes with 1009 on a real server."""

    class Small(BaseWSEndpoint):
        max_message_size = 100

    app = Starlette(routes=[WebSocketRoute("/small", Small)])
    async with serve(app) as server, connect(server.ws_url("/small")) as ws:
        await ws.send(json.dumps("z" * 200))
        with anyio.fail_after(10):
            await ws.wait_closed()
        assert ws.close_code == 1009
