"""python-socketio rooms, served as an ASGI app.

The load generator speaks Engine.IO v4 over the WebSocket transport directly
(``/socket.io/?EIO=4&transport=websocket``), so there is no HTTP long-polling phase.
The role and the room come from the query string; a publisher's ``m`` events are emitted
to the room (the publisher is not in it); ``e`` events are echoed to the sender.
"""

from urllib.parse import parse_qs

import socketio

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
rooms: dict[str, str] = {}


@sio.event
async def connect(sid: str, environ: dict, auth: object = None) -> None:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    role = query.get("role", ["sub"])[0]
    room = query.get("room", ["bench"])[0]
    rooms[sid] = room
    if role == "sub":
        await sio.enter_room(sid, room)


@sio.event
async def disconnect(sid: str, reason: object = None) -> None:
    rooms.pop(sid, None)


@sio.on("m")
async def on_message(sid: str, data: str) -> None:
    await sio.emit("m", data, to=rooms[sid])


@sio.on("e")
async def on_echo(sid: str, data: str) -> None:
    await sio.emit("e", data, to=sid)


app = socketio.ASGIApp(sio)
