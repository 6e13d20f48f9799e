"""In-process fan-out micro-benchmark: what wsrooms itself costs per delivery.

N room members whose ASGI `send` does nothing (no socket): one broadcast per round,
awaited until every member's writer has sent it. Prints deliveries/s and µs/delivery.

    python bench/micro/fanout.py [--members 1000] [--messages 200] [--backend asyncio|trio]
    python bench/micro/fanout.py --parker anyio   # the writers park on anyio.Event instead

`--parker anyio` swaps the outbox writers' parker (wsrooms._park, each backend's cheapest
primitive) for one built on `anyio.Event`, to measure what the backend primitive buys; it
reaches into a private module on purpose and needs a wsrooms that has it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, ClassVar

import anyio
from starlette.websockets import WebSocket

from wsrooms import Hub, RoomEndpoint


class Countdown:
    """Set `done` after `count` arrivals."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = anyio.Event()

    def arrive(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


class Member(RoomEndpoint):
    hub = Hub()
    encoding = "text"
    send_queue_size = 100_000
    joined: ClassVar[Countdown]

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        await self.join("r")
        Member.joined.arrive()


async def run(members: int, messages: int) -> float:
    """Public API only: each member is a served `RoomEndpoint` (fake `receive`/`send`)."""
    remaining = 0
    all_sent = anyio.Event()
    stop = anyio.Event()
    Member.joined = Countdown(members)

    async def send(message: Any) -> None:
        nonlocal remaining
        if message["type"] == "websocket.send":
            remaining -= 1
            if remaining == 0:
                all_sent.set()

    def receiver() -> Any:
        connected = False

        async def receive() -> Any:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            await stop.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        return receive

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    async with anyio.create_task_group() as tg:
        for _ in range(members):
            tg.start_soon(Member(scope, receiver(), send).dispatch)
        await Member.joined.done.wait()
        start = time.perf_counter()
        for _ in range(messages):
            remaining = members
            all_sent = anyio.Event()
            await Member.hub.broadcast("r", "x" * 100)
            await all_sent.wait()
        elapsed = time.perf_counter() - start
        stop.set()  # every member's client leaves; the connections end on their own
    return members * messages / elapsed


class AnyioParker:
    """The parker interface of wsrooms._park, on `anyio.Event` (for comparison)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    @property
    def parked(self) -> bool:
        return self._event is not None

    async def park(self) -> None:
        event = self._event = anyio.Event()
        try:
            await event.wait()
        finally:
            self._event = None

    def unpark(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--parker", choices=["backend", "anyio"], default="backend")
    args = parser.parse_args()
    if args.parker == "anyio":
        from wsrooms import _delivery

        _delivery.make_parker = AnyioParker  # type: ignore[attr-defined,assignment]
    options = {"use_uvloop": True} if args.backend == "asyncio" else {}
    rate = anyio.run(
        run, args.members, args.messages, backend=args.backend, backend_options=options
    )
    parker = "" if args.parker == "backend" else f", {args.parker} parker"
    print(f"{args.backend}{parker}: {rate:,.0f} deliveries/s, {1e6 / rate:.2f} µs/delivery")


if __name__ == "__main__":
    main()
