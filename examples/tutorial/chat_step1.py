"""The tutorial's chat.py after step 1: a room per URL."""

from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import RoomEndpoint


class Chat(RoomEndpoint):
    def room(self) -> str:
        return str(self.websocket.path_params["room"])

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)  # accepts the connection
        await self.join(self.room())

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.broadcast(self.room(), data)


app = Starlette(routes=[WebSocketRoute("/ws/{room}", Chat)])
