"""The tutorial's chat.py after step 5: the browser page at /, read from chat.html."""

# --8<-- [start:imports]
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import InvalidMessage, RoomEndpoint

PAGE = (Path(__file__).parent / "chat.html").read_text(encoding="utf-8")
# --8<-- [end:imports]


class Chat(RoomEndpoint):
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


# --8<-- [start:page]
async def homepage(request: Any) -> HTMLResponse:
    return HTMLResponse(PAGE)


app = Starlette(routes=[Route("/", homepage), WebSocketRoute("/ws/{room}", Chat)])
# --8<-- [end:page]
