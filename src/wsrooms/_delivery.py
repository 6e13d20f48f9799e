"""One bounded outbox per connection, written by that connection's own writer task.

A broadcast puts an event in every member's outbox and never awaits a socket. Only the
member's writer task (in the member's own task group) calls its ASGI `send`, and it
drains everything queued per wake-up. A member whose queue is full is judged by its
socket: if a write has completed within `stall_timeout`, the member is moving and the
broadcaster waits (at most that long) for room, which slows a flood down at its
source; if not, it is a slow consumer and its `slow_consumer` policy applies.
Delivery is at most once: a frame whose send was interrupted is never sent again.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Literal

import anyio
from starlette.types import Message

from ._park import Parker, make_parker

__all__ = [
    "DROPPED",
    "QUEUED",
    "SLOW_CONSUMER_POLICIES",
    "WAIT",
    "DropCount",
    "Outbox",
    "SlowConsumerPolicy",
    "owe_room",
    "pay",
    "start_owing",
    "stop_owing",
    "wait_for_room",
]

SlowConsumerPolicy = Literal["disconnect", "drop_oldest", "drop_newest"]
SLOW_CONSUMER_POLICIES: tuple[SlowConsumerPolicy, ...] = (
    "disconnect",
    "drop_oldest",
    "drop_newest",
)

Send = Callable[[Message], Awaitable[None]]

#: What `Outbox.put` returns: queued; one event dropped by a drop policy; queued above
#: the mark of a member that is moving, so the caller should `wait_for_room`.
QUEUED, DROPPED, WAIT = 0, 1, 2

#: The outboxes a connection's un-awaited pushes left above their mark: the connection
#: waits for room in them before it reads its client's next message, so a flood made of
#: pushes nobody awaits is slowed at its source too. Set per connection (its own task
#: and, by inheritance, its handler tasks); `None` outside a connection.
_OWED: contextvars.ContextVar[list[Outbox] | None] = contextvars.ContextVar(
    "wsrooms_owed_room", default=None
)


def owe_room(outboxes: list[Outbox]) -> None:
    """Record that the current connection should wait for room in `outboxes`."""
    owed = _OWED.get()
    if owed is not None:
        owed.extend(outboxes)


def start_owing() -> tuple[list[Outbox], contextvars.Token[list[Outbox] | None]]:
    """Give the current connection (its task and the tasks it starts) a debt list; the
    token resets it when the connection ends."""
    owed: list[Outbox] = []
    return owed, _OWED.set(owed)


def stop_owing(token: contextvars.Token[list[Outbox] | None]) -> None:
    _OWED.reset(token)


async def pay(owed: list[Outbox]) -> None:
    """Wait for room in what the connection's pushes left full (bounded), then forget it."""
    await wait_for_room(owed, owed[0].stall_timeout)
    owed.clear()


class DropCount:
    """A count of dropped messages that several outboxes add to (a hub's total)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class Outbox:
    """A bounded queue of ASGI send events and the writer that drains it.

    Args:
        maxsize: Events queued before the member is judged (`send_queue_size`).
        policy: What happens to a slow consumer: `"disconnect"` calls `on_slow` (once)
            and discards the queue; `"drop_oldest"` / `"drop_newest"` drop and count.
        stall_timeout: Seconds without a completed write after which a member with a
            full queue is a slow consumer.
        on_slow: Called synchronously when the `"disconnect"` policy fires.
    """

    __slots__ = (
        "_cap",
        "_closed",
        "_context",
        "_idle",
        "_in_send",
        "_mark_time",
        "_mark_written",
        "_maxsize",
        "_on_slow",
        "_parker",
        "_policy",
        "_queue",
        "_room",
        "_send",
        "_spawn",
        "_started",
        "dropped",
        "hub_drops",
        "slow_consumer",
        "stall_timeout",
        "written",
    )

    def __init__(
        self,
        maxsize: int,
        policy: SlowConsumerPolicy,
        stall_timeout: float,
        on_slow: Callable[[], None],
    ) -> None:
        self._queue: deque[Message] = deque()
        self._maxsize = maxsize
        # A moving member may go over `maxsize` by the events of broadcasters that wait
        # for it; this caps even that.
        self._cap = max(2 * maxsize, maxsize + 256)
        self._policy = policy
        self.stall_timeout = stall_timeout
        self._on_slow = on_slow
        self._send: Send | None = None
        self._spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], object] | None = None
        self._context: contextvars.Context | None = None
        self._parker: Parker | None = None
        self._started = False
        self._closed = False
        self._room: anyio.Event | None = None  # set when the queue falls below the mark
        self._idle: anyio.Event | None = None  # set when the writer has nothing to do
        self._in_send = False
        self._mark_written = 0
        self._mark_time: float | None = None
        self.written = 0
        self.dropped = 0
        self.hub_drops: DropCount | None = None  # set by the hub that adopts the member
        self.slow_consumer = False  # the "disconnect" policy fired

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def attach(
        self, send: Send, spawn: Callable[[Callable[[], Coroutine[Any, Any, None]]], object]
    ) -> None:
        """Connect the outbox to its socket, from the connection's own task.

        Args:
            send: The connection's ASGI `send`, called only by the writer task.
            spawn: Starts the writer in the connection's task group. The writer starts
                when first needed, so an idle connection costs no task; it is started in
                the connection's own context (a broadcaster's context variables, such as
                a tracing span, never leak into it).
        """
        self._send = send
        self._spawn = spawn
        self._context = contextvars.copy_context()
        if self._queue:
            self._start()

    # ------------------------------------------------------------------ producers

    def put(self, event: Message) -> int:
        """Queue one event without waiting; `QUEUED`, `DROPPED` or `WAIT`."""
        queue = self._queue
        if len(queue) < self._maxsize:
            queue.append(event)
            parker = self._parker
            if parker is not None:
                self._parker = None
                parker.unpark()
            elif not self._started and self._spawn is not None:
                self._start()
            return QUEUED
        return self._full(event)

    def _full(self, event: Message) -> int:
        if self._closed:
            return QUEUED  # the connection is ending; nothing more goes out
        if self._stalled() or len(self._queue) >= self._cap:
            return self._overflow(event)
        self._queue.append(event)  # the member is moving: the caller waits for room
        return WAIT

    def _stalled(self) -> bool:
        """Whether one send has been in flight, with nothing written, for `stall_timeout`.

        Judged only from what the writer is doing: a writer that has not run yet (the
        scheduler's doing, not the socket's) is never stalled.
        """
        if not self._in_send:
            self._mark_time = None
            return False
        now = anyio.current_time()
        if self._mark_time is None or self.written != self._mark_written:
            self._mark_written = self.written
            self._mark_time = now
            return False
        return now - self._mark_time >= self.stall_timeout

    def _overflow(self, event: Message | None) -> int:
        """Apply the slow-consumer policy (to `event`, or to what is over the mark)."""
        if self._policy == "disconnect":
            self.slow_consumer = True
            self.close()
            self._on_slow()
            return QUEUED
        queue, dropped = self._queue, 0
        if event is not None:
            if self._policy == "drop_oldest":
                queue.popleft()
                queue.append(event)
            dropped = 1
        while len(queue) > self._maxsize:
            queue.popleft() if self._policy == "drop_oldest" else queue.pop()
            dropped += 1
        if dropped:
            self.dropped += dropped
            if self.hub_drops is not None:
                self.hub_drops.value += dropped
        return DROPPED if dropped else QUEUED

    async def wait_room(self, deadline: float) -> None:
        """Wait until the queue is below its mark, or judge the member at `deadline`."""
        with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
            while len(self._queue) >= self._maxsize and not self._closed:
                room = self._room
                if room is None:
                    room = self._room = anyio.Event()
                await room.wait()
        if len(self._queue) >= self._maxsize and not self._closed and self._stalled():
            self._overflow(None)

    def close(self) -> None:
        """Discard what is queued and accept nothing more."""
        self._closed = True
        self._queue.clear()
        self._maxsize = self._cap = 0
        self._wake_waiters()

    # ------------------------------------------------------------------ the writer

    def _start(self) -> None:
        assert self._spawn is not None
        assert self._context is not None
        self._started = True
        self._context.run(self._spawn, self._run)

    async def _run(self) -> None:
        """The writer task: write what is queued, park when there is nothing."""
        send = self._send
        assert send is not None
        queue = self._queue
        popleft = queue.popleft
        parker = make_parker()
        try:
            while True:
                while queue:
                    self._in_send = True
                    await send(popleft())
                    self._in_send = False
                    self.written += 1
                    if self._room is not None and len(queue) < self._maxsize:
                        self._room.set()
                        self._room = None
                if self._closed:
                    return
                idle = self._idle
                if idle is not None:
                    self._idle = None
                    idle.set()
                self._parker = parker
                await parker.park()
        finally:
            self._parker = None
            self.close()  # the connection is ending: nothing queued now goes out

    def _wake_waiters(self) -> None:
        for name in ("_room", "_idle"):
            event = getattr(self, name)
            if event is not None:
                setattr(self, name, None)
                event.set()

    async def drained(self) -> None:
        """Wait until the writer has written everything queued and is parked (or ended)."""
        while self._started and not self._closed and self._parker is None:
            idle = self._idle
            if idle is None:
                idle = self._idle = anyio.Event()
            await idle.wait()


async def wait_for_room(outboxes: Iterable[Outbox], bound: float) -> None:
    """Wait, at most `bound` seconds in all, until each outbox is below its mark.

    A member still full at the deadline whose writer made no progress is a slow
    consumer: its policy applies then.
    """
    deadline = anyio.current_time() + bound
    for outbox in outboxes:
        await outbox.wait_room(deadline)
