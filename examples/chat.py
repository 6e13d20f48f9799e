"""The chat demo: rooms from the URL, a browser page, on the in-memory hub.

Run it on asyncio::

    uvicorn examples.chat:app

or on trio::

    hypercorn -k trio examples.chat:app

then open http://127.0.0.1:8000/ (append ?room=NAME for another room).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import Hub, InvalidMessage, RoomEndpoint

hub = Hub()
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
    async with hub:  # closes every chat connection with 1001 on shutdown
        yield


app = Starlette(
    routes=[Route("/", homepage), WebSocketRoute("/ws/{room}", Chat)],
    lifespan=lifespan,
)
