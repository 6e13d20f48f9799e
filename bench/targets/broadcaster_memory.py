"""encode/broadcaster (memory backend) on Starlette.

Each subscriber holds a ``broadcast.subscribe()`` (an unbounded asyncio queue inside
broadcaster) and forwards its events to the socket, next to a task that reads the socket
to notice the client leaving: the shape of broadcaster's own chat example.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

broadcast = Broadcast("memory://")


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
    try:
        yield
    finally:
        await broadcast.disconnect()


app = Starlette(
    routes=[
        WebSocketRoute("/sub/{room}", subscriber),
        WebSocketRoute("/pub/{room}", publisher),
    ],
    lifespan=lifespan,
)
