"""The ``websockets`` library's own trio server (``websockets.trio``): the trio ceiling.

On trio, ``websockets.trio.broadcast()`` is awaited: it starts one task per member that
writes the frame, and returns when every write has completed.
"""

from functools import partial

import trio
from websockets.trio.server import ServerConnection, broadcast, serve

rooms: dict[str, set[ServerConnection]] = {}


async def handler(websocket: ServerConnection) -> None:
    role, _, room = websocket.request.path.strip("/").partition("/")
    if role == "echo":
        async for message in websocket:
            await websocket.send(message)
    elif role == "pub":
        async for message in websocket:
            await broadcast(list(rooms.get(room, ())), message)
    else:
        members = rooms.setdefault(room, set())
        members.add(websocket)
        try:
            async for _ in websocket:
                pass
        finally:
            members.discard(websocket)
            if not members and rooms.get(room) is members:
                del rooms[room]


async def serve_forever(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve, handler, port, host=host, compression=None, backlog=4096)
        )


def main(host: str, port: int) -> None:
    trio.run(serve_forever, host, port)


if __name__ == "__main__":
    main("127.0.0.1", 8765)
