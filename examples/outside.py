"""Send to WebSockets from outside a connection: an HTTP route, a background job, one user.

Every socket joins `news` and a room of its own user, `user:NAME`. An HTTP route posts to
`news`, another sends to one user (in however many tabs they have open), a third closes
that user's sockets, and a job
started in the lifespan posts a tick to `news` every `TICK_SECONDS`. All three only call
`await hub.broadcast(room, message)`.

Run it from the root of the wsrooms repository::

    uvicorn examples.outside:app
    hypercorn -k trio examples.outside:app

then listen with `python -m websockets "ws://127.0.0.1:8000/ws?user=ann"` and, in another
terminal, `curl -d '{"text": "hello"}' http://127.0.0.1:8000/news` or
`curl -d '{"text": "hi ann"}' http://127.0.0.1:8000/users/ann`
(`curl -X POST http://127.0.0.1:8000/users/ann/logout` closes ann's sockets).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import Hub, RoomEndpoint

hub = Hub()
TICK_SECONDS = 10.0


def user_room(user: str) -> str:
    return f"user:{user}"


# --8<-- [start:endpoint]
class Notifications(RoomEndpoint):
    """A socket per browser tab; it listens, and what it sends is ignored."""

    hub = hub

    async def on_connect(self, websocket: WebSocket) -> None:
        # A real application takes the user from its session: see the Security guide.
        self.user = websocket.query_params.get("user", "anonymous")
        await self.join(user_room(self.user))  # before accept: no message is missed
        await self.join("news")
        await super().on_connect(websocket)
        # --8<-- [end:endpoint]

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        pass


# --8<-- [start:news]
async def post_news(request: Request) -> JSONResponse:
    """POST /news {"text": ...}: to every socket in `news`."""
    text = (await request.json())["text"]
    await hub.broadcast("news", {"news": text})
    return JSONResponse({"sockets": len(hub.members("news"))})
    # --8<-- [end:news]


# --8<-- [start:user]
async def notify_user(request: Request) -> JSONResponse:
    """POST /users/{user} {"text": ...}: to every socket of one user."""
    user = request.path_params["user"]
    text = (await request.json())["text"]
    await hub.broadcast(user_room(user), {"to": user, "text": text})
    return JSONResponse({"sockets": len(hub.members(user_room(user)))})
    # --8<-- [end:user]


# --8<-- [start:logout]
async def log_out(request: Request) -> JSONResponse:
    """POST /users/{user}/logout: close every socket of one user, with 4001."""
    user = request.path_params["user"]
    closed = 0
    for connection in hub.members(user_room(user)):
        if isinstance(connection, Notifications):
            await connection.close(4001, "logged out")
            closed += 1
    return JSONResponse({"closed": closed})
    # --8<-- [end:logout]


# --8<-- [start:job]
async def ticker() -> None:
    """A background job: a tick to `news` every TICK_SECONDS, for as long as the app runs."""
    for n in itertools.count():
        await anyio.sleep(TICK_SECONDS)
        await hub.broadcast("news", {"tick": n})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with hub, anyio.create_task_group() as jobs:
        jobs.start_soon(ticker)
        yield
        jobs.cancel_scope.cancel()  # stop the jobs first, then the hub
        # --8<-- [end:job]


app = Starlette(
    routes=[
        Route("/news", post_news, methods=["POST"]),
        Route("/users/{user}", notify_user, methods=["POST"]),
        Route("/users/{user}/logout", log_out, methods=["POST"]),
        WebSocketRoute("/ws", Notifications),
    ],
    lifespan=lifespan,
)
