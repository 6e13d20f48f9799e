"""The outbox: one writer per connection owns its send, at most once, judged by its socket.

The fake sends suspend as the real servers do: uvicorn awaits a writable socket before it
writes; hypercorn writes, then awaits the drain.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskGroup
from starlette.types import Message

from wsrooms._delivery import DROPPED, QUEUED, WAIT, Outbox, wait_for_room
from wsrooms._park import Parker, make_parker

pytestmark = pytest.mark.anyio

WAIT_S = 5.0
SPAN: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="none")


def event(text: str) -> Message:
    return {"type": "websocket.send", "text": text}


class Socket:
    """An ASGI send that suspends like a server's, recording who called it.

    `mode="uvicorn"`: waits until writable, then writes. `mode="hypercorn"`: writes, then
    waits to drain. `writable` cleared means the client is not reading.
    """

    def __init__(self, mode: str = "uvicorn") -> None:
        self.mode = mode
        self.written: list[str] = []
        self.callers: set[Any] = set()
        self.spans: list[str] = []
        self.writable = anyio.Event()
        self.writable.set()

    async def send(self, message: Message) -> None:
        self.callers.add(anyio.get_current_task().id)
        self.spans.append(SPAN.get())
        if self.mode == "uvicorn":
            await self._wait_writable()
            self.written.append(message["text"])
        else:
            self.written.append(message["text"])
            await self._wait_writable()

    async def _wait_writable(self) -> None:
        if self.writable.is_set():
            await anyio.lowlevel.checkpoint()
        else:
            await self.writable.wait()

    def stop_reading(self) -> None:
        self.writable = anyio.Event()


def attach(outbox: Outbox, socket: Socket, tg: TaskGroup, spawned: list[int] | None = None) -> None:
    """Attach as a connection does: the writer runs in `tg` (the connection's group)."""

    def spawn(run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if spawned is not None:
            spawned.append(1)
        tg.start_soon(run)

    outbox.attach(socket.send, spawn)


def make(
    maxsize: int = 8, policy: Any = "disconnect", stall: float = 0.05
) -> tuple[Outbox, list[int]]:
    slow: list[int] = []
    return Outbox(maxsize, policy, stall, lambda: slow.append(1)), slow


async def test_writer_starts_only_when_needed_and_owns_every_send() -> None:
    """No writer task until an event is queued; then one task makes every send call."""
    outbox, _ = make()
    socket = Socket()
    spawned: list[int] = []
    async with anyio.create_task_group() as tg:
        attach(outbox, socket, tg, spawned)
        await anyio.wait_all_tasks_blocked()
        assert spawned == []  # an idle connection costs no task
        for i in range(5):
            assert outbox.put(event(str(i))) == QUEUED
        await anyio.wait_all_tasks_blocked()
        for i in range(5, 10):
            outbox.put(event(str(i)))
        await anyio.wait_all_tasks_blocked()
        assert spawned == [1]  # started once, woken after
        assert socket.written == [str(i) for i in range(10)]
        assert len(socket.callers) == 1
        assert anyio.get_current_task().id not in socket.callers  # never the broadcaster
        tg.cancel_scope.cancel()


async def test_writer_runs_in_the_connections_context_not_the_broadcasters() -> None:
    """A context variable set by a broadcaster never reaches the member's send."""
    outbox, _ = make()
    socket = Socket()
    async with anyio.create_task_group() as tg:
        token = SPAN.set("member")
        attach(outbox, socket, tg)  # the connection attaches from its own task
        SPAN.reset(token)

        async def broadcaster() -> None:
            SPAN.set("broadcaster")
            outbox.put(event("a"))

        tg.start_soon(broadcaster)
        await anyio.wait_all_tasks_blocked()
        assert socket.spans == ["member"]
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("mode", ["uvicorn", "hypercorn"])
async def test_writer_drains_everything_in_order_after_a_backlog(mode: str) -> None:
    """A socket that backs up and recovers gets every event once, in order."""
    outbox, slow = make(maxsize=100)
    socket = Socket(mode)
    async with anyio.create_task_group() as tg:
        attach(outbox, socket, tg)
        socket.stop_reading()
        for i in range(50):
            outbox.put(event(str(i)))
        await anyio.wait_all_tasks_blocked()
        assert len(outbox) in (49, 50)  # one may be in the socket's hands
        socket.writable.set()
        with anyio.fail_after(WAIT_S):
            await outbox.drained()
        assert socket.written == [str(i) for i in range(50)]
        assert slow == []
        tg.cancel_scope.cancel()


async def test_an_interrupted_send_is_never_repeated() -> None:
    """hypercorn writes, then drains: a send cancelled in its drain is not sent again."""
    outbox, _ = make()
    socket = Socket("hypercorn")
    async with anyio.create_task_group() as tg:
        attach(outbox, socket, tg)
        socket.stop_reading()
        for i in range(3):
            outbox.put(event(str(i)))
        await anyio.wait_all_tasks_blocked()
        assert socket.written == ["0"]  # written, and waiting for the drain
        tg.cancel_scope.cancel()  # the connection ends
    assert socket.written == ["0"]
    assert outbox.closed
    assert outbox.put(event("late")) == QUEUED  # taken and discarded
    assert len(outbox) == 0


async def test_a_full_moving_member_makes_the_broadcaster_wait_not_the_policy() -> None:
    """Full queue, socket moving: the event is kept and the broadcaster waits for room."""
    outbox, slow = make(maxsize=4, stall=WAIT_S)
    socket = Socket()
    async with anyio.create_task_group() as tg:
        attach(outbox, socket, tg)
        socket.stop_reading()
        for i in range(4):
            assert outbox.put(event(str(i))) == QUEUED
        await anyio.wait_all_tasks_blocked()  # the writer holds "0"
        assert outbox.put(event("4")) == QUEUED  # four queued: full
        assert outbox.put(event("5")) == WAIT
        waited = anyio.Event()

        async def broadcaster() -> None:
            await wait_for_room([outbox], WAIT_S)
            waited.set()

        tg.start_soon(broadcaster)
        await anyio.wait_all_tasks_blocked()
        assert not waited.is_set()
        socket.writable.set()  # the client reads again
        with anyio.fail_after(WAIT_S):
            await waited.wait()
            await outbox.drained()
        assert socket.written == [str(i) for i in range(6)]
        assert slow == []
        assert outbox.dropped == 0
        tg.cancel_scope.cancel()


async def test_a_stuck_member_is_a_slow_consumer_after_the_stall_bound() -> None:
    """Full queue and no write for the stall bound: the disconnect policy fires once."""
    outbox, slow = make(maxsize=4, stall=0.05)
    socket = Socket()
    async with anyio.create_task_group() as tg:
        attach(outbox, socket, tg)
        socket.stop_reading()
        for i in range(5):
            outbox.put(event(str(i)))
        await anyio.wait_all_tasks_blocked()
        assert outbox.put(event("5")) == WAIT
        with anyio.fail_after(WAIT_S):
            await wait_for_room([outbox], 0.05)
        assert slow == [1]
        assert outbox.slow_consumer
        assert outbox.put(event("6")) == QUEUED  # closed: discarded, nothing more fires
        assert slow == [1]
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("policy", "kept"), [("drop_oldest", ["3", "4", "5"]), ("drop_newest", ["1", "2", "3"])]
)
async def test_drop_policies_keep_the_newest_or_the_oldest(policy: str, kept: list[str]) -> None:
    """A stuck member under a drop policy stays; its drops are counted."""
    outbox, slow = make(maxsize=3, policy=policy, stall=0.05)
    socket = Socket()
    async with anyio.create_task_group() as tg:
        attach(outbox, socket, tg)
        socket.stop_reading()
        for i in range(4):
            outbox.put(event(str(i)))
        await anyio.wait_all_tasks_blocked()  # "0" is in the socket's hands
        assert outbox.put(event("4")) == WAIT
        await wait_for_room([outbox], 0.05)  # judged: stalled; trimmed back to the mark
        assert outbox.put(event("5")) == DROPPED
        assert outbox.dropped == 2
        assert slow == []
        socket.writable.set()
        with anyio.fail_after(WAIT_S):
            await outbox.drained()
        assert socket.written == ["0", *kept]
        tg.cancel_scope.cancel()


async def test_even_a_moving_member_has_a_hard_cap() -> None:
    """Events nobody waits for cannot grow a queue past its cap: the policy applies."""
    outbox, slow = make(maxsize=2, stall=WAIT_S)
    socket = Socket()
    async with anyio.create_task_group() as tg:
        attach(outbox, socket, tg)
        socket.stop_reading()
        outcomes = [outbox.put(event(str(i))) for i in range(400)]
        assert WAIT in outcomes
        assert slow == [1]  # the cap (at least 256 over the mark) was reached
        tg.cancel_scope.cancel()


async def test_drained_returns_when_the_writer_is_parked_or_absent() -> None:
    """drained() waits for the frame in flight too, and returns at once with no writer."""
    outbox, _ = make()
    await outbox.drained()  # never attached
    socket = Socket("hypercorn")
    async with anyio.create_task_group() as tg:
        attach(outbox, socket, tg)
        socket.stop_reading()
        outbox.put(event("a"))
        done = anyio.Event()

        async def drain() -> None:
            await outbox.drained()
            done.set()

        tg.start_soon(drain)
        await anyio.wait_all_tasks_blocked()
        assert not done.is_set()  # "a" is written but still draining
        socket.writable.set()
        with anyio.fail_after(WAIT_S):
            await done.wait()
        tg.cancel_scope.cancel()


async def test_parker_wakes_once_and_survives_cancellation() -> None:
    """unpark wakes the parked task; unpark with nobody parked does nothing; a cancelled
    park leaves the parker usable."""
    parker = make_parker()
    parker.unpark()  # nobody parked: no effect
    woken: list[int] = []

    async def park() -> None:
        await parker.park()
        woken.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(park)
        await anyio.wait_all_tasks_blocked()
        assert is_parked(parker)
        parker.unpark()
        parker.unpark()
        await anyio.wait_all_tasks_blocked()
        assert woken == [1]
        assert not is_parked(parker)
        with anyio.CancelScope() as scope:
            tg.start_soon(park)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
        tg.cancel_scope.cancel()
    assert not is_parked(parker)
    parker.unpark()  # after a cancelled park: still no effect


def is_parked(parker: Parker) -> bool:
    return parker.parked
