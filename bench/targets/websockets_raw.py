"""The ``websockets`` library's own asyncio server with ``websockets.broadcast()``.

No ASGI layer: ``broadcast()`` encodes once and writes the frame to each member's
transport synchronously. This is the Python ceiling for fan-out (run on uvloop like the
ASGI targets).
"""

from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: dict[str, set[ServerConnection]] = {}


async def handler(websocket: ServerConnection) -> None:
    role, _, room = websocket.request.path.strip("/").partition("/")
    if role == "echo":
        async for message in websocket:
            await websocket.send(message)
    elif role == "pub":
        async for message in websocket:
            broadcast(rooms.get(room, ()), message)
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
    async with serve(handler, host, port, compression=None, backlog=4096) as server:
        await server.serve_forever()


def main(host: str, port: int) -> None:
    import uvloop

    uvloop.run(serve_forever(host, port))


if __name__ == "__main__":
    main("127.0.0.1", 8765)
