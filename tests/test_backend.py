"""The backend seam (SPEC 2.1, 2.5, 3): two hubs on one loopback broker behave like two
processes, and backend doubles whose calls hang or fail hold up and end nothing.

`LoopbackBroker` is a test double of a cross-process backend (what Redis is): each hub
publishes to it and receives, through its `deliver` callback, what the other hubs publish
to the rooms it subscribed to. The hub's syncer and publisher tasks reach the backend
after membership changes and broadcasts return, so every change of the broker's state
signals a `Watch` that tests wait on instead of sleeping.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import anyio
import pytest
from anyio.abc import TaskGroup
from starlette.types import Message
from starlette.websockets import WebSocket

from tests._fake import WAIT, FakePeer, serving
from wsrooms import Hub, HubNotRunning, HubStatistics, Room, RoomEndpoint
from wsrooms.backends import Backend, Deliver, MemoryBackend, StateChanged

pytestmark = pytest.mark.anyio

Item = tuple[str | None, Message]


class Watch:
    """State a test waits on: whoever changes it calls `changed()`; waiters re-check."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def changed(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds, re-checking on every change (bounded)."""
        with anyio.fail_after(WAIT):
            while not predicate():
                if self._event is None:
                    self._event = anyio.Event()
                await self._event.wait()


class LoopbackBroker:
    """Routes publications between the backends attached to it."""

    def __init__(self) -> None:
        self.backends: list[LoopbackBackend] = []
        self.watch = Watch()


class LoopbackBackend(Backend):
    """A cross-process backend on a `LoopbackBroker`; records every call it gets.

    Attributes:
        log: ("subscribe" | "unsubscribe", room) for every call, in order.
        subscribed: The rooms this backend receives now.
        published: Every (room, text) the hub's publisher handed over and the broker took.
        gate: When set, `publish_many` waits for it (`at_gate` counts the waits).
    """

    def __init__(self, broker: LoopbackBroker, *, fail_start: bool = False) -> None:
        self.broker = broker
        self.watch = broker.watch
        self.fail_start = fail_start
        self.deliver: Deliver | None = None
        self.state_changed: StateChanged | None = None
        self.log: list[tuple[str, str]] = []
        self.subscribed: set[str] = set()
        self.published: list[tuple[str | None, str]] = []
        self.gate: anyio.Event | None = None
        self.at_gate = 0
        self._connected = True

    async def start(
        self, deliver: Deliver, task_group: TaskGroup, state_changed: StateChanged
    ) -> None:
        if self.fail_start:
            raise ConnectionError("broker unreachable")
        self.deliver = deliver
        self.state_changed = state_changed
        self.broker.backends.append(self)
        self.watch.changed()

    async def stop(self) -> None:
        self.broker.backends.remove(self)
        self.subscribed.clear()  # as a real connection's subscriptions end with it
        self.watch.changed()

    async def subscribe(self, room: str) -> None:
        self.log.append(("subscribe", room))
        self.subscribed.add(room)
        self.watch.changed()

    async def unsubscribe(self, room: str) -> None:
        self.log.append(("unsubscribe", room))
        self.subscribed.discard(room)
        self.watch.changed()

    async def publish_many(self, items: Sequence[Item]) -> None:
        if self.gate is not None:
            self.at_gate += 1
            self.watch.changed()
            await self.gate.wait()
        await super().publish_many(items)

    async def publish(self, room: str | None, event: Message) -> None:
        self.published.append((room, event["text"]))
        for other in self.broker.backends:
            if other is not self and (room is None or room in other.subscribed):
                assert other.deliver is not None
                other.deliver(room, event)
        self.watch.changed()

    @property
    def connected(self) -> bool:
        return self._connected

    def set_link(self, up: bool) -> None:
        """Report the link to the other processes going down or coming back."""
        assert self.state_changed is not None
        self._connected = up
        self.state_changed(up)


class Member(RoomEndpoint):
    """Runs text commands: `join R`, `leave R`, `say R text`, `all text`, `close`; acks
    each with `ok <command>` after it is done."""

    encoding = "text"
    watch: ClassVar[Watch]
    codes: ClassVar[list[int]]

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> None:
        command, _, arg = data.partition(" ")
        if command == "join":
            await self.join(arg)
        elif command == "leave":
            await self.leave(arg)
        elif command == "say":
            room, _, text = arg.partition(" ")
            await self.broadcast(room, text)
        elif command == "all":
            await self.broadcast_all(arg)
        elif command == "close":
            await self.close(1000)
        await self.send_message(f"ok {data}")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.codes.append(close_code)
        self.watch.changed()


def endpoint(hub: Hub, watch: Watch, **attrs: Any) -> type[Member]:
    """A `Member` class on `hub` that records its close codes and signals `watch`."""
    return type("Member", (Member,), {"hub": hub, "watch": watch, "codes": [], **attrs})


class StuckPeer(FakePeer):
    """A client whose socket takes nothing: every data frame's send blocks forever."""

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.send":
            await anyio.sleep_forever()
        await super().send(message)


async def open_peer(
    cls: type[RoomEndpoint], stack: AsyncExitStack, peer: FakePeer | None = None
) -> FakePeer:
    """An accepted connection of `cls`, served until `stack` closes."""
    peer = peer or FakePeer()
    await stack.enter_async_context(serving(cls, peer))
    await peer.connect()
    await peer.expect_accept()
    return peer


async def command(peer: FakePeer, text: str) -> None:
    """Have the connection run `text` and wait until it has."""
    await peer.send_text(text)
    assert await peer.next_text() == f"ok {text}"


async def nothing_more(*peers: FakePeer) -> None:
    """Once every task is blocked, none of `peers` has anything unread."""
    await anyio.wait_all_tasks_blocked()
    for peer in peers:
        assert peer.from_app.statistics().current_buffer_used == 0


def only(members: frozenset[Any]) -> RoomEndpoint:
    (member,) = members
    assert isinstance(member, RoomEndpoint)
    return member


def unopened(cls: type[RoomEndpoint]) -> RoomEndpoint:
    """A connection object that has not been served (as a server makes one per socket)."""
    peer = FakePeer()
    peer.close()  # never served
    return cls(peer.scope, peer.receive, peer.send)


def two_hubs(**options: Any) -> tuple[LoopbackBroker, LoopbackBackend, LoopbackBackend, Hub, Hub]:
    broker = LoopbackBroker()
    backend_a, backend_b = LoopbackBackend(broker), LoopbackBackend(broker)
    return broker, backend_a, backend_b, Hub(backend_a, **options), Hub(backend_b, **options)


# ---------------------------------------------------------------------- across processes


async def test_broadcasts_cross_between_hubs_to_subscribed_rooms_only() -> None:
    """A broadcast reaches the other hub's members of its room (and a broadcast_all all of
    them) exactly once, and is carried only to hubs subscribed to that room."""
    broker, backend_a, backend_b, hub_a, hub_b = two_hubs()
    member_a, member_b = endpoint(hub_a, broker.watch), endpoint(hub_b, broker.watch)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub_a)
        await stack.enter_async_context(hub_b)
        a = await open_peer(member_a, stack)
        b = await open_peer(member_b, stack)
        c = await open_peer(member_b, stack)
        await command(a, "join r")
        await command(b, "join r")
        await command(c, "join other")
        await broker.watch.until(
            lambda: backend_a.subscribed == {"r"} and backend_b.subscribed == {"r", "other"}
        )

        await a.send_text("say r hello")
        assert await a.next_text() == "hello"  # the local copy, before the ack
        assert await a.next_text() == "ok say r hello"
        assert await b.next_text() == "hello"  # through the broker

        await command(a, "say other to-c")  # a is not in `other`; hub b's member is
        assert await c.next_text() == "to-c"

        await command(a, "say nowhere lost")  # no hub subscribes to `nowhere`
        await broker.watch.until(lambda: (("nowhere", "lost")) in backend_a.published)

        await b.send_text("all everyone")
        for peer in (b, a, c):
            assert await peer.next_text() == "everyone"
        assert await b.next_text() == "ok all everyone"

        await hub_a.broadcast_all("from-a")
        for peer in (a, b, c):
            assert await peer.next_text() == "from-a"
        await broker.watch.until(lambda: (None, "from-a") in backend_a.published)
        await nothing_more(a, b, c)
        assert hub_a.statistics().published == 4
        assert hub_b.statistics().published == 1  # what arrived through the broker is not
        for peer in (a, b, c):
            await peer.disconnect()
    assert broker.backends == []  # both hubs stopped their backends


async def test_subscriptions_follow_local_membership() -> None:
    """The first local member subscribes the room and the last one to go unsubscribes it,
    whether it leaves, is removed, leaves all rooms, disconnects or is closed."""
    broker = LoopbackBroker()
    backend = LoopbackBackend(broker)
    hub = Hub(backend)
    cls = endpoint(hub, broker.watch)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        assert hub.backend is backend
        a = await open_peer(cls, stack)
        b = await open_peer(cls, stack)
        c = await open_peer(cls, stack)

        async def settled(rooms: set[str]) -> None:
            await broker.watch.until(lambda: backend.subscribed == rooms)
            await anyio.wait_all_tasks_blocked()
            assert backend.subscribed == rooms == set(hub.rooms())

        await command(a, "join r")
        await command(b, "join r")
        await settled({"r"})
        await command(a, "leave r")
        await settled({"r"})  # b is still in it
        assert await hub.remove(only(hub.members("r"))) == frozenset({"r"})
        await settled(set())

        await command(a, "join x")
        await command(a, "join y")
        await settled({"x", "y"})
        assert await hub.leave_all(only(hub.members("x"))) == frozenset({"x", "y"})
        await settled(set())

        await command(c, "join z")
        await settled({"z"})
        await c.disconnect(1000)
        await broker.watch.until(lambda: cls.codes == [1000])
        await settled(set())

        await command(a, "join w")
        await settled({"w"})
        await a.send_text("close")
        assert await a.expect_close() == (1000, "")
        await broker.watch.until(lambda: cls.codes == [1000, 1000])
        await settled(set())
        await b.disconnect()
    counts = Counter(backend.log)
    assert set(counts.values()) == {1}  # every room subscribed once, unsubscribed once
    assert {room for _, room in counts} == {"r", "x", "y", "z", "w"}


async def test_subscriptions_settle_to_exactly_the_local_rooms() -> None:
    """After a burst of joins and leaves that do not wait for the backend, the hub ends up
    subscribed to exactly the rooms that have local members."""
    broker = LoopbackBroker()
    backend = LoopbackBackend(broker)
    hub = Hub(backend)
    cls = endpoint(hub, broker.watch)
    rng = random.Random(13)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        peers = [await open_peer(cls, stack) for _ in range(3)]
        await command(peers[0], "join r0")
        conns = list(hub.connections)
        assert len(conns) == 3
        for _ in range(60):
            conn, room = rng.choice(conns), f"r{rng.randrange(4)}"
            if rng.random() < 0.5:
                await hub.join(conn, room)
            else:
                await hub.leave(conn, room)
        await hub.leave_all(conns[0])
        await broker.watch.until(lambda: backend.subscribed == set(hub.rooms()))
        await anyio.wait_all_tasks_blocked()
        assert backend.subscribed == set(hub.rooms())
        for peer in peers:
            await peer.disconnect()
    assert backend.subscribed == set()


# ---------------------------------------------------------------------- running the hub


async def test_a_stopped_hub_runs_again_and_subscribes_afresh() -> None:
    """A hub whose `async with` ended (a lifespan run by several test clients) can be
    entered again: its rooms subscribe anew and cross the broker again."""
    broker, backend_a, _, hub_a, hub_b = two_hubs()
    member_a = endpoint(hub_a, broker.watch)
    async with hub_b:
        remote = FakePeer()
        async with serving(endpoint(hub_b, broker.watch), remote):
            await remote.connect()
            await remote.expect_accept()
            await command(remote, "join r")
            for run in range(2):
                peer = FakePeer()
                async with serving(member_a, peer):
                    async with hub_a:
                        await peer.connect()
                        await peer.expect_accept()
                        await command(peer, "join r")
                        await broker.watch.until(lambda: backend_a.subscribed == {"r"})
                        await hub_a.broadcast("r", f"run{run}")
                        assert await remote.next_text() == f"run{run}"
                    assert await peer.expect_close() == (1001, "server shutting down")
            await remote.disconnect()
    assert member_a.codes == [1001, 1001]


async def test_hub_not_running_is_a_clear_error() -> None:
    """A cross-process hub outside `async with hub:` refuses joins and broadcasts, saying
    how to fix it; before it starts and after it stopped."""
    hub = Hub(LoopbackBackend(LoopbackBroker()))
    conn = unopened(endpoint(hub, Watch()))

    async def refused() -> None:
        with pytest.raises(HubNotRunning, match="async with hub"):
            await hub.join(conn, "r")
        with pytest.raises(HubNotRunning, match="async with hub"):
            await hub.broadcast("r", "x")
        with pytest.raises(HubNotRunning):
            await hub.broadcast_all("x")
        with pytest.raises(HubNotRunning):
            Room(hub=hub, name="r").push("x")

    await refused()
    async with hub:
        await hub.broadcast("r", "x")
    await refused()
    assert hub.rooms() == frozenset()


async def test_failed_backend_start_leaves_the_hub_stopped() -> None:
    """A backend that cannot start raises its own error from `async with hub:` (no
    ExceptionGroup) and leaves the hub stopped; it can be started again later."""
    broker = LoopbackBroker()
    backend = LoopbackBackend(broker, fail_start=True)
    hub = Hub(backend)
    with pytest.raises(ConnectionError, match="broker unreachable"):
        async with hub:
            pytest.fail("the block must not run")  # pragma: no cover
    with pytest.raises(HubNotRunning):
        await hub.broadcast("r", "x")
    assert broker.backends == []
    backend.fail_start = False
    async with hub:
        assert broker.backends == [backend]
        await hub.broadcast("r", "x")
        with pytest.raises(RuntimeError, match="already running"):
            await hub.__aenter__()


async def test_push_delivers_locally_at_once_and_its_await_waits_for_the_backend() -> None:
    """`room.push()` has put the message in local members' queues when it returns;
    awaiting its result waits until the backend has taken the message."""
    broker, backend_a, backend_b, hub_a, hub_b = two_hubs()
    gate = backend_a.gate = anyio.Event()
    room = Room(hub=hub_a, name="news")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub_a)
        await stack.enter_async_context(hub_b)
        local = await open_peer(endpoint(hub_a, broker.watch), stack)
        remote = await open_peer(endpoint(hub_b, broker.watch), stack)
        await command(local, "join news")
        await command(remote, "join news")
        await broker.watch.until(lambda: "news" in backend_b.subscribed)

        pending = room.push({"n": 1})
        assert only(hub_a.members("news")).statistics().queued == 1  # no await since
        done = anyio.Event()

        async def wait() -> None:
            await pending
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await broker.watch.until(lambda: backend_a.at_gate == 1)
            assert await local.next_text() == '{"n":1}'
            room.push("queued behind the gate")  # not awaited: nothing to warn about
            stats = hub_a.statistics()
            assert (stats.published, stats.publish_queued) == (2, 1)
            assert not done.is_set()  # the backend has not taken it yet
            gate.set()
        assert await remote.next_text() == '{"n":1}'
        assert await remote.next_text() == "queued behind the gate"
        assert hub_a.statistics().publish_failures == 0
        await local.disconnect()
        await remote.disconnect()


def test_hub_backend_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub() takes None, 'memory://', a Backend or a Redis URL (a RedisBackend when the
    redis extra is installed, else an ImportError saying how to install it)."""
    assert isinstance(Hub().backend, MemoryBackend)
    assert isinstance(Hub("memory://").backend, MemoryBackend)
    backend = LoopbackBackend(LoopbackBroker())
    assert Hub(backend).backend is backend
    url = "redis://127.0.0.1:6379/0"
    installed = (
        importlib.util.find_spec("coredis") is not None
        and importlib.util.find_spec("wsrooms.backends.redis") is not None
    )
    if installed:
        redis_backend = importlib.import_module("wsrooms.backends.redis").RedisBackend
        hub = Hub(url, name="app")
        assert isinstance(hub.backend, redis_backend)
        assert not hub.backend.local_only
    else:
        with pytest.raises(ImportError, match=r"pip install 'wsrooms\[redis\]'"):
            Hub(url)
    # Without the extra, whatever is installed here: every Redis URL says what to install.
    monkeypatch.setitem(sys.modules, "wsrooms.backends.redis", None)
    for url in ("redis://127.0.0.1:6379/0", "rediss://example.com", "unix:///tmp/redis.sock"):
        with pytest.raises(ImportError, match=r"pip install 'wsrooms\[redis\]'"):
            Hub(url)
    with pytest.raises(ValueError, match="unknown hub backend"):
        Hub("kafka://x")
    with pytest.raises(ValueError, match="backend_timeout"):
        Hub(backend_timeout=0)
    with pytest.raises(ValueError, match="publish_queue_size"):
        Hub(publish_queue_size=0)
    with pytest.raises(ValueError, match="hub name"):
        Hub(name="")


async def test_memory_backend_is_a_no_op() -> None:
    """The in-memory backend carries nothing: every operation completes doing nothing."""
    backend = MemoryBackend()
    assert backend.local_only
    assert backend.connected
    assert backend.lost == 0
    async with anyio.create_task_group() as tg:
        await backend.start(lambda room, event: None, tg, lambda connected: None)
    await backend.subscribe("r")
    await backend.publish_many([("r", {"type": "websocket.send", "text": "x"})])
    await backend.publish(None, {"type": "websocket.send", "text": "x"})
    await backend.unsubscribe("r")
    await backend.stop()


async def test_memory_hub_works_with_and_without_async_with() -> None:
    """The in-memory hub serves rooms without `async with`; inside it, the same, and
    leaving the block closes its connections with 1001."""
    watch = Watch()
    hub = Hub()
    cls = endpoint(hub, watch)
    async with AsyncExitStack() as stack:
        peer = await open_peer(cls, stack)
        await command(peer, "join r")
        await hub.broadcast("r", "outside")
        assert await peer.next_text() == "outside"
        await peer.disconnect()
    stats = hub.statistics()
    assert stats.backend_connected
    assert (stats.connections, stats.rooms, stats.backend_outages) == (0, 0, 0)

    peer = FakePeer()
    async with serving(cls, peer):  # outside the hub's block, as a server's task is
        async with hub:
            await peer.connect()
            await peer.expect_accept()
            await command(peer, "join r")
            await hub.broadcast_all("inside")
            assert await peer.next_text() == "inside"
        assert await peer.expect_close() == (1001, "server shutting down")
    assert cls.codes == [1000, 1001]
    assert hub.rooms() == frozenset()


# ---------------------------------------------------- issue 13: doubles that hang or fail


class HangingUnsubscribe(LoopbackBackend):
    async def unsubscribe(self, room: str) -> None:
        self.log.append(("unsubscribe", room))
        self.watch.changed()
        await anyio.sleep_forever()


async def test_hung_unsubscribe_holds_up_no_one() -> None:
    """While one connection's unsubscribe hangs for ever, that connection still ends at
    once and an unrelated join and broadcast complete within a second."""
    broker = LoopbackBroker()
    backend = HangingUnsubscribe(broker)
    hub = Hub(backend, backend_timeout=60)  # the hang outlasts the test
    cls = endpoint(hub, broker.watch, exit_max_delay=0.5)
    with anyio.fail_after(5):  # leaving the hub cancels the hung call too
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(hub)
            doomed = await open_peer(cls, stack)
            await command(doomed, "join doomed")
            await broker.watch.until(lambda: backend.subscribed == {"doomed"})
            await doomed.disconnect(1000)
            with anyio.fail_after(1):
                await broker.watch.until(lambda: ("unsubscribe", "doomed") in backend.log)
                await broker.watch.until(lambda: cls.codes == [1000])  # on_disconnect ran
            y, z = FakePeer(), FakePeer()
            for peer in (y, z):
                await stack.enter_async_context(serving(cls, peer))
            with anyio.fail_after(1):
                for peer in (y, z):
                    await peer.connect()
                    await peer.expect_accept()
                await command(y, "join fresh")
                await command(z, "join fresh")
                await hub.broadcast("fresh", "hi")
                await y.send_text("say fresh again")
                for peer in (y, z):
                    assert await peer.next_text() == "hi"
                    assert await peer.next_text() == "again"
                assert await y.next_text() == "ok say fresh again"
            assert ("fresh", "again") in backend.published
            assert hub.statistics().connections == 2
            await y.disconnect()
            await z.disconnect()


async def test_hung_unsubscribe_is_given_up_after_backend_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The syncer gives up a hung call after `backend_timeout` (logged at INFO) and goes
    on with the next room."""
    broker = LoopbackBroker()
    backend = HangingUnsubscribe(broker)
    hub = Hub(backend, backend_timeout=0.2)
    cls = endpoint(hub, broker.watch)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        a = await open_peer(cls, stack)
        await command(a, "join doomed")
        await command(a, "leave doomed")
        await command(a, "join fresh")
        with anyio.fail_after(1):
            await broker.watch.until(lambda: "fresh" in backend.subscribed)
        await a.disconnect()
    assert any(
        r.levelno == logging.INFO and "unsubscribe('doomed') failed (TimeoutError)" in r.message
        for r in caplog.records
    )


async def test_hung_backend_stop_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """Leaving the hub while the backend's stop hangs takes `backend_timeout`, and warns."""

    class HangingStop(LoopbackBackend):
        async def stop(self) -> None:
            await anyio.sleep_forever()

    hub = Hub(HangingStop(LoopbackBroker()), backend_timeout=0.2)
    with anyio.fail_after(1):
        async with hub:
            pass
    assert any(
        r.levelno == logging.WARNING and "did not stop within 0.2s" in r.message
        for r in caplog.records
    )


async def test_failed_subscribe_is_logged_and_local_rooms_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A subscribe that fails does not fail the join: local delivery goes on, and the
    failure is logged at INFO."""

    class FailingSubscribe(LoopbackBackend):
        async def subscribe(self, room: str) -> None:
            self.log.append(("subscribe", room))
            self.watch.changed()
            raise PermissionError(room)

    broker = LoopbackBroker()
    backend = FailingSubscribe(broker)
    hub = Hub(backend)
    cls = endpoint(hub, broker.watch)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        a = await open_peer(cls, stack)
        await command(a, "join forbidden")
        await broker.watch.until(lambda: backend.log == [("subscribe", "forbidden")])
        await a.send_text("say forbidden still-here")
        assert await a.next_text() == "still-here"
        assert await a.next_text() == "ok say forbidden still-here"
        assert hub.rooms() == frozenset({"forbidden"})
        await a.disconnect()
    assert cls.codes == [1000]
    assert any(
        "subscribe('forbidden') failed (PermissionError)" in r.message for r in caplog.records
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class FailingPublish(LoopbackBackend):
    attempts = 0

    async def publish_many(self, items: Sequence[Item]) -> None:
        self.attempts += len(items)
        self.watch.changed()
        raise ConnectionError("broker went away")


async def test_failed_publish_is_counted_and_ends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A publish that raises ConnectionError reaches no caller and ends neither the hub
    nor any connection; local members get their copy, and each failure is counted."""
    broker = LoopbackBroker()
    backend = FailingPublish(broker)
    hub = Hub(backend)
    cls = endpoint(hub, broker.watch)
    room = Room(hub=hub, name="r")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        a = await open_peer(cls, stack)
        b = await open_peer(cls, stack)
        await command(a, "join r")
        await command(b, "join r")

        await a.send_text("say r one")  # the handler awaits the failing publish
        assert await a.next_text() == "one"
        assert await a.next_text() == "ok say r one"
        await hub.broadcast("r", "two")
        await hub.broadcast_all("three")
        await room.push("four")
        room.push("five")  # not awaited
        await broker.watch.until(lambda: backend.attempts == 5)
        await anyio.wait_all_tasks_blocked()
        for text in ("two", "three", "four", "five"):
            assert await a.next_text() == text
        for text in ("one", "two", "three", "four", "five"):
            assert await b.next_text() == text
        stats = hub.statistics()
        assert (stats.publish_failures, stats.published, stats.connections) == (5, 5, 2)

        await b.send_text("say r six")  # every connection still runs
        assert await a.next_text() == "six"
        assert await b.next_text() == "six"
        assert await b.next_text() == "ok say r six"
        assert cls.codes == []
        await a.disconnect()
        await b.disconnect()
    assert cls.codes == [1000, 1000]
    assert hub.statistics().publish_failures == 6
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class HangingPublish(LoopbackBackend):
    """Publishing hangs for ever, except for a batch of `flush` messages."""

    async def publish_many(self, items: Sequence[Item]) -> None:
        if any(event["text"] != "flush" for _, event in items):
            await anyio.sleep_forever()
        await super().publish_many(items)


async def test_hung_publish_is_bounded_by_backend_timeout() -> None:
    """With a publish that hangs, an awaited broadcast (from the hub or a handler) returns
    within `backend_timeout`, its local copy delivered, and the failure is counted."""
    broker = LoopbackBroker()
    backend = HangingPublish(broker)
    hub = Hub(backend, backend_timeout=0.2)
    cls = endpoint(hub, broker.watch)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        a = await open_peer(cls, stack)
        await command(a, "join r")
        start = anyio.current_time()
        with anyio.fail_after(1):
            await hub.broadcast("r", "x")
        assert anyio.current_time() - start < 0.2 + 0.3
        assert await a.next_text() == "x"
        with anyio.fail_after(1):  # a handler's awaited broadcast is bounded too
            await a.send_text("say r y")
            assert await a.next_text() == "y"
            assert await a.next_text() == "ok say r y"
        # Once a later message goes out, the publisher has given up both before it.
        Room(hub=hub, name="r").push("flush")
        await broker.watch.until(lambda: ("r", "flush") in backend.published)
        assert hub.statistics().publish_failures == 2
        assert await a.next_text() == "flush"
        await a.disconnect()
    assert cls.codes == [1000]


async def test_full_publisher_queue_drops_only_the_cross_process_copy() -> None:
    """With the publisher's queue full, further broadcasts still reach local members at
    once (an awaited one returns at once too); their cross-process copy is dropped and
    counted, and what was queued goes out once the backend moves again."""
    broker, backend_a, backend_b, hub_a, hub_b = two_hubs(publish_queue_size=2)
    gate = backend_a.gate = anyio.Event()
    room = Room(hub=hub_a, name="r")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub_a)
        await stack.enter_async_context(hub_b)
        local = await open_peer(endpoint(hub_a, broker.watch), stack)
        remote = await open_peer(endpoint(hub_b, broker.watch), stack)
        await command(local, "join r")
        await command(remote, "join r")
        await broker.watch.until(lambda: "r" in backend_b.subscribed)

        room.push("m1")
        await broker.watch.until(lambda: backend_a.at_gate == 1)  # the publisher holds m1
        for text in ("m2", "m3", "m4", "m5"):
            room.push(text)
        with anyio.fail_after(0.5):
            await hub_a.broadcast("r", "m6")
        stats = hub_a.statistics()
        assert (stats.publish_queued, stats.publish_failures, stats.published) == (2, 3, 6)
        for text in ("m1", "m2", "m3", "m4", "m5", "m6"):
            assert await local.next_text() == text

        gate.set()
        for text in ("m1", "m2", "m3"):
            assert await remote.next_text() == text
        await nothing_more(local, remote)
        assert hub_a.statistics().publish_failures == 3
        await local.disconnect()
        await remote.disconnect()


async def test_backend_outage_and_recovery_are_observable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend reporting its link down then up: the snapshot shows it and counts one
    outage, one WARNING then one INFO line are logged, `on_backend_state` gets False then
    True, and local delivery goes on meanwhile."""
    broker = LoopbackBroker()
    backend = LoopbackBackend(broker)
    calls: list[bool] = []
    hub = Hub(backend, on_backend_state=calls.append)
    cls = endpoint(hub, broker.watch)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        a = await open_peer(cls, stack)
        await command(a, "join r")
        stats = hub.statistics()
        assert (stats.backend_connected, stats.backend_outages) == (True, 0)
        caplog.clear()

        backend.set_link(False)
        stats = hub.statistics()
        assert (stats.backend_connected, stats.backend_outages) == (False, 1)
        assert calls == [False]
        await hub.broadcast("r", "during the outage")
        assert await a.next_text() == "during the outage"

        backend.set_link(True)
        stats = hub.statistics()
        assert (stats.backend_connected, stats.backend_outages) == (True, 1)
        assert calls == [False, True]
        await a.disconnect()
    lines = [(r.levelno, r.message) for r in caplog.records if "backend link" in r.message]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
    assert "down" in lines[0][1]
    assert "back" in lines[1][1]


async def test_failing_backend_state_hook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """An `on_backend_state` hook that raises is logged; the outage is still counted."""

    def hook(connected: bool) -> None:
        raise ValueError("dashboard down")

    backend = LoopbackBackend(LoopbackBroker())
    hub = Hub(backend, on_backend_state=hook)
    async with hub:
        backend.set_link(False)
        assert hub.statistics().backend_outages == 1
        backend.set_link(True)
    assert sum("on_backend_state" in r.message for r in caplog.records) == 2


@pytest.mark.parametrize("cross_process", [False, True], ids=["memory", "loopback"])
async def test_an_ended_connection_is_never_added_back(cross_process: bool) -> None:
    """After a connection ended, `hub.add` and `hub.join` refuse it, saying it has ended."""
    watch = Watch()
    hub = Hub(LoopbackBackend(LoopbackBroker())) if cross_process else Hub()
    cls = endpoint(hub, watch)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        peer = await open_peer(cls, stack)
        await command(peer, "join r")
        conn = only(hub.members("r"))
        await peer.disconnect(1000)
        await watch.until(lambda: cls.codes == [1000])
        with pytest.raises(RuntimeError, match="has ended"):
            hub.add(conn)
        with pytest.raises(RuntimeError, match="has ended"):
            await hub.join(conn, "r")
        assert conn not in hub.connections
        assert hub.rooms_of(conn) == frozenset()
        assert hub.rooms() == frozenset()
        assert hub.statistics().connections == 0


async def test_statistics_are_a_frozen_snapshot() -> None:
    """`hub.statistics()` counts connections, rooms, broadcasts, drops and slow-consumer
    disconnects, as plain values in a snapshot that cannot be assigned to."""
    watch = Watch()
    hub = Hub()
    fast = endpoint(hub, watch)
    options = {"send_queue_size": 2, "slow_consumer_timeout": 0.05}
    dropping = endpoint(hub, watch, slow_consumer="drop_newest", **options)
    closing = endpoint(hub, watch, slow_consumer="disconnect", **options)
    async with AsyncExitStack() as stack:
        ok = await open_peer(fast, stack)
        other = await open_peer(fast, stack)
        stuck_dropping = await open_peer(dropping, stack, StuckPeer())
        stuck_closing = await open_peer(closing, stack, StuckPeer())
        await command(ok, "join r")
        await command(other, "join s")
        for conn in _of(hub, dropping) + _of(hub, closing):  # they take no ack
            await hub.join(conn, "r")
        assert sorted(type(conn).__name__ for conn in hub.members("r")) == ["Member"] * 3
        before = hub.statistics()
        assert isinstance(before, HubStatistics)
        assert (before.connections, before.rooms, before.published) == (4, 2, 0)
        assert (before.dropped, before.slow_consumer_disconnects) == (0, 0)
        assert before.backend_connected

        for i in range(5):
            await hub.broadcast("r", str(i))
        # Queues of two, and "0" blocked in the socket: the third broadcast finds both stuck
        # members full and waits 0.05 s for a write; then one member is disconnected, and
        # the other keeps "1" and "2" and drops "3" and "4" at once.
        await watch.until(lambda: closing.codes == [1008])
        stats = hub.statistics()
        assert (stats.connections, stats.rooms, stats.published) == (3, 2, 5)
        assert (stats.dropped, stats.slow_consumer_disconnects) == (2, 1)
        assert {type(conn) for conn in hub.members("r")} == {fast, dropping}
        assert only(frozenset(_of(hub, dropping))).statistics().dropped == 2
        for i in range(5):
            assert await ok.next_text() == str(i)
        assert await stuck_closing.expect_close() == (1008, "slow consumer")
        assert before.connections == 4  # a snapshot, not a view
        for field in dataclasses.fields(stats):
            assert type(getattr(stats, field.name)) in (int, bool)
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.connections = 0  # type: ignore[misc]

        await stuck_dropping.disconnect()
        await watch.until(lambda: dropping.codes == [1000])
        assert hub.statistics().dropped == 2  # kept after the connection ended
        await ok.disconnect()
        await other.disconnect()
    final = hub.statistics()
    assert (final.connections, final.rooms, final.dropped) == (0, 0, 2)


def _of(hub: Hub, cls: type[RoomEndpoint]) -> list[RoomEndpoint]:
    return [conn for conn in hub.connections if type(conn) is cls]


async def test_removing_a_connection_keeps_its_drops_counted() -> None:
    """`hub.dropped` counts every connection of the hub since it was created: removing a
    connection that dropped messages does not take its drops back."""
    hub = Hub()
    watch = Watch()
    dropping = endpoint(
        hub, watch, slow_consumer="drop_newest", send_queue_size=2, slow_consumer_timeout=0.05
    )
    async with AsyncExitStack() as stack:
        peer = await open_peer(dropping, stack, StuckPeer())
        conn = only(hub.connections)
        await hub.join(conn, "r")
        for i in range(5):
            await hub.broadcast("r", str(i))
        assert hub.statistics().dropped == conn.statistics().dropped == 2
        await hub.remove(conn)
        await peer.disconnect()
        await watch.until(lambda: dropping.codes == [1000])
        assert hub.statistics().dropped == 2


def _stall(seconds: float) -> None:
    """The whole process gets no CPU for a moment (a GC pause, a throttled container)."""
    time.sleep(seconds)


async def _stalling_task() -> None:
    _stall(0.06)  # longer than the slow_consumer_timeout below


async def test_a_moving_member_is_not_a_slow_consumer_after_a_stall() -> None:
    """A member whose socket takes every frame at once is never a slow consumer, also
    when the process stalls for longer than `slow_consumer_timeout` just as a broadcast
    waits for room in its queue: its frames wait only because its writer has not run."""
    hub = Hub()
    watch = Watch()
    cls = endpoint(hub, watch, send_queue_size=2, slow_consumer_timeout=0.05)
    for trial in range(20):  # the order trio runs ready tasks in is random
        async with AsyncExitStack() as stack:
            peer = await open_peer(cls, stack)
            await command(peer, "join r")
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stalling_task)  # runs next to the writer, after the broadcasts
                for i in range(3):  # the third finds the queue full and waits for room
                    await hub.broadcast("r", str(i))
            assert hub.statistics().slow_consumer_disconnects == 0, f"trial {trial}"
            for i in range(3):
                assert await peer.next_text() == str(i)
            await peer.disconnect()
