"""wsrooms ``RoomEndpoint`` for the cross-process scenario (bench/cross_process.py).

``BENCH_REDIS_URL`` set: ``Hub("redis://…")``, rooms shared by every process on that
Redis. Unset: the in-memory hub of one process (the reference). The same file either
way, so the two differ only by the hub's backend. The hub runs in the lifespan, as
docs/how-to/redis.md says. Subscribers (``/sub/{room}``) join in ``on_connect``; each
message of a publisher (``/pub/{room}``, not a member) is broadcast to the room.
``GET /stats`` answers ``hub.statistics()`` (and the Redis backend's) as JSON, so the
harness can report what the hub counted as lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from targets import SEND_QUEUE_SIZE
from wsrooms import Hub, RoomEndpoint

REDIS_URL = os.environ.get("BENCH_REDIS_URL") or None
hub = Hub(REDIS_URL, name="bench")


class Target(RoomEndpoint):
    hub = hub
    encoding = "text"
    send_queue_size = SEND_QUEUE_SIZE

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        if websocket.path_params["role"] == "sub":
            await self.join(websocket.path_params["room"])

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.broadcast(websocket.path_params["room"], data)


def _plain(snapshot: Any) -> Any:
    if dataclasses.is_dataclass(snapshot) and not isinstance(snapshot, type):
        return dataclasses.asdict(snapshot)
    return repr(snapshot)


async def stats(request: Request) -> JSONResponse:
    out: dict[str, Any] = {"hub": _plain(hub.statistics())}
    backend_stats = getattr(hub.backend, "statistics", None)
    if callable(backend_stats):
        out["backend"] = _plain(backend_stats())
    return JSONResponse(out)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with hub:
        yield


app = Starlette(
    routes=[
        Route("/stats", stats),
        WebSocketRoute("/{role}/{room}", Target),
    ],
    lifespan=lifespan,
)
