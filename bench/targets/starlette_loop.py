"""Starlette with a hand-written room dict and a sequential ``await send_text`` loop.

This is the pattern most applications copy (FastAPI's ``ConnectionManager``): one task
per socket, and a broadcast that awaits each member's send in turn. A member whose
socket is full therefore holds up every member after it.

``/echo`` is a plain Starlette ``WebSocketEndpoint`` (one ``on_receive`` at a time, no
task per message): the baseline of the echo scenario.
"""

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


class ConnectionManager:
    def __init__(self) -> None:
        self.rooms: dict[str, set[WebSocket]] = {}

    def join(self, room: str, websocket: WebSocket) -> None:
        self.rooms.setdefault(room, set()).add(websocket)

    def leave(self, room: str, websocket: WebSocket) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(websocket)
            if not members:
                del self.rooms[room]

    async def broadcast(self, room: str, message: str) -> None:
        for websocket in list(self.rooms.get(room, ())):
            try:
                await websocket.send_text(message)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.leave(room, websocket)


manager = ConnectionManager()


async def subscriber(websocket: WebSocket) -> None:
    room = websocket.path_params["room"]
    await websocket.accept()
    manager.join(room, websocket)
    try:
        async for _ in websocket.iter_text():
            pass
    finally:
        manager.leave(room, websocket)


async def publisher(websocket: WebSocket) -> None:
    room = websocket.path_params["room"]
    await websocket.accept()
    async for message in websocket.iter_text():
        await manager.broadcast(room, message)


class Echo(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: str) -> None:
        await websocket.send_text(data)


app = Starlette(
    routes=[
        WebSocketRoute("/echo", Echo),
        WebSocketRoute("/sub/{room}", subscriber),
        WebSocketRoute("/pub/{room}", publisher),
    ]
)
