"""wsrooms ``Room``, decorator API 2 (SPEC §2.4): the caller owns the receive loop.

One ``Room`` per room name, all in one ``Hub``. Subscribers are connected to their room
(``async with room.connect(websocket)``) and only read; the publisher is accepted but not
connected, and awaits ``room.push()`` for each message: a push made outside any connection
must be awaited, or nothing slows a flood at its source (docs: "Broadcast, delivery and
slow clients"). Awaiting it costs nothing while every member keeps up.
"""

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from targets import SEND_QUEUE_SIZE, SLOW_CONSUMER
from wsrooms import Hub, Room

hub = Hub()
rooms: dict[str, Room] = {}


def get_room(name: str) -> Room:
    room = rooms.get(name)
    if room is None:
        room = rooms[name] = Room(
            name=name, hub=hub, send_queue_size=SEND_QUEUE_SIZE, slow_consumer=SLOW_CONSUMER
        )
    return room


async def subscriber(websocket: WebSocket) -> None:
    room = get_room(websocket.path_params["room"])
    async with room.connect(websocket):
        async for message in websocket.iter_text():
            room.push(message)  # subscribers never send; kept to show the API 2 loop


async def publisher(websocket: WebSocket) -> None:
    room = get_room(websocket.path_params["room"])
    await websocket.accept()
    async for message in websocket.iter_text():
        await room.push(message)


async def stats(websocket: WebSocket) -> None:
    """For the harness: how many messages the hub dropped (slow-consumer drop policies)."""
    await websocket.accept()
    await websocket.send_json({"dropped": hub.dropped})
    await websocket.close()


app = Starlette(
    routes=[
        WebSocketRoute("/stats", stats),
        WebSocketRoute("/sub/{room}", subscriber),
        WebSocketRoute("/pub/{room}", publisher),
    ]
)
