"""A server shutting down with 200 clients connected ends every connection properly.

What uvicorn and hypercorn do on SIGTERM (`Server.shutdown()` asks them the same way):
every unregister, `on_leave` and `on_disconnect` runs, and the hub is left empty.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import Hub, RoomEndpoint
from wsrooms.testing import ServerName, connect, serve

pytestmark = pytest.mark.anyio

CLIENTS = 200


def make_endpoint() -> type[RoomEndpoint]:
    class Member(RoomEndpoint):
        """Joins two rooms; each message starts a handler that waits for ever."""

        hub = Hub()
        counts: dict[str, int] = {"unregister": 0, "leave": 0, "disconnect": 0, "started": 0}
        started: anyio.Event

        async def on_connect(self, websocket: WebSocket) -> None:
            await self.join("all")
            await self.join(f"own-{id(self)}")
            await super().on_connect(websocket)

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            self.counts["started"] += 1
            if self.counts["started"] == CLIENTS:
                self.started.set()
            await anyio.sleep_forever()

        async def _unregister_background_task(
            self, task_id: str, websocket: WebSocket, task_result: Any
        ) -> None:
            self.counts["unregister"] += 1

        async def on_leave(self, room: str) -> None:
            self.counts["leave"] += 1

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            self.counts["disconnect"] += 1

    return Member


@pytest.mark.parametrize("server_name", ["uvicorn", "hypercorn"])
async def test_shutdown_with_200_clients_cleans_up_every_connection(
    server_name: ServerName,
) -> None:
    """Every task unregistered, every room left, every on_disconnect run, hub empty."""
    cls = make_endpoint()
    cls.started = anyio.Event()  # type: ignore[attr-defined]
    app = Starlette(routes=[WebSocketRoute("/ws", cls)])
    async with (
        serve(app, server=server_name, shutdown_timeout=2) as server,
        AsyncExitStack() as stack,
    ):
        clients = [
            await stack.enter_async_context(connect(server.ws_url("/ws"))) for _ in range(CLIENTS)
        ]
        for client in clients:
            await client.send_json({"work": "forever"})
        with anyio.fail_after(30):
            await cls.started.wait()  # type: ignore[attr-defined]
        assert cls.hub.statistics().connections == CLIENTS
        with anyio.fail_after(30):
            await server.shutdown()
    counts = cls.counts  # type: ignore[attr-defined]
    assert counts["unregister"] == CLIENTS
    assert counts["leave"] == 2 * CLIENTS
    assert counts["disconnect"] == CLIENTS
    assert cls.hub.statistics().connections == 0
    assert cls.hub.rooms() == frozenset()
