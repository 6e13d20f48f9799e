"""A relay app on a Redis hub: served in the test process and as a separate server process.

`/ws/{room}` joins `room` and broadcasts every text message it receives to it, one at a
time (`max_tasks = 1`), so each sender's messages keep their order. As a server process:

    WSROOMS_REDIS_URL=redis://127.0.0.1:PORT/0 uvicorn tests._redis_app:app
    WSROOMS_REDIS_URL=redis://127.0.0.1:PORT/0 hypercorn -k trio tests._redis_app:app
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import Hub, RoomEndpoint

__all__ = ["app", "make_app"]


def make_app(url: str | None) -> tuple[Starlette, Hub]:
    relay_hub = Hub(url)

    class Relay(RoomEndpoint):
        hub = relay_hub
        max_tasks = 1
        encoding = "text"

        async def on_connect(self, websocket: WebSocket) -> None:
            await super().on_connect(websocket)
            await self.join(str(websocket.path_params["room"]))

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.broadcast(str(websocket.path_params["room"]), data)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with relay_hub:
            yield

    return Starlette(routes=[WebSocketRoute("/ws/{room}", Relay)], lifespan=lifespan), relay_hub


app, hub = make_app(os.environ.get("WSROOMS_REDIS_URL"))
