"""In-process fan-out micro-benchmark: what wsrooms itself costs per delivery.

N room members whose ASGI `send` does nothing (no socket): one broadcast per round,
awaited until every member's writer has sent it. Prints deliveries/s and µs/delivery.

    python bench/micro/fanout.py [--members 1000] [--messages 200] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio

from wsrooms import Hub, RoomEndpoint


class Member(RoomEndpoint):
    hub = Hub()
    send_queue_size = 100_000


async def run(members: int, messages: int) -> float:
    remaining = 0
    all_sent = anyio.Event()

    async def send(message: Any) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            all_sent.set()

    async def receive() -> Any:
        await anyio.sleep_forever()

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    conns = [Member(scope, receive, send) for _ in range(members)]
    async with anyio.create_task_group() as tg:
        for conn in conns:
            conn._started(tg)  # the writer task, as a served connection has it
            await Member.hub.join(conn, "r")
        event = {"type": "websocket.send", "text": "x" * 100}
        start = time.perf_counter()
        for _ in range(messages):
            remaining = members
            all_sent = anyio.Event()
            await Member.hub._publish("r", event, ())
            await all_sent.wait()
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    for conn in conns:
        await Member.hub.remove(conn)
    return members * messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    options = {"use_uvloop": True} if args.backend == "asyncio" else {}
    rate = anyio.run(
        run, args.members, args.messages, backend=args.backend, backend_options=options
    )
    print(f"{args.backend}: {rate:,.0f} deliveries/s, {1e6 / rate:.2f} µs/delivery")


if __name__ == "__main__":
    main()
