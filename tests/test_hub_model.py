"""A stateful property test of the Hub against a simple model, on asyncio and on trio.

Random join / leave / broadcast / disconnect sequences: no message ever reaches a
connection outside its room, no membership survives a disconnect, no empty room is kept.
Every step runs on a fresh event loop, which also proves the hub's lock binds to none.
"""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from starlette.types import Message

from wsrooms import ConnectionStatistics, Hub

CONNS = [f"c{i}" for i in range(5)]
ROOMS = ["r0", "r1", "r2"]


class FakeConnection:
    """A hub member that records what is delivered to it."""

    outbox = None
    closing = False
    websocket = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[str] = []

    def deliver(self, event: Message) -> int:
        self.got.append(event["text"])
        return 0

    def abort(self, code: int, reason: str) -> None:
        pass  # pragma: no cover - the model never shuts the hub down

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(tasks=0, queued=0, dropped=0, sent=0, messages=0)

    def received(self) -> list[Any]:
        return self.got


class HubMachine(RuleBasedStateMachine):
    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.hub = Hub()
        self.conns = {name: FakeConnection(name) for name in CONNS}
        self.model: dict[str, set[str]] = {}  # connection -> rooms
        self.expected: dict[str, list[str]] = {name: [] for name in CONNS}
        self.counter = 0

    def run(self, func: Any, *args: Any) -> Any:
        return anyio.run(func, *args, backend=self.backend)

    @rule(conn=st.sampled_from(CONNS), room=st.sampled_from(ROOMS))
    def join(self, conn: str, room: str) -> None:
        newly = self.run(self.hub.join, self.conns[conn], room)
        assert newly == (room not in self.model.get(conn, set()))
        self.model.setdefault(conn, set()).add(room)

    @rule(conn=st.sampled_from(CONNS), room=st.sampled_from(ROOMS))
    def leave(self, conn: str, room: str) -> None:
        was = self.run(self.hub.leave, self.conns[conn], room)
        assert was == (room in self.model.get(conn, set()))
        self.model.get(conn, set()).discard(room)

    @rule(conn=st.sampled_from(CONNS))
    def disconnect(self, conn: str) -> None:
        left = self.run(self.hub.remove, self.conns[conn])
        assert left == frozenset(self.model.pop(conn, set()))

    @rule(room=st.sampled_from(ROOMS), exclude=st.sets(st.sampled_from(CONNS), max_size=2))
    def broadcast(self, room: str, exclude: set[str]) -> None:
        self.counter += 1
        message = f"m{self.counter}"
        excluded = [self.conns[name] for name in exclude]
        self.run(self.hub.broadcast, room, message, excluded)
        for name, rooms in self.model.items():
            if room in rooms and name not in exclude:
                self.expected[name].append(message)

    @invariant()
    def deliveries_match_the_model(self) -> None:
        for name, conn in self.conns.items():
            assert conn.received() == self.expected[name]

    @invariant()
    def membership_matches_the_model(self) -> None:
        occupied = {room for rooms in self.model.values() for room in rooms}
        assert self.hub.rooms() == frozenset(occupied)  # no empty room is kept
        for room in ROOMS:
            members = {c.name for c in self.hub.members(room)}  # type: ignore[attr-defined]
            assert members == {n for n, rooms in self.model.items() if room in rooms}
        for name, conn in self.conns.items():
            assert self.hub.rooms_of(conn) == frozenset(self.model.get(name, set()))


class TrioHubMachine(HubMachine):
    backend = "trio"


TestHubModelAsyncio = HubMachine.TestCase
TestHubModelTrio = TrioHubMachine.TestCase
TestHubModelAsyncio.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestHubModelTrio.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
