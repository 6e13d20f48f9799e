"""Use case 1: an infinite server-push feed, one per connection.

The client sends "subscribe" (as often as it likes); the server pushes ticks until the
client leaves. A second "subscribe" while a feed runs is answered, not doubled: the
registration hooks keep a registry of the connection's feed task.

Run it from the root of the wsrooms repository, on asyncio or on trio::

    uvicorn examples.feed:app
    hypercorn -k trio examples.feed:app

and talk to it with `python -m websockets ws://127.0.0.1:8000/feed`; then type `subscribe`.
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import BaseWSEndpoint, InvalidMessage


class Feed(BaseWSEndpoint):
    encoding = "text"
    interval = 0.01  # seconds between ticks

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.feed_task: str | None = None

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> Any:
        if data != "subscribe":
            raise InvalidMessage('send "subscribe"')
        if self.feed_task is not None:
            await self.send_message({"info": "already subscribed"})
            return None
        self.feed_task = task_id
        tick = 0
        while True:  # ends when the client leaves: the task is cancelled
            await self.send_message({"tick": tick})
            tick += 1
            await anyio.sleep(self.interval)

    async def _unregister_background_task(
        self, task_id: str, websocket: WebSocket, task_result: Any
    ) -> None:
        if task_id == self.feed_task:
            self.feed_task = None


app = Starlette(routes=[WebSocketRoute("/feed", Feed)])
