"""The tutorial's chat.py after step 2: names and a message shape."""

from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

# --8<-- [start:chat]
from wsrooms import InvalidMessage, RoomEndpoint


class Chat(RoomEndpoint):
    def name(self) -> str:
        return str(self.websocket.query_params.get("name") or f"guest-{id(self) % 10000}")

    def room(self) -> str:
        return str(self.websocket.path_params["room"])

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        await self.join(self.room())

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise InvalidMessage('send {"text": "..."}')
        await self.broadcast(
            self.room(), {"event": "message", "name": self.name(), "text": data["text"]}
        )
        # --8<-- [end:chat]


app = Starlette(routes=[WebSocketRoute("/ws/{room}", Chat)])
