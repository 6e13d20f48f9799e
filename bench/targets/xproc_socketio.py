"""python-socketio rooms across processes: ``AsyncServer`` with ``AsyncRedisManager``.

For the cross-process scenario (bench/cross_process.py). ``BENCH_REDIS_URL`` set: every
server process shares its rooms through that Redis (python-socketio's documented set-up,
``client_manager=socketio.AsyncRedisManager(url)``). Unset: the default in-memory manager
of one process. Otherwise the same app as socketio_rooms.py: the role and the room come
from the Engine.IO query string; a publisher's ``m`` events are emitted to the room (the
publisher is not in it).
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs

import socketio

REDIS_URL = os.environ.get("BENCH_REDIS_URL") or None
manager = socketio.AsyncRedisManager(REDIS_URL) if REDIS_URL else None
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins="*")
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


app = socketio.ASGIApp(sio)
