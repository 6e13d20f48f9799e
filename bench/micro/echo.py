"""In-process echo micro-benchmark: the cost of a task per message.

Feeds N text messages through an endpoint's receive loop with an ASGI `send` that does
nothing, and compares a wsrooms `BaseWSEndpoint` (a task per message) with Starlette's
`WebSocketEndpoint` (handled inline). Prints µs/message and the ratio.

    python bench/micro/echo.py [--messages 50000] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio
from starlette.endpoints import WebSocketEndpoint
from starlette.websockets import WebSocket

from wsrooms import BaseWSEndpoint


class WsroomsEcho(BaseWSEndpoint):
    encoding = "text"

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(data)


class StarletteEcho(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(data)


async def run(endpoint: Any, messages: int) -> float:
    inbox = [{"type": "websocket.connect"}]
    inbox += [{"type": "websocket.receive", "text": "x" * 100}] * messages
    inbox.append({"type": "websocket.disconnect", "code": 1000})
    inbox.reverse()
    sent = 0
    done = anyio.Event()

    async def receive() -> Any:
        if len(inbox) == 1:  # hold the disconnect until every echo went out
            await done.wait()
        return inbox.pop()

    async def send(message: Any) -> None:
        nonlocal sent
        if message["type"] == "websocket.send":
            sent += 1
            if sent == messages:
                done.set()

    scope = {"type": "websocket", "path": "/", "headers": [], "query_string": b""}
    start = time.perf_counter()
    await endpoint(scope, receive, send)
    return (time.perf_counter() - start) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    options = {"use_uvloop": True} if args.backend == "asyncio" else {}
    ours = anyio.run(run, WsroomsEcho, args.messages, backend=args.backend, backend_options=options)
    theirs = anyio.run(
        run, StarletteEcho, args.messages, backend=args.backend, backend_options=options
    )
    print(
        f"{args.backend}: wsrooms {ours:.2f} µs/message, Starlette WebSocketEndpoint "
        f"{theirs:.2f} µs/message ({theirs / ours:.2f}× as fast)"
    )


if __name__ == "__main__":
    main()
