"""RoomEndpoint and Hub on fake peers: membership, hooks, delivery, slow consumers (SPEC §2)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from starlette.types import Message
from starlette.websockets import WebSocket

from tests._fake import FakePeer, serving
from wsrooms import CloseCode, Hub, RoomEndpoint

pytestmark = pytest.mark.anyio


class Chat(RoomEndpoint):
    """Joins the room named by the first message's "join"; broadcasts "say" to its rooms."""

    events: list[tuple[Any, ...]] = []

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
        if "join" in data:
            await self.join(data["join"])
            await self.send_message({"joined": data["join"]})
        elif "leave" in data:
            await self.leave(data["leave"])
            await self.send_message({"left": data["leave"]})
        elif "say" in data:
            await self.broadcast(data["to"], data["say"], exclude_self=data.get("quiet", False))
        elif "all" in data:
            await self.broadcast_all(data["all"])
        elif "rooms" in data:
            await self.send_message(sorted(self.rooms))
        return None

    async def on_join(self, room: str) -> None:
        self.events.append(("join", id(self), room))

    async def on_leave(self, room: str) -> None:
        self.events.append(("leave", id(self), room))

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.events.append(("disconnect", id(self), close_code))


def endpoint(**attrs: Any) -> type[Chat]:
    """A fresh direct-style subclass with its own hub and event list."""
    attrs.setdefault("hub", Hub())
    attrs.setdefault("events", [])
    return type("ChatEndpoint", (Chat,), attrs)


@asynccontextmanager
async def peers(cls: type[RoomEndpoint], count: int) -> AsyncIterator[list[FakePeer]]:
    """`count` accepted connections of `cls`, all disconnected (1000) on exit."""
    async with AsyncExitStack() as stack:
        result = []
        for _ in range(count):
            peer = FakePeer()
            await stack.enter_async_context(serving(cls, peer))
            await peer.connect()
            await peer.expect_accept()
            result.append(peer)
        yield result
        for peer in result:
            try:
                await peer.disconnect()
            except anyio.BrokenResourceError:
                pass  # that connection already ended


async def join(peer: FakePeer, room: str) -> None:
    await peer.send_json({"join": room})
    assert await peer.next_json() == {"joined": room}


async def test_broadcast_reaches_exactly_the_room() -> None:
    """A broadcast reaches every member of its room, and nobody else."""
    cls = endpoint()
    async with peers(cls, 3) as (a, b, c):
        await join(a, "red")
        await join(b, "red")
        await join(c, "blue")
        await a.send_json({"say": "hi red", "to": "red"})
        assert await a.next_text() == "hi red"
        assert await b.next_text() == "hi red"
        await c.send_json({"say": "hi blue", "to": "blue"})
        assert await c.next_text() == "hi blue"
        await anyio.wait_all_tasks_blocked()
        assert a.from_app.statistics().current_buffer_used == 0
        assert b.from_app.statistics().current_buffer_used == 0
        assert cls.hub.rooms() == frozenset({"red", "blue"})
        assert len(cls.hub.members("red")) == 2


async def test_exclude_self_and_broadcast_all() -> None:
    """exclude_self skips the sender; broadcast_all reaches every connection of the hub."""
    cls = endpoint()
    async with peers(cls, 3) as (a, b, c):
        await join(a, "r")
        await join(b, "r")
        await a.send_json({"say": "quiet", "to": "r", "quiet": True})
        assert await b.next_text() == "quiet"
        await c.send_json({"all": "everyone"})
        for peer in (a, b, c):
            assert await peer.next_text() == "everyone"
        assert len(cls.hub.connections) == 3


async def test_rooms_and_leave() -> None:
    """self.rooms is a frozenset of the connection's rooms; leave runs on_leave."""
    cls = endpoint()
    async with peers(cls, 1) as (a,):
        await join(a, "x")
        await join(a, "y")
        await a.send_json({"rooms": 1})
        assert await a.next_json() == ["x", "y"]
        await a.send_json({"leave": "x"})
        assert await a.next_json() == {"left": "x"}
        await a.send_json({"rooms": 1})
        assert await a.next_json() == ["y"]
    kinds = [(e[0], e[2]) for e in cls.events]
    assert kinds == [
        ("join", "x"),
        ("join", "y"),
        ("leave", "x"),
        ("leave", "y"),
        ("disconnect", 1000),
    ]


async def test_disconnect_leaves_every_room_before_on_disconnect() -> None:
    """A connection that ends leaves every room; on_leave runs for each, before on_disconnect."""
    cls = endpoint()
    async with peers(cls, 2) as (a, b):
        await join(a, "x")
        await join(a, "y")
        await join(b, "y")
        await a.disconnect(4002)
        await anyio.wait_all_tasks_blocked()
        assert cls.hub.rooms() == frozenset({"y"})
        assert len(cls.hub.connections) == 1
    a_events = [e for e in cls.events if e[1] == cls.events[0][1]]
    assert sorted(e[2] for e in a_events if e[0] == "leave") == ["x", "y"]
    assert a_events[-1] == ("disconnect", a_events[0][1], 4002)
    assert cls.hub.rooms() == frozenset()
    assert cls.hub.connections == frozenset()


async def test_crash_leaves_every_room() -> None:
    """A handler crash (1011) also takes the connection out of every room."""

    class Crashing(Chat):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            if data == "crash":
                raise RuntimeError("boom")
            return await super()._background_handler(task_id, websocket, data)

    cls = endpoint()
    crashing: type[RoomEndpoint] = type("Crashing", (Crashing,), {"hub": cls.hub, "events": []})
    async with peers(crashing, 1) as (a,):
        await join(a, "x")
        await a.send_json("crash")
        assert await a.expect_close() == (1011, "internal error")
        assert cls.hub.rooms() == frozenset()


async def test_can_join_refusal_closes_1008() -> None:
    """can_join returning false raises JoinRefused; uncaught, it closes with 1008."""

    class Picky(Chat):
        async def can_join(self, room: str) -> bool:
            return room != "vip"

    cls: type[Chat] = type("Picky", (Picky,), {"hub": Hub(), "events": []})
    async with peers(cls, 1) as (a,):
        await a.send_json({"join": "vip"})
        assert await a.expect_close() == (1008, "join refused")
    assert cls.hub.rooms() == frozenset()


async def test_join_refused_before_accept_refuses_handshake() -> None:
    """A join refused in on_connect before accept answers the handshake (HTTP 403)."""

    class Gate(RoomEndpoint):
        async def can_join(self, room: str) -> bool:
            return False

        async def on_connect(self, websocket: WebSocket) -> None:
            await self.join("locked")
            await super().on_connect(websocket)

    peer = FakePeer()
    async with serving(Gate, peer):
        await peer.connect()
        assert (await peer.next())["type"] == "websocket.close"
    assert Gate.hub.rooms() == frozenset()


async def test_join_before_accept_then_messages_flow() -> None:
    """join in on_connect before accept works; broadcasts queued meanwhile arrive after."""

    class Early(RoomEndpoint):
        encoding = "text"

        async def on_connect(self, websocket: WebSocket) -> None:
            await self.join("early")
            await self.broadcast("early", "queued before accept")
            await super().on_connect(websocket)

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.broadcast("early", data)

    peer = FakePeer()
    async with serving(Early, peer):
        await peer.connect()
        await peer.expect_accept()
        assert (await peer.next())["text"] == "queued before accept"
        await peer.send_text("after")
        assert (await peer.next())["text"] == "after"
        await peer.disconnect()


async def test_room_name_validation() -> None:
    """Joining or broadcasting to an invalid room name is a ValueError naming the rule."""
    hub = Hub()

    class Conn:
        websocket = None

    with pytest.raises(ValueError, match="empty"):
        await hub.join(Conn(), "")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="control"):
        await hub.broadcast("a\x01", "x")


def test_hub_per_subclass_rules() -> None:
    """A direct subclass gets its own hub; its subclasses share it unless they assign one."""

    class A(RoomEndpoint):
        pass

    class B(RoomEndpoint):
        pass

    class A2(A):
        pass

    shared = Hub()

    class C(RoomEndpoint):
        hub = shared

    class D(RoomEndpoint):
        hub = shared

    class A3(A):
        hub = Hub()

    assert isinstance(A.hub, Hub)
    assert A.hub is not B.hub
    assert A2.hub is A.hub
    assert C.hub is D.hub is shared
    assert A3.hub is not A.hub


def test_invalid_room_options() -> None:
    """A bad hub, queue size or policy is an error at class creation."""
    with pytest.raises(TypeError, match="hub"):
        type("X", (RoomEndpoint,), {"hub": object()})
    with pytest.raises(ValueError, match="send_queue_size"):
        type("X", (RoomEndpoint,), {"send_queue_size": 0})
    with pytest.raises(ValueError, match="slow_consumer"):
        type("X", (RoomEndpoint,), {"slow_consumer": "block"})


async def test_send_message_is_ordered_with_broadcasts() -> None:
    """send_message and broadcasts share one outbox: the member sees them in call order."""

    class Mixed(RoomEndpoint):
        encoding = "text"

        async def on_connect(self, websocket: WebSocket) -> None:
            await super().on_connect(websocket)
            await self.join("r")

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            for i in range(5):
                await self.send_message(f"direct {i}")
                await self.broadcast("r", f"room {i}")

    peer = FakePeer()
    async with serving(Mixed, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_text("go")
        got = [(await peer.next())["text"] for _ in range(10)]
        await peer.disconnect()
    assert got == [x for i in range(5) for x in (f"direct {i}", f"room {i}")]


async def test_per_sender_order_with_concurrent_handlers() -> None:
    """Messages of one sender reach every member in the order sent (handler broadcasts first)."""

    class Relay(RoomEndpoint):
        encoding = "text"

        async def on_connect(self, websocket: WebSocket) -> None:
            await super().on_connect(websocket)
            await self.join("r")

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.broadcast("r", data, exclude_self=True)
            await anyio.lowlevel.checkpoint()

    async with peers(Relay, 4) as (sender, *members):
        for i in range(200):
            await sender.send_text(str(i))
        for member in members:
            got = [int((await member.next())["text"]) for _ in range(200)]
            assert got == list(range(200))


class StuckPeer(FakePeer):
    """A client whose socket takes nothing: every data send blocks forever."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = anyio.Event()

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.send":
            self.stuck.set()
            await anyio.sleep_forever()
        await super().send(message)


async def _run_with_stuck_member(
    cls: type[RoomEndpoint], messages: int
) -> tuple[StuckPeer, list[FakePeer]]:
    stuck = StuckPeer()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(serving(cls, stuck))
        await stuck.connect()
        await stuck.expect_accept()
        async with peers(cls, 3) as (sender, *others):
            for i in range(messages):
                await sender.send_text(str(i))
            for other in others:
                got = [int((await other.next())["text"]) for _ in range(messages)]
                assert got == list(range(messages))  # never held up by the stuck member
            await stuck.disconnect()
    return stuck, others


def _relay(**attrs: Any) -> type[RoomEndpoint]:
    class Relay(RoomEndpoint):
        encoding = "text"
        hub = Hub()

        async def on_connect(self, websocket: WebSocket) -> None:
            await super().on_connect(websocket)
            await self.join("r")

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.broadcast("r", data, exclude_self=True)

    return type("Relay", (Relay,), attrs)


async def test_slow_consumer_disconnect_policy(caplog: pytest.LogCaptureFixture) -> None:
    """A member whose queue fills leaves its rooms at once; on_disconnect gets 1008."""
    codes: list[int] = []

    class Recording(RoomEndpoint):
        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)

    cls = _relay(send_queue_size=8, slow_consumer_timeout=0.05)
    cls = type("R", (Recording, cls), {})
    await _run_with_stuck_member(cls, 50)
    assert codes[0] == CloseCode.POLICY_VIOLATION
    assert cls.hub.dropped == 0
    assert any("slow consumer" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
async def test_slow_consumer_drop_policies_count(policy: str) -> None:
    """With a drop policy the stuck member stays; its drops are counted on it and the hub."""
    instances: list[RoomEndpoint] = []

    class Tracking(RoomEndpoint):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            instances.append(self)

    cls = _relay(send_queue_size=8, slow_consumer=policy, slow_consumer_timeout=0.05)
    cls = type("R", (Tracking, cls), {})
    await _run_with_stuck_member(cls, 50)
    stuck_conn = instances[0]
    # 50 messages: one is taken by the blocked send, 8 stay queued, 41 are dropped.
    assert stuck_conn.dropped == 41
    assert cls.hub.dropped == 41
    assert stuck_conn.statistics().queued == 0  # the outbox is discarded when it ends


async def test_hub_queries_return_snapshots() -> None:
    """members, rooms_of, rooms and connections return frozensets."""
    cls = endpoint()
    async with peers(cls, 1) as (a,):
        await join(a, "q")
        (conn,) = cls.hub.members("q")
        assert isinstance(cls.hub.members("q"), frozenset)
        assert cls.hub.rooms_of(conn) == frozenset({"q"})
        assert isinstance(cls.hub.rooms(), frozenset)
        assert isinstance(cls.hub.connections, frozenset)
        assert await cls.hub.leave_all(conn) == frozenset({"q"})
        assert cls.hub.connections == frozenset({conn})
        assert await cls.hub.remove(conn) == frozenset()
        assert conn.websocket.url.path == "/ws"


async def test_hub_shutdown_closes_connections_with_1001() -> None:
    """Leaving `async with hub:` closes every local connection with 1001."""
    cls = endpoint()
    async with peers(cls, 2) as (a, b):
        async with cls.hub:
            await join(a, "x")
        assert await a.expect_close() == (1001, "server shutting down")
        assert await b.expect_close() == (1001, "server shutting down")
    assert cls.hub.connections == frozenset()
    assert [e[2] for e in cls.events if e[0] == "disconnect"] == [1001, 1001]


SHARED_HUB = Hub()


class SharedAcrossLoops(RoomEndpoint):
    """Module-level class: its hub lives across the asyncio and trio runs."""

    hub = SHARED_HUB
    encoding = "text"

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.join(data)
        await self.send_message(sorted(self.rooms))


async def test_module_level_hub_survives_switching_event_loops() -> None:
    """A hub made at import serves concurrent joins under asyncio, then trio, in one process."""
    async with peers(SharedAcrossLoops, 2) as (a, b):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(a.send_text, f"a{i}")
                tg.start_soon(b.send_text, f"b{i}")
        for peer in (a, b):
            for _ in range(20):
                await peer.next()
        assert len(SHARED_HUB.rooms()) == 40
    assert SHARED_HUB.rooms() == frozenset()


async def test_logs_go_to_the_wsrooms_logger(caplog: pytest.LogCaptureFixture) -> None:
    """wsrooms logs through logging.getLogger("wsrooms") only."""
    caplog.set_level(logging.DEBUG)
    cls = endpoint()
    async with peers(cls, 1) as (a,):
        await a.send_text("{bad")
        await a.expect_close()
    ours = [r for r in caplog.records if "/wsrooms/" in r.pathname]
    assert ours
    assert {r.name for r in ours} == {"wsrooms"}
