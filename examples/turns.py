"""Use case 3: turn-taking, with one sender task fed by the receiving handlers.

The client and the server count in turns: the client says an odd number, the server the
next even one. Receiving handlers check the turn and hand the number to a single sender
task through a bounded memory stream, so replies go out one at a time, in turn order.

Run it from the root of the wsrooms repository, on asyncio or on trio::

    uvicorn examples.turns:app
    hypercorn -k trio examples.turns:app

and talk to it with `python -m websockets ws://127.0.0.1:8000/turns`; then type `1`, `3`, `5`.
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import BaseWSEndpoint, InvalidMessage


class Turns(BaseWSEndpoint):
    max_tasks = 1  # one move at a time, in arrival order

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.expected = 1
        self.moves: MemoryObjectSendStream[int] | None = None

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        if self.moves is None:
            self.moves, receiver = anyio.create_memory_object_stream[int](8)
            assert self.task_group is not None
            self.task_group.start_soon(self.sender, receiver)
        if data != self.expected:
            raise InvalidMessage(f"not your turn: say {self.expected}")
        self.expected += 2
        await self.moves.send(data)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        if self.moves is not None:
            self.moves.close()

    async def sender(self, moves: MemoryObjectReceiveStream[int]) -> None:
        async with moves:
            async for number in moves:
                await self.send_message(number + 1)


app = Starlette(routes=[WebSocketRoute("/turns", Turns)])
