"""A chat with rooms: the URL picks the room, a browser page at /.

The hub is in memory, or spans every worker through Redis when `WSROOMS_REDIS_URL` is set
(for example `redis://127.0.0.1:6379/0`, with the `redis` extra installed): then
`uvicorn examples.chat:app --workers 2` or `hypercorn -k trio --workers 2
examples.chat:app` serve one set of rooms (see docs/how-to/redis.md).

This is the chat.py that the tutorial (docs/tutorial.md) builds. Next to chat.html, run it
on asyncio or on trio::

    uvicorn chat:app
    hypercorn -k trio chat:app

From the root of the wsrooms repository, name the module ``examples.chat`` instead
(``uvicorn examples.chat:app``). Then open http://127.0.0.1:8000/ (add ``?room=NAME``
for another room and ``&name=NAME`` to choose your name).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import Hub, InvalidMessage, RoomEndpoint

# WSROOMS_REDIS_URL unset: Hub(None), the in-memory hub of one process.
hub = Hub(os.environ.get("WSROOMS_REDIS_URL"))
PAGE = (Path(__file__).parent / "chat.html").read_text(encoding="utf-8")


class Chat(RoomEndpoint):
    """One room per URL: `/ws/{room}`. Messages are `{"text": ...}` JSON objects."""

    hub = hub
    max_message_size = 4096
    idle_timeout = 600

    def name(self) -> str:
        return str(self.websocket.query_params.get("name") or f"guest-{id(self) % 10000}")

    def room(self) -> str:
        return str(self.websocket.path_params["room"])

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        await self.join(self.room())

    async def on_join(self, room: str) -> None:
        await self.broadcast(
            room, {"event": "join", "name": self.name(), "members": self.count(room)}
        )

    async def on_leave(self, room: str) -> None:
        await self.broadcast(
            room, {"event": "leave", "name": self.name(), "members": self.count(room)}
        )

    def count(self, room: str) -> int:
        return len(self.hub.members(room))

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise InvalidMessage('send {"text": "..."}')
        await self.broadcast(
            self.room(), {"event": "message", "name": self.name(), "text": data["text"]}
        )


async def homepage(request: Any) -> HTMLResponse:
    return HTMLResponse(PAGE)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with hub:  # shutdown: uvicorn closes with 1012; on hypercorn, wsrooms with 1001
        yield


app = Starlette(
    routes=[Route("/", homepage), WebSocketRoute("/ws/{room}", Chat)],
    lifespan=lifespan,
)
