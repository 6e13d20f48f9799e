"""The backend seam: two hubs on one loopback broker behave like two processes.

`LoopbackBroker` is a test double of a cross-process backend (what Redis will be): each
hub publishes to it and receives, through its `deliver` callback, what the other hubs
publish to the rooms it subscribed to.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from starlette.types import Message
from starlette.websockets import WebSocket

from tests._fake import FakePeer, serving
from wsrooms import Hub, HubNotRunning, RoomEndpoint
from wsrooms.backends import Backend, Deliver, MemoryBackend

pytestmark = pytest.mark.anyio


class LoopbackBroker:
    """Routes publications between the backends attached to it."""

    def __init__(self) -> None:
        self.backends: list[LoopbackBackend] = []
        self.log: list[tuple[str, str | None]] = []


class LoopbackBackend(Backend):
    def __init__(self, broker: LoopbackBroker, *, fail_start: bool = False) -> None:
        self.broker = broker
        self.fail_start = fail_start
        self.deliver: Deliver | None = None
        self.subscribed: set[str] = set()
        self.gate: anyio.Event | None = None  # when set, publish waits for it

    async def start(self, deliver: Deliver, task_group: TaskGroup, state_changed: Any) -> None:
        if self.fail_start:
            raise ConnectionError("broker unreachable")
        self.deliver = deliver
        self.broker.backends.append(self)

    async def stop(self) -> None:
        self.broker.backends.remove(self)

    async def subscribe(self, room: str) -> None:
        if room == "forbidden":
            raise PermissionError(room)
        self.broker.log.append(("subscribe", room))
        self.subscribed.add(room)

    async def unsubscribe(self, room: str) -> None:
        self.broker.log.append(("unsubscribe", room))
        self.subscribed.discard(room)

    async def publish(self, room: str | None, event: Message) -> None:
        if self.gate is not None:
            await self.gate.wait()
        for other in self.broker.backends:
            if other is not self and (room is None or room in other.subscribed):
                assert other.deliver is not None
                other.deliver(room, event)


class Conn:
    """The parts of a connection a hub uses; records what reaches it."""

    websocket = None

    def __init__(self) -> None:
        from wsrooms._delivery import Outbox

        self._outbox = Outbox(10, "drop_newest", lambda: None)
        self.closed: list[int] = []

    def _request_close(self, code: int, reason: str, *, send: bool = True) -> None:
        self.closed.append(code)


def make_endpoint(hub: Hub) -> type[RoomEndpoint]:
    class Member(RoomEndpoint):
        encoding = "text"

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> None:
            command, _, arg = data.partition(" ")
            if command == "join":
                await self.join(arg)
                await self.send_message(f"joined {arg}")
            elif command == "all":
                await self.broadcast_all(arg)
            else:
                await self.broadcast(command, arg)

    return type("Member", (Member,), {"hub": hub})


async def connected(cls: type[RoomEndpoint], stack: Any) -> FakePeer:
    peer = FakePeer()
    await stack.enter_async_context(serving(cls, peer))
    await peer.connect()
    await peer.expect_accept()
    return peer


async def test_broadcasts_cross_between_hubs() -> None:
    """A broadcast on one hub reaches the other hub's members of that room, and only them."""
    from contextlib import AsyncExitStack

    broker = LoopbackBroker()
    hub_a, hub_b = Hub(LoopbackBackend(broker)), Hub(LoopbackBackend(broker))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub_a)
        await stack.enter_async_context(hub_b)
        a = await connected(make_endpoint(hub_a), stack)
        b = await connected(make_endpoint(hub_b), stack)
        c = await connected(make_endpoint(hub_b), stack)
        for peer, room in ((a, "r"), (b, "r"), (c, "other")):
            await peer.send_text(f"join {room}")
            assert await peer.next_text() == f"join {room}".replace("join", "joined")
        await a.send_text("r hello")
        assert await a.next_text() == "hello"  # local delivery
        assert await b.next_text() == "hello"  # through the broker
        await b.send_text("all everyone")
        for peer in (a, b, c):
            assert await peer.next_text() == "everyone"
        await anyio.wait_all_tasks_blocked()
        assert c.from_app.statistics().current_buffer_used == 0
        for peer in (a, b, c):
            await peer.disconnect()
    assert broker.log.count(("subscribe", "r")) == 2
    assert ("unsubscribe", "r") in broker.log
    assert ("unsubscribe", "other") in broker.log


async def test_subscribe_once_per_room_and_unsubscribe_when_empty() -> None:
    """A hub subscribes when a room gains its first local member and leaves with the last."""

    broker = LoopbackBroker()
    backend = LoopbackBackend(broker)
    hub = Hub(backend)
    one, two = Conn(), Conn()
    async with hub:
        assert hub.backend is backend
        await hub.join(one, "r")
        await hub.join(two, "r")
        assert broker.log == [("subscribe", "r")]
        await hub.leave(one, "r")
        assert backend.subscribed == {"r"}
        await hub.remove(two)
        assert backend.subscribed == set()
        await hub.join(one, "x")
        await hub.leave_all(one)
        assert broker.log[-1] == ("unsubscribe", "x")
        with pytest.raises(PermissionError):
            await hub.join(one, "forbidden")
        assert hub.rooms() == frozenset()  # a failed subscription is rolled back
        with pytest.raises(RuntimeError, match="already running"):
            await hub.__aenter__()
    assert "LoopbackBackend" in repr(hub)
    assert one.closed == [1001]  # leaving the hub closed its remaining connection


async def test_hub_not_running_is_a_clear_error() -> None:
    """Using a cross-process hub outside `async with hub:` says how to fix it."""

    hub = Hub(LoopbackBackend(LoopbackBroker()))
    with pytest.raises(HubNotRunning, match="async with hub"):
        await hub.join(Conn(), "r")
    with pytest.raises(HubNotRunning):
        await hub.broadcast("r", "x")


async def test_failed_backend_start_leaves_the_hub_stopped() -> None:
    """A backend that cannot start raises from `async with hub:` and leaves nothing running."""
    hub = Hub(LoopbackBackend(LoopbackBroker(), fail_start=True))
    with pytest.raises(ConnectionError):
        async with hub:
            pass  # pragma: no cover
    with pytest.raises(HubNotRunning):
        await hub.broadcast("r", "x")


async def test_push_delivers_locally_at_once_and_awaits_the_backend() -> None:
    """push() delivers to local members before returning; awaiting it waits for the backend."""
    from wsrooms import Room

    broker = LoopbackBroker()
    backend = LoopbackBackend(broker)
    hub = Hub(backend)
    room = Room(hub=hub, name="news")
    backend.gate = anyio.Event()

    local = Conn()
    async with hub:
        await hub.join(local, "news")
        pending = room.push({"n": 1})
        assert [e["text"] for e in local._outbox._queue] == ['{"n":1}']
        done = False

        async def wait() -> None:
            nonlocal done
            await pending
            done = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert not done  # the backend has not taken it yet
            backend.gate.set()
        assert done
        room.push("not awaited")  # fine: no coroutine, nothing to warn about
        await hub.leave(local, "news")


def test_hub_backend_argument() -> None:
    """Hub() takes None, 'memory://' or a Backend; a Redis URL and junk are clear errors."""
    assert isinstance(Hub().backend, MemoryBackend)
    assert isinstance(Hub("memory://").backend, MemoryBackend)
    backend = LoopbackBackend(LoopbackBroker())
    assert Hub(backend).backend is backend
    with pytest.raises(NotImplementedError, match="Redis backend"):
        Hub("redis://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="unknown hub backend"):
        Hub("kafka://x")


async def test_memory_hub_runs_as_a_context_manager_too() -> None:
    """The in-memory hub works without `async with`, and inside it."""
    hub = Hub()
    async with hub:
        await hub.broadcast_all("nobody hears this")
        await hub.broadcast("empty-room", {"x": 1})
    assert hub.rooms() == frozenset()


async def test_backend_failure_in_teardown_still_runs_on_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend that fails to unsubscribe during teardown: logged; on_disconnect still runs."""
    from contextlib import AsyncExitStack

    class Flaky(LoopbackBackend):
        async def unsubscribe(self, room: str) -> None:
            raise ConnectionError("broker went away")

    hub = Hub(Flaky(LoopbackBroker()))
    codes: list[int] = []

    class Member(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await super().on_connect(websocket)
            await self.join("r")

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)

    endpoint = type("M", (Member,), {"hub": hub})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        peer = await connected(endpoint, stack)
        await peer.disconnect(1000)
    assert codes == [1000]
    assert any("cleanup of" in r.getMessage() for r in caplog.records)


def test_memory_backend_is_a_no_op() -> None:
    """The in-memory backend carries nothing: every operation completes doing nothing."""
    backend = MemoryBackend()

    async def use() -> None:
        async with anyio.create_task_group() as tg:
            await backend.start(lambda room, event: None, tg, lambda connected: None)
        await backend.subscribe("r")
        await backend.publish("r", {"type": "websocket.send", "text": "x"})
        await backend.unsubscribe("r")
        await backend.stop()

    anyio.run(use)
    assert backend.local_only
