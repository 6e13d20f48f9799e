"""One slow client cannot stall a room: a room of 20 on a real server, 2,000 messages.

These tests push 76,000 frames through real servers and clients, so asyncio runs here
without debug mode (which slows this load about sevenfold); every other test uses it.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests import _servers
from wsrooms import Hub, RoomEndpoint
from wsrooms.testing import ServerName, connect, serve

pytestmark = pytest.mark.anyio

# Run on uvicorn, hypercorn (asyncio) and hypercorn (trio).
backend_and_server = _servers.backend_and_server
anyio_backend = _servers.anyio_backend
server_name = _servers.server_name


class Fanout(RoomEndpoint):
    """Members join "r"; the member connected with ?pub=1 publishes what it receives."""

    encoding = "text"
    send_queue_size = 16
    hub = Hub()
    events: list[tuple[str, int]] = []

    async def on_connect(self, websocket: WebSocket) -> None:
        await self.join("r")
        await super().on_connect(websocket)

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> None:
        await self.broadcast("r", data, exclude_self=True)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.events.append((websocket.query_params.get("who", "?"), close_code))


MESSAGES = 2000
PAYLOAD = "y" * 4000


async def _fan_out_with_stuck_member(server_name: ServerName, policy: str) -> type[Fanout]:
    cls: type[Fanout] = type("F", (Fanout,), {"hub": Hub(), "events": [], "slow_consumer": policy})
    app = Starlette(routes=[WebSocketRoute("/ws", cls)])
    async with serve(app, server=server_name) as server, AsyncExitStack() as stack:
        # A small receive buffer, no compression, and nothing read: TCP backpressure
        # reaches the server after a few frames.
        stuck = await stack.enter_async_context(
            connect(server.ws_url("/ws?who=stuck"), receive_buffer=4096)
        )
        readers = [
            await stack.enter_async_context(connect(server.ws_url(f"/ws?who={i}")))
            for i in range(19)
        ]
        assert len(cls.hub.members("r")) == 20  # each joined before its accept
        publisher = readers[0]
        peak_queue = 0

        async def publish() -> None:
            nonlocal peak_queue
            for i in range(MESSAGES):
                await publisher.send(f"{i:05d}{PAYLOAD}")
                if i % 50 == 0:
                    queued = (c.statistics().queued for c in cls.hub.connections)
                    peak_queue = max(peak_queue, *queued)

        received: dict[int, list[int]] = {}

        async def read(index: int, ws: Any) -> None:
            got = received.setdefault(index, [])
            for _ in range(MESSAGES):
                got.append(int((await ws.recv())[:5]))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(publish)
                for index, ws in enumerate(readers[1:], 1):
                    tg.start_soon(read, index, ws)
        # The 18 other readers got everything, in order (the publisher is excluded).
        assert len(received) == 18
        assert all(got == list(range(MESSAGES)) for got in received.values())
        # Server memory stays bounded: an outbox holds at most its bound, plus one event
        # per broadcaster waiting for room in it (at most the publisher's max_tasks).
        assert peak_queue <= cls.send_queue_size + cls.max_tasks
        await stuck.abort()
    return cls


async def test_stuck_member_does_not_delay_the_others_disconnect(
    server_name: ServerName,
) -> None:
    """Room of 20, one stops reading: the rest get all 2,000 in order; it is closed with 1008."""
    cls = await _fan_out_with_stuck_member(server_name, "disconnect")
    assert ("stuck", 1008) in cls.events
    assert cls.hub.dropped == 0


async def test_stuck_member_with_drop_policy_counts_drops(server_name: ServerName) -> None:
    """With drop_oldest the stuck member stays until it leaves; its drops are counted."""
    cls = await _fan_out_with_stuck_member(server_name, "drop_oldest")
    assert cls.hub.dropped > 0
    assert ("stuck", 1008) not in cls.events
