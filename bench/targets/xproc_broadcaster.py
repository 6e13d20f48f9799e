"""encode/broadcaster across processes: ``Broadcast("redis://…")`` on Starlette.

For the cross-process scenario (bench/cross_process.py). ``BENCH_REDIS_URL`` set: the
Redis backend (redis-py pub/sub), so every server process on that Redis shares the
channels; unset: ``memory://``. Otherwise the same app as broadcaster_memory.py, the shape
of broadcaster's own chat example: each subscriber holds a ``broadcast.subscribe()`` and
forwards its events to its socket, next to a task that reads the socket to notice the
client leaving; a publisher's messages are ``publish()``-ed to the room's channel.

One work-around, without which broadcaster's Redis backend delivers nothing here: its
listener task waits for a first ``subscribe``, which sets its "ready" event *before*
redis-py has recorded the subscription; the listener wakes while that SUBSCRIBE is in
flight, finds redis-py's ``listen()`` over at once (nothing subscribed yet), clears the
event and waits again, for good, as no second subscribe comes for that channel (checked
with broadcaster 0.3.1 and redis-py 8.1: 0 of 10 fresh subscribers got a message). So the
lifespan holds one subscription to a keep-alive channel (never published to) before the
app serves: every later subscribe then finds redis-py subscribed and the listener stays up.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

REDIS_URL = os.environ.get("BENCH_REDIS_URL") or None
broadcast = Broadcast(REDIS_URL or "memory://")


async def subscriber(websocket: WebSocket) -> None:
    room = websocket.path_params["room"]
    await websocket.accept()
    async with anyio.create_task_group() as tg:

        async def receiver() -> None:
            async for _ in websocket.iter_text():
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(receiver)
        async with broadcast.subscribe(channel=room) as events:
            async for event in events:
                await websocket.send_text(event.message)


async def publisher(websocket: WebSocket) -> None:
    room = websocket.path_params["room"]
    await websocket.accept()
    async for message in websocket.iter_text():
        await broadcast.publish(channel=room, message=message)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    held = asyncio.Event()
    done = asyncio.Event()

    async def keep_alive() -> None:
        async with broadcast.subscribe(channel="bench-keep-alive"):
            held.set()
            await done.wait()

    task = asyncio.create_task(keep_alive()) if REDIS_URL else None
    try:
        if task is not None:
            await asyncio.wait_for(held.wait(), 10)
        yield
    finally:
        done.set()
        if task is not None:
            await asyncio.wait_for(task, 5)
        await broadcast.disconnect()


app = Starlette(
    routes=[
        WebSocketRoute("/sub/{room}", subscriber),
        WebSocketRoute("/pub/{room}", publisher),
    ],
    lifespan=lifespan,
)
