"""wsrooms ``RoomEndpoint`` (and a ``BaseWSEndpoint`` echo), written to SPEC §1 and §2.2.

Subscribers join their room in ``on_connect``; the publisher does not join, and each of
its messages runs as a task that broadcasts it to the room. ``/echo`` is a
``BaseWSEndpoint``: one task per received message, the cost the echo scenario measures
against Starlette's ``WebSocketEndpoint``.
"""

from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from targets import SEND_QUEUE_SIZE, SLOW_CONSUMER
from wsrooms import BaseWSEndpoint, RoomEndpoint


class Target(RoomEndpoint):
    encoding = "text"
    send_queue_size = SEND_QUEUE_SIZE
    slow_consumer = SLOW_CONSUMER

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        if websocket.path_params["role"] == "sub":
            await self.join(websocket.path_params["room"])

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.broadcast(websocket.path_params["room"], data)


class Echo(BaseWSEndpoint):
    encoding = "text"

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(data)


async def stats(websocket: WebSocket) -> None:
    """For the harness: how many messages the hub dropped (slow-consumer drop policies)."""
    await websocket.accept()
    await websocket.send_json({"dropped": Target.hub.dropped})
    await websocket.close()


app = Starlette(
    routes=[
        WebSocketRoute("/stats", stats),
        WebSocketRoute("/echo", Echo),
        WebSocketRoute("/{role}/{room}", Target),
    ]
)
