"""The Room decorator API on FastAPI: the examples of the websocket_rooms README.

The Room API follows the one that the websocket_rooms project proposed in its README
(https://github.com/yoelbassin/Websocket-Rooms): a `Room` with decorated handlers, joined
by `await room.connect(websocket)` (API 1) or `async with room.connect(websocket)`
(API 2), and a `ConnectionsManager` for other handlers on the same room. This file runs
those examples as written there, with one fix (below).

- `/chat`: API 1 (`await room.connect(websocket)`), handlers by decorator.
- `/chat2`: API 2 (`async with room.connect(websocket)`), un-awaited `room.push`.
- `/listen`: a listen-only socket on the same room (API 2 with `room.listen`).
- `/chat/{client_id}`, `/chat_ws2/{client_id}`: the `RoomWithClientId` subclass.
- `/chat_ws/{client_id}`, `/listening_ws/{client_id}`: two `ConnectionsManager`s on it.
- `/announce`: an endpoint class on the same hub.

The fix: websocket_rooms' `RoomWithClientId.connect` calls `super().connect(websocket)`
without `client_id`, although its `on_connection` handler takes `client_id`. Here
`connect` passes the argument on, so the handler gets it. It is also a plain `def` that
returns `super().connect(...)`, so that both `await chat_room.connect(...)` (API 1) and
`async with chat_room.connect(...)` (API 2) work.

Run it from the root of the wsrooms repository (FastAPI needed: `pip install fastapi`)::

    uvicorn examples.room_api:app
    hypercorn -k trio examples.room_api:app

and connect with `python -m websockets ws://127.0.0.1:8000/chat`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, WebSocket

from wsrooms import BaseRoom, ConnectionsManager, Room, RoomEndpoint

logger = logging.getLogger("examples.room_api")
app = FastAPI()

# --- Basic use -------------------------------------------------------------------

room = Room()


@room.on_receive("json")
async def on_receive(room: Room, websocket: WebSocket, message: Any) -> None:
    await room.push(message)


@room.on_connection
async def on_chatroom_connection(room: Room, websocket: WebSocket) -> None:
    logger.info("%s joined the chat room", websocket.client.host if websocket.client else "?")


# API 1
@app.websocket("/chat")
async def connect_websocket(websocket: WebSocket) -> None:
    await room.connect(websocket)


# API 2
@app.websocket("/chat2")
async def connect_websocket2(websocket: WebSocket) -> None:
    async with room.connect(websocket):
        logger.info("%s joined the chat room", websocket.client.host if websocket.client else "?")
        async for message in websocket.iter_text():
            room.push(message)


# Listen-only, on the same room
@app.websocket("/listen")
async def listen(websocket: WebSocket) -> None:
    async with room.connect(websocket):
        await room.listen(websocket)


# --- Advanced usage: a Room subclass with a client id per socket ---------------------


class RoomWithClientId(Room):
    def __init__(self, base_room: BaseRoom | None = None, **options: Any) -> None:
        super().__init__(base_room, **options)
        self._id_to_ws: dict[WebSocket, int] = {}

    def connect(self, websocket: WebSocket, client_id: int) -> Any:
        self._id_to_ws[websocket] = client_id
        return super().connect(websocket, client_id)  # pass client_id on to the handlers

    def get_client_id(self, websocket: WebSocket) -> int | None:
        return self._id_to_ws.get(websocket)


chat_room = RoomWithClientId()


@chat_room.on_receive("json")
async def on_chatroom_receive(room: RoomWithClientId, websocket: WebSocket, message: Any) -> None:
    await room.push({"from": room.get_client_id(websocket), "message": message})


@chat_room.on_connection
async def on_client_connection(
    room: RoomWithClientId, websocket: WebSocket, client_id: int
) -> None:
    logger.info("%s joined the chat room", client_id)


@chat_room.on_disconnect
async def on_client_disconnect(
    room: RoomWithClientId, websocket: WebSocket, client_id: int
) -> None:
    room._id_to_ws.pop(websocket, None)


# API 1, as websocket_rooms writes it
@app.websocket("/chat/{client_id}")
async def connect_client(websocket: WebSocket, client_id: int) -> None:
    await chat_room.connect(websocket, client_id)


# API 2 with the subclass
@app.websocket("/chat_ws2/{client_id}")
async def connect_client2(websocket: WebSocket, client_id: int) -> None:
    async with chat_room.connect(websocket, client_id):
        async for message in websocket.iter_text():
            chat_room.push({"from": client_id, "message": message})


# --- ConnectionsManager: other handlers on the same room ------------------------

# for websockets that are sending and receiving data
chat_connection = ConnectionsManager(chat_room)


@chat_connection.on_receive("json")
async def on_manager_receive(room: RoomWithClientId, websocket: WebSocket, message: Any) -> None:
    await room.push(message)


@chat_connection.on_connection
async def on_chat_connection(room: RoomWithClientId, websocket: WebSocket, client_id: int) -> None:
    logger.info("%s joined the chat room", client_id)


@app.websocket("/chat_ws/{client_id}")
async def connect_chat_websocket(websocket: WebSocket, client_id: int) -> None:
    await chat_connection.connect(websocket, client_id)


# for websockets that are only receiving data
listener_connection = ConnectionsManager(chat_room)


@listener_connection.on_connection
async def on_listener_connection(
    room: RoomWithClientId, websocket: WebSocket, client_id: int
) -> None:
    logger.info("%s joined as a listener to the chat room", client_id)


@app.websocket("/listening_ws/{client_id}")
async def connect_listening_websocket(websocket: WebSocket, client_id: int) -> None:
    await listener_connection.connect(websocket, client_id)


# --- An endpoint class mounted on FastAPI, sharing the hub of `chat_room` -------------


class Announcements(RoomEndpoint):
    hub = chat_room.hub

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        await self.join(chat_room.name)

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.broadcast(chat_room.name, {"announcement": data})


# Starlette types this parameter as a function; endpoint classes are ASGI apps it accepts.
app.router.add_websocket_route("/announce", Announcements)  # type: ignore[arg-type]
