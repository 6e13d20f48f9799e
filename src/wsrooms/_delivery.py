"""One bounded outbox per connection, drained by a writer task in the connection's group.

A broadcast calls `Outbox.put` for every member: a deque append and, if the writer is
parked, one wake-up. `put` never awaits, so no member's socket can hold a broadcast up.
The writer drains every queued event per wake-up. When the queue is full the connection's
`slow_consumer` policy applies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
from starlette.types import Message

__all__ = ["SLOW_CONSUMER_POLICIES", "Outbox", "SlowConsumerPolicy"]

SlowConsumerPolicy = Literal["disconnect", "drop_oldest", "drop_newest"]
SLOW_CONSUMER_POLICIES: tuple[SlowConsumerPolicy, ...] = (
    "disconnect",
    "drop_oldest",
    "drop_newest",
)


class Outbox:
    """A bounded queue of ASGI send events with a slow-consumer policy.

    Args:
        maxsize: Events the queue holds before the policy applies.
        policy: `"disconnect"` calls `on_overflow` (once) and discards the queue;
            `"drop_oldest"` discards the oldest queued event; `"drop_newest"` discards the
            event being put. Drops are counted in `dropped`.
        on_overflow: Called synchronously when the `"disconnect"` policy fires.
    """

    __slots__ = (
        "_closed",
        "_inflight",
        "_maxsize",
        "_on_overflow",
        "_policy",
        "_queue",
        "_wake",
        "dropped",
    )

    def __init__(
        self, maxsize: int, policy: SlowConsumerPolicy, on_overflow: Callable[[], None]
    ) -> None:
        self._queue: deque[Message] = deque()
        self._maxsize = maxsize
        self._policy = policy
        self._on_overflow = on_overflow
        self._wake: anyio.Event | None = None
        self._inflight: Message | None = None
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, event: Message) -> bool:
        """Queue one event without waiting; true if an event was dropped to make room."""
        queue = self._queue
        if len(queue) >= self._maxsize:
            if self._closed:
                return False
            if self._policy == "disconnect":
                self.close()
                self._on_overflow()
                return False
            self.dropped += 1
            if self._policy == "drop_newest":
                return True
            queue.popleft()
            queue.append(event)
            return True
        queue.append(event)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()
        return False

    def close(self) -> None:
        """Discard what is queued and accept nothing more."""
        self._closed = True
        self._maxsize = 0
        self._queue.clear()
        self._inflight = None

    async def run(self, send: Callable[[Message], Awaitable[None]]) -> None:
        """Write queued events with `send` until cancelled (the writer task's body)."""
        queue = self._queue
        popleft = queue.popleft
        while True:
            while queue:
                # Kept aside until written: a send cancelled before it wrote (ASGI servers
                # check for cancellation before writing) is retried by `flush`.
                event = self._inflight = popleft()
                await send(event)
                self._inflight = None
            wake = self._wake = anyio.Event()
            await wake.wait()

    async def flush(self, send: Callable[[Message], Awaitable[None]]) -> None:
        """Write what the ended writer left: its interrupted event, then the queue."""
        if self._inflight is not None:
            event, self._inflight = self._inflight, None
            await send(event)
        queue = self._queue
        while queue:
            await send(queue.popleft())
