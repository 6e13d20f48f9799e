"""The outbox: direct writes on asyncio, the writer task, and exactly-once delivery."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from starlette.types import Message

from wsrooms._delivery import Outbox, direct_writes_possible

pytestmark = pytest.mark.anyio


def event(text: str) -> Message:
    return {"type": "websocket.send", "text": text}


class Socket:
    """An ASGI send that records frames; it can be made to block before writing."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.open = anyio.Event()
        self.open.set()
        self.errors: list[Exception] = []
        self.fail: Exception | None = None

    async def send(self, message: Message) -> None:
        if self.fail is not None:
            raise self.fail
        if not self.open.is_set():
            await self.open.wait()
        self.written.append(message["text"])


async def start_writer(tg: Any, outbox: Outbox, socket: Socket) -> list[int]:
    """Attach the outbox as a connection does; returns a list counting writer starts."""
    starts: list[int] = []

    async def writer() -> None:
        try:
            await outbox.run()
        except OSError as exc:  # the writer's own send failed (the endpoint reports it)
            socket.errors.append(exc)

    def start() -> None:
        starts.append(1)
        tg.start_soon(writer)

    outbox.attach(socket.send, socket.errors.append, start)
    await anyio.wait_all_tasks_blocked()
    return starts


async def test_writer_task_starts_only_when_needed(anyio_backend_name: str) -> None:
    """An idle connection has no writer task; one starts when an event must wait or queue."""
    outbox = Outbox(10, "disconnect", lambda: None)
    socket = Socket()
    async with anyio.create_task_group() as tg:
        starts = await start_writer(tg, outbox, socket)
        assert starts == []
        outbox.put(event("a"))
        await anyio.wait_all_tasks_blocked()
        # asyncio: written directly, still no task; trio: the writer started for it.
        assert starts == ([] if anyio_backend_name == "asyncio" else [1])
        socket.open = anyio.Event()  # the socket backs up
        outbox.put(event("b"))
        outbox.put(event("c"))
        await anyio.wait_all_tasks_blocked()
        assert starts == [1]  # started once, and only once
        socket.open.set()
        await anyio.wait_all_tasks_blocked()
        assert socket.written == ["a", "b", "c"]
        tg.cancel_scope.cancel()


async def test_events_queued_before_attach_start_the_writer() -> None:
    """Events put before the connection runs (joined before accept) go out once attached."""
    outbox = Outbox(10, "disconnect", lambda: None)
    socket = Socket()
    outbox.put(event("early"))
    assert socket.written == []
    async with anyio.create_task_group() as tg:
        starts = await start_writer(tg, outbox, socket)
        assert starts == [1]
        assert socket.written == ["early"]
        tg.cancel_scope.cancel()


async def test_direct_write_on_asyncio_queue_on_trio(anyio_backend_name: str) -> None:
    """On asyncio a writable socket gets the frame inside put(); on trio the writer sends it."""
    outbox = Outbox(10, "disconnect", lambda: None)
    socket = Socket()
    async with anyio.create_task_group() as tg:
        await start_writer(tg, outbox, socket)
        outbox.put(event("a"))
        if anyio_backend_name == "asyncio":
            assert direct_writes_possible()
            assert socket.written == ["a"]  # no task switch happened
        else:
            assert not direct_writes_possible()
            assert socket.written == []
            await anyio.wait_all_tasks_blocked()
            assert socket.written == ["a"]
        tg.cancel_scope.cancel()


async def test_suspended_send_is_finished_by_the_writer_in_order() -> None:
    """A send that blocks is completed by the writer, exactly once, before later events."""
    outbox = Outbox(10, "disconnect", lambda: None)
    socket = Socket()
    socket.open = anyio.Event()  # the socket is backed up
    async with anyio.create_task_group() as tg:
        await start_writer(tg, outbox, socket)
        for text in "abc":
            outbox.put(event(text))  # never waits
        await anyio.wait_all_tasks_blocked()
        assert socket.written == []
        socket.open.set()  # the socket drains
        await anyio.wait_all_tasks_blocked()
        assert socket.written == ["a", "b", "c"]
        outbox.put(event("d"))  # writable again: written at once (asyncio) or by the writer
        await anyio.wait_all_tasks_blocked()
        assert socket.written == ["a", "b", "c", "d"]
        tg.cancel_scope.cancel()


async def test_failed_send_reports_the_error_instead_of_raising() -> None:
    """A send that fails (socket gone) is reported through on_error, never to the caller."""
    outbox = Outbox(10, "disconnect", lambda: None)
    socket = Socket()
    socket.fail = OSError("connection reset")
    async with anyio.create_task_group() as tg:
        await start_writer(tg, outbox, socket)
        outbox.put(event("x"))  # does not raise
        await anyio.wait_all_tasks_blocked()
        assert [type(e) for e in socket.errors] == [OSError]
        tg.cancel_scope.cancel()


async def test_interrupted_send_is_retried_by_flush() -> None:
    """A send interrupted by the connection's end is written by the final flush, once."""
    outbox = Outbox(10, "disconnect", lambda: None)
    socket = Socket()
    socket.open = anyio.Event()
    async with anyio.create_task_group() as tg:
        await start_writer(tg, outbox, socket)
        outbox.put(event("a"))
        outbox.put(event("b"))
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()  # the connection ends while "a" waits for the socket
    socket.open.set()
    await outbox.flush(socket.send)
    assert socket.written == ["a", "b"]


async def test_close_discards_a_suspended_send() -> None:
    """Closing the outbox (slow consumer) drops a suspended send without writing it."""
    outbox = Outbox(10, "disconnect", lambda: None)
    socket = Socket()
    socket.open = anyio.Event()
    async with anyio.create_task_group() as tg:
        await start_writer(tg, outbox, socket)
        outbox.put(event("a"))
        tg.cancel_scope.cancel()
    outbox.close()
    socket.open.set()
    await outbox.flush(socket.send)
    assert socket.written == []
