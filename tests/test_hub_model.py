"""A stateful property test of rooms on real connections, on asyncio and on trio.

Hypothesis drives random sequences of opens, joins, leaves, broadcasts and disconnects
against a simple model. Each connection is a `RoomEndpoint` served on a `FakePeer`, so a
connection ends through the real paths: the client leaves, the server closes it, a
handler error closes it with 1011, it is disconnected as a slow consumer (1008), or the
hub's `async with` ends (1001). One rule runs several steps at once in one task group.

Each example runs in one event loop behind a blocking portal (hypothesis' stateful
machinery is synchronous; each rule calls into the loop). Invariants: a message reaches
exactly the connections in its room at the time of the broadcast, in order per sender;
no membership survives a disconnect; no empty room is kept; the hub's statistics count
the connections.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import pytest
from anyio.abc import TaskGroup
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from starlette.types import Message
from starlette.websockets import WebSocket

from tests._fake import WAIT, FakePeer, serving
from wsrooms import CloseCode, Hub, RoomEndpoint

ROOMS = ("r0", "r1", "r2")
MAX_CONNECTIONS = 5
CHOKES = 1  # slow-consumer disconnects per example (each takes slow_consumer_timeout)
SETTINGS = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Peer(FakePeer):
    """A client that can stop reading: once `stuck`, every data frame's send blocks."""

    stuck = False

    async def send(self, message: Message) -> None:
        if self.stuck and message["type"] == "websocket.send":
            await anyio.sleep_forever()
        await super().send(message)


class Node(RoomEndpoint):
    """Runs text commands; acks each with `ack <what>` once done (after its broadcast).

    `say R m` / `say! R m` (excluding itself) broadcast `m` to room R, `all m` to every
    connection; `join R`, `leave R`, `hello`; `close` closes the connection with 1000 and
    `boom` raises (1011).
    """

    encoding = "text"
    # Deep enough that a moving member's queue never fills in a step, so only a client
    # that stopped reading is judged (quickly) as a slow consumer.
    send_queue_size = 64
    slow_consumer_timeout = 0.05
    world: ClassVar[World]

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        self.world.conns[self.scope["path"]].conn = self

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> None:
        # Broadcast first, before any other await: per-sender order depends on it.
        command, _, arg = data.partition(" ")
        if command in ("say", "say!"):
            room, _, text = arg.partition(" ")
            await self.broadcast(room, text, exclude_self=command == "say!")
            await self.send_message(f"ack {text}")
        elif command == "all":
            await self.broadcast_all(arg)
            await self.send_message(f"ack {arg}")
        elif command == "join":
            await self.join(arg)
            await self.send_message(f"ack {data}")
        elif command == "leave":
            await self.leave(arg)
            await self.send_message(f"ack {data}")
        elif command == "hello":
            await self.send_message("ack hello")
        elif command == "close":
            await self.close(CloseCode.NORMAL_CLOSURE)
        elif command == "boom":
            raise RuntimeError("boom")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        conn = self.world.conns[self.scope["path"]]
        conn.close_code = close_code
        conn.ended.set()


@dataclass(eq=False)
class Conn:
    """One connection as the model sees it, and what its client received."""

    ident: int
    peer: Peer
    ended: anyio.Event
    conn: Node | None = None
    rooms: set[str] = field(default_factory=set)
    expected: list[str] = field(default_factory=list)  # broadcasts it must receive
    frames: list[str] = field(default_factory=list)  # data frames received, in order
    acks: list[str] = field(default_factory=list)
    close_frame: tuple[int, str] | None = None
    close_code: int | None = None  # what on_disconnect got

    def caught_up(self) -> bool:
        return len(self.frames) >= len(self.expected)

    @property
    def name(self) -> str:
        return f"n{self.ident}"

    def record(self, message: Message) -> None:
        if message["type"] == "websocket.send":
            text = message["text"]
            if text.startswith("ack "):
                self.acks.append(text[4:])
            else:
                self.frames.append(text)
        elif message["type"] == "websocket.close":
            self.close_frame = (message.get("code", 1000), message.get("reason", ""))


def check_deliveries(received: list[str], expected: list[str]) -> None:
    """Exactly the expected messages; one sender's in its order; steps in order.

    A message is `m<step>.<sender>.<seq>`: messages of one step may interleave across
    senders (steps run concurrently), never out of one sender's order.
    """
    assert sorted(received) == sorted(expected)

    def by_sender(texts: list[str]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for text in texts:
            groups.setdefault(text.split(".")[1], []).append(text)
        return groups

    assert by_sender(received) == by_sender(expected)
    steps = [int(text.split(".")[0][1:]) for text in received]
    assert steps == sorted(steps)


class World:
    """One hub, its connections and the model, all living on the portal's event loop."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.cls = type("Node", (Node,), {"hub": self.hub, "world": self})
        self.conns: dict[str, Conn] = {}  # by path, every connection ever opened
        self.live: dict[int, Conn] = {}  # by ident, the model's open connections
        self.count = 0
        self.chokes = 0
        self._changed: anyio.Event | None = None
        self._task_group: TaskGroup | None = None

    @classmethod
    @asynccontextmanager
    async def running(cls) -> AsyncIterator[World]:
        """A world whose hub runs in `async with`; leaving it closes what is open (1001)."""
        world = cls()
        async with anyio.create_task_group() as tg:
            world._task_group = tg
            async with world.hub:
                yield world

    # ------------------------------------------------------------------ plumbing

    def changed(self) -> None:
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(WAIT):
            while not predicate():
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    async def _serve(self, conn: Conn) -> None:
        """Serve one connection and record what its client receives, until it ends."""
        peer = conn.peer
        async with serving(self.cls, peer):
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    async for message in peer.from_app:
                        conn.record(message)
                        self.changed()

                tg.start_soon(read)
                await conn.ended.wait()
                tg.cancel_scope.cancel()
            with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                while True:  # after on_disconnect nothing more is sent
                    conn.record(peer.from_app.receive_nowait())
        self.changed()

    async def _ack(self, conn: Conn, command: str) -> None:
        """Send `command` and wait for its ack (a command may have been acked before)."""
        before = conn.acks.count(command)
        await conn.peer.send_text(command)
        await self.until(lambda: conn.acks.count(command) > before)

    def _expect(self, room: str | None, texts: list[str], exclude: str = "") -> None:
        for conn in self.live.values():
            if (room is None or room in conn.rooms) and conn.name != exclude:
                conn.expected.extend(texts)

    # ------------------------------------------------------------------ steps

    async def open(self) -> None:
        self.count += 1
        conn = Conn(self.count, Peer(path=f"/n{self.count}"), anyio.Event())
        self.conns[conn.peer.scope["path"]] = conn
        assert self._task_group is not None
        self._task_group.start_soon(self._serve, conn)
        await conn.peer.connect()
        await self._ack(conn, "hello")  # served: its receive loop runs
        self.live[conn.ident] = conn

    async def join(self, ident: int, room: str) -> None:
        conn = self.live[ident]
        await self._ack(conn, f"join {room}")
        conn.rooms.add(room)

    async def leave(self, ident: int, room: str) -> None:
        conn = self.live[ident]
        await self._ack(conn, f"leave {room}")
        conn.rooms.discard(room)

    async def say(self, step: int, ident: int, room: str | None, count: int, quiet: bool) -> None:
        """`count` broadcasts from one connection, sent back to back (pipelined)."""
        conn = self.live[ident]
        texts = [f"m{step}.{conn.name}.{i}" for i in range(count)]
        quiet = quiet and room is not None  # a broadcast to all includes its sender
        self._expect(room, texts, exclude=conn.name if quiet else "")
        for text in texts:
            if room is None:
                await conn.peer.send_text(f"all {text}")
            else:
                await conn.peer.send_text(f"{'say!' if quiet else 'say'} {room} {text}")
        await self.until(lambda: all(text in conn.acks for text in texts))

    async def hub_broadcast(self, step: int, room: str | None) -> None:
        texts = [f"m{step}.hub.0"]
        self._expect(room, texts)
        if room is None:
            await self.hub.broadcast_all(texts[0])
        else:
            await self.hub.broadcast(room, texts[0])

    async def disconnect(self, ident: int, how: str) -> None:
        """End a connection one real way, and check it ended that way."""
        conn = self.live[ident]
        expected: tuple[int, tuple[int, str] | None]
        if how == "client":
            await conn.peer.disconnect(4000 + ident)
            expected = 4000 + ident, None
        elif how == "close":
            await conn.peer.send_text("close")
            expected = 1000, (1000, "")
        else:
            await conn.peer.send_text("boom")
            expected = 1011, (1011, "internal error")
        with anyio.fail_after(WAIT):
            await conn.ended.wait()
        del self.live[ident]
        assert (conn.close_code, conn.close_frame) == expected
        self._gone(conn)
        check_deliveries(conn.frames, conn.expected)

    async def choke(self, step: int, ident: int) -> None:
        """Stop one client reading, then broadcast to everyone until the hub finds it a
        slow consumer: it is disconnected (1008) and every other member has it all."""
        conn = self.live[ident]
        conn.peer.stuck = True
        node = conn.conn
        assert node is not None
        others = [other for other in self.live.values() if other is not conn]
        for i in range(2 * Node.send_queue_size + 8):
            text = f"m{step}.hub.{i}"
            self._expect(None, [text])
            await self.hub.broadcast_all(text)
            if node.closing:
                break
            # The others' writers keep up, so only the stuck client's queue fills.
            await self.until(lambda: all(other.caught_up() for other in others))
        with anyio.fail_after(WAIT):
            await conn.ended.wait()
        del self.live[ident]
        assert conn.close_code == CloseCode.POLICY_VIOLATION
        assert conn.close_frame == (1008, "slow consumer")
        self._gone(conn)
        # It had read everything up to this step, then none of the flood.
        check_deliveries(conn.frames, [t for t in conn.expected if not t.startswith(f"m{step}.")])
        self.chokes += 1

    async def concurrently(self, step: int, plan: list[tuple[Any, ...]]) -> None:
        """Run several steps at once in one task group (`plan` commutes: see the rule)."""
        async with anyio.create_task_group() as tg:
            for kind, *args in plan:
                if kind == "say":
                    tg.start_soon(self.say, step, *args)
                else:
                    tg.start_soon(getattr(self, kind), *args)

    def _gone(self, conn: Conn) -> None:
        node = conn.conn
        assert node is not None
        assert self.hub.rooms_of(node) == frozenset()  # no membership survives
        assert node not in self.hub.connections
        conn.rooms.clear()

    # ------------------------------------------------------------------ checks

    async def check(self) -> None:
        """Every live client has received what the model says, and the hub agrees."""
        for conn in self.live.values():
            await self.until(conn.caught_up)
            check_deliveries(conn.frames, conn.expected)
        hub = self.hub
        nodes = {conn.conn: conn for conn in self.live.values()}
        assert hub.connections == frozenset(nodes)
        assert hub.statistics().connections == len(nodes)
        occupied = {room for conn in self.live.values() for room in conn.rooms}
        assert hub.rooms() == frozenset(occupied)  # no empty room is kept
        assert hub.statistics().rooms == len(occupied)
        ident_of = {id(node): conn.ident for node, conn in nodes.items()}
        for room in ROOMS:
            assert {ident_of[id(node)] for node in hub.members(room)} == {
                conn.ident for conn in self.live.values() if room in conn.rooms
            }
        for node, conn in nodes.items():
            assert node is not None
            assert hub.rooms_of(node) == frozenset(conn.rooms)


class HubMachine(RuleBasedStateMachine):
    """Rules pick what to do; the world does it on the event loop and checks it."""

    portal: ClassVar[BlockingPortal]  # set per event loop by the test

    def __init__(self) -> None:
        super().__init__()
        portal = self.portal
        self._stack = contextlib.ExitStack()
        self.world = self._stack.enter_context(portal.wrap_async_context_manager(World.running()))
        self.step = 0

    def call(self, func: Callable[..., Any], *args: Any) -> None:
        self.step += 1
        self.portal.call(func, *args)

    def live(self) -> list[int]:
        return sorted(self.world.live)

    def pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(self.live()))

    @initialize(count=st.integers(1, 3))
    def open_some(self, count: int) -> None:
        for _ in range(count):
            self.call(self.world.open)

    @precondition(lambda self: len(self.world.live) < MAX_CONNECTIONS)
    @rule()
    def open(self) -> None:
        self.call(self.world.open)

    @precondition(lambda self: self.world.live)
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def join(self, data: st.DataObject, room: str) -> None:
        self.call(self.world.join, self.pick(data), room)

    @precondition(lambda self: self.world.live)
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def leave(self, data: st.DataObject, room: str) -> None:
        self.call(self.world.leave, self.pick(data), room)

    @precondition(lambda self: self.world.live)
    @rule(
        data=st.data(),
        room=st.sampled_from((*ROOMS, None)),
        count=st.integers(1, 3),
        quiet=st.booleans(),
    )
    def say(self, data: st.DataObject, room: str | None, count: int, quiet: bool) -> None:
        self.call(self.world.say, self.step + 1, self.pick(data), room, count, quiet)

    @precondition(lambda self: self.world.live)
    @rule(room=st.sampled_from((*ROOMS, None)))
    def hub_broadcast(self, room: str | None) -> None:
        self.call(self.world.hub_broadcast, self.step + 1, room)

    @precondition(lambda self: self.world.live)
    @rule(data=st.data(), how=st.sampled_from(("client", "close", "boom")))
    def disconnect(self, data: st.DataObject, how: str) -> None:
        self.call(self.world.disconnect, self.pick(data), how)

    @precondition(lambda self: self.world.live and self.world.chokes < CHOKES)
    @rule(data=st.data())
    def choke(self, data: st.DataObject) -> None:
        self.call(self.world.choke, self.step + 1, self.pick(data))

    @precondition(lambda self: len(self.world.live) >= 2)
    @rule(data=st.data())
    def concurrently(self, data: st.DataObject) -> None:
        """Up to four steps of distinct connections at once, chosen so that their outcome
        does not depend on their order: no join, leave or disconnect touches a room that a
        concurrent broadcast targets, and nothing disconnects beside a broadcast to all."""
        step = self.step + 1
        plan: list[tuple[Any, ...]] = []
        used: set[int] = set()
        targeted: set[str | None] = set()  # rooms broadcast to (None: every connection)
        touched: set[str] = set()  # rooms whose membership changes
        for _ in range(data.draw(st.integers(2, 4))):
            ident = self.pick(data)
            if ident in used:
                continue
            kind = data.draw(st.sampled_from(("say", "say", "join", "leave", "disconnect")))
            rooms = self.world.live[ident].rooms
            if kind == "say":
                room = data.draw(st.sampled_from((*ROOMS, None)))
                if room in touched or (room is None and any(p[0] == "disconnect" for p in plan)):
                    continue
                count, quiet = data.draw(st.integers(1, 3)), data.draw(st.booleans())
                plan.append(("say", ident, room, count, quiet))
                targeted.add(room)
            elif kind in ("join", "leave"):
                room = data.draw(st.sampled_from(ROOMS))
                if room in targeted:
                    continue
                plan.append((kind, ident, room))
                touched.add(room)
            else:
                if None in targeted or rooms & targeted:
                    continue
                how = data.draw(st.sampled_from(("client", "close", "boom")))
                plan.append(("disconnect", ident, how))
                touched |= rooms
            used.add(ident)
        self.call(self.world.concurrently, step, plan)

    @invariant()
    def the_hub_matches_the_model(self) -> None:
        self.portal.call(self.world.check)

    def teardown(self) -> None:
        world = self.world
        still_open = list(world.live.values())
        self._stack.close()  # the hub's `async with` ends: 1001 for what is open
        for conn in still_open:
            assert conn.close_code == CloseCode.GOING_AWAY
            assert conn.close_frame == (1001, "server shutting down")
            check_deliveries(conn.frames, conn.expected)
        assert world.hub.connections == frozenset()
        assert world.hub.rooms() == frozenset()
        assert world.hub.statistics().connections == 0


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"debug": True}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def portal(request: pytest.FixtureRequest) -> Iterator[BlockingPortal]:
    backend, options = request.param
    with start_blocking_portal(backend, options) as portal:
        yield portal


def test_hub_model(portal: BlockingPortal) -> None:
    """Random steps on real connections keep the hub and its clients in line with the model."""
    machine = type("HubMachine", (HubMachine,), {"portal": portal})
    run_state_machine_as_test(machine, settings=SETTINGS)
