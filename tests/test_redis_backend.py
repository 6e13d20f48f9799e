"""`RedisBackend` against a real redis-server: two backends stand for two processes.

Each test starts its own redis-server on a free loopback port (tests/_redis.py) and stops
it by its PID. Outages are real: the server is frozen with SIGSTOP, or killed with SIGKILL
and started again on the same port.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from starlette.types import Message

from tests._redis import (
    RedisServer,
    channels,
    numsub,
    publish_raw,
    running_redis,
    wait_until,
    wsrooms_clients,
)
from wsrooms.backends.redis import HEADER_SIZE, MAGIC, RedisBackend

pytestmark = pytest.mark.anyio

logger = logging.getLogger("tests.redis")

#: Short bounds so that outages are noticed quickly in the tests.
FAST: dict[str, Any] = {
    "connect_timeout": 1.0,
    "response_timeout": 1.0,
    "publish_timeout": 1.0,
    "subscribe_timeout": 1.0,
    "health_check_interval": 1.0,
}


FROZEN_SECONDS = 2.0


def text(value: str) -> Message:
    return {"type": "websocket.send", "text": value}


class Peer:
    """A RedisBackend with the hub's two callbacks recorded, as one process would have."""

    def __init__(self, url: str, **options: Any) -> None:
        self.backend = RedisBackend(url, **options)
        self.received: list[tuple[str | None, Message]] = []
        self.states: list[bool] = []
        self._changed = anyio.Event()

    def deliver(self, room: str | None, event: Message) -> None:
        self.received.append((room, event))
        self._poke()

    def state_changed(self, connected: bool) -> None:
        self.states.append(connected)
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        """Wait (for events, no polling) until `condition` holds after a callback."""
        with anyio.fail_after(within):
            while not condition():
                await self._changed.wait()

    def texts(self, room: str | None) -> list[str]:
        return [event["text"] for r, event in self.received if r == room and "text" in event]


@asynccontextmanager
async def started(*peers: Peer) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for peer in peers:
            with anyio.fail_after(1):  # start never waits for Redis
                await peer.backend.start(peer.deliver, tg, peer.state_changed)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True), anyio.fail_after(5):
                for peer in peers:
                    await peer.backend.stop()
        tg.cancel_scope.cancel()


async def connected(*peers: Peer, within: float = 10.0) -> None:
    """Wait until every peer's link is up (a first link reports nothing: poll)."""
    await wait_until(lambda: all(peer.backend.connected for peer in peers), within=within)


async def probe(sender: Peer, receiver: Peer, room: str, *, within: float = 15.0) -> float:
    """Publish probes to `room` until `receiver` has one; returns the seconds it took."""
    started_at = time.monotonic()
    seen = len(receiver.received)
    attempt = 0
    with anyio.fail_after(within):
        while True:
            attempt += 1
            try:
                await sender.backend.publish(room, text(f"probe {attempt}"))
            except Exception:
                pass  # Redis not back yet for the sender: try again
            # Wait a little for this probe (an event), then send the next one.
            with anyio.move_on_after(0.05):
                await receiver.until(lambda: len(receiver.received) > seen, within=1.0)
            if len(receiver.received) > seen:
                return time.monotonic() - started_at


# --------------------------------------------------------------------------- delivery


async def test_a_publish_reaches_the_other_process_in_its_rooms_only() -> None:
    """A message reaches the other process's subscribers of its room (text, bytes and
    broadcast-to-all, in order), no one else's room, and never comes back to its sender."""
    async with running_redis() as redis:
        a, b, c = (Peer(redis.url, **FAST) for _ in range(3))
        async with started(a, b, c):
            await connected(a, b, c)
            await a.backend.subscribe("red")  # the sender has local members too
            await b.backend.subscribe("red")
            await c.backend.subscribe("blue")
            batch: list[tuple[str | None, Message]] = [("red", text(f"m{i}")) for i in range(50)]
            await a.backend.publish_many(batch)
            await a.backend.publish("red", {"type": "websocket.send", "bytes": b"\x00\xff"})
            await a.backend.publish(None, text("everyone"))
            await b.until(lambda: len(b.received) == 52)
            await c.until(lambda: len(c.received) == 1)
            assert b.texts("red") == [f"m{i}" for i in range(50)]
            assert b.received[50] == ("red", {"type": "websocket.send", "bytes": b"\x00\xff"})
            assert b.received[51] == (None, text("everyone"))
            assert c.received == [(None, text("everyone"))]
            # Nothing more is on its way: a last message to everyone arrives alone.
            await a.backend.publish(None, text("last"))
            await c.until(lambda: len(c.received) == 2)
            await b.until(lambda: len(b.received) == 53)
            assert a.received == []


async def test_hubs_with_other_names_do_not_meet() -> None:
    """The hub name prefixes every channel: two names on one Redis share nothing."""
    async with running_redis() as redis:
        a = Peer(redis.url, name="one", **FAST)
        b = Peer(redis.url, name="two", **FAST)
        b1 = Peer(redis.url, name="one", **FAST)
        async with started(a, b, b1):
            await connected(a, b, b1)
            await b.backend.subscribe("red")
            await b1.backend.subscribe("red")
            await a.backend.publish("red", text("hi"))
            await a.backend.publish(None, text("all"))
            await b1.until(lambda: len(b1.received) == 2)
            assert b.received == []
            assert await channels(redis.port) == {
                "one:all",
                "two:all",
                "one:room:red",
                "two:room:red",
            }


async def test_subscriptions_follow_subscribe_and_unsubscribe() -> None:
    """While the link is up, `subscribe` / `unsubscribe` return once Redis has the change
    (PUBSUB CHANNELS, PUBSUB NUMSUB); both are idempotent."""
    async with running_redis() as redis:
        a, b = Peer(redis.url, **FAST), Peer(redis.url, **FAST)
        async with started(a, b):
            await connected(a, b)
            assert await channels(redis.port) == {"wsrooms:all"}
            await a.backend.subscribe("x")
            await a.backend.subscribe("x")
            await b.backend.subscribe("x")
            await b.backend.subscribe("y")
            assert await channels(redis.port) == {"wsrooms:all", "wsrooms:room:x", "wsrooms:room:y"}
            assert await numsub(redis.port, "wsrooms:room:x", "wsrooms:room:y") == {
                "wsrooms:room:x": 2,
                "wsrooms:room:y": 1,
            }
            await a.backend.unsubscribe("x")
            await a.backend.unsubscribe("x")
            assert await numsub(redis.port, "wsrooms:room:x") == {"wsrooms:room:x": 1}
            await b.backend.unsubscribe("x")
            await b.backend.unsubscribe("y")
            await b.backend.unsubscribe("never")
            assert await channels(redis.port) == {"wsrooms:all"}
            assert a.backend.statistics().channels == a.backend.statistics().wanted == 1
            assert a.states == b.states == []  # no outage, nothing to report


async def test_a_malformed_envelope_is_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Anything on a channel that is not one of our envelopes is dropped and counted in
    `lost` (logged once at INFO, then at DEBUG); the reader goes on."""
    async with running_redis() as redis:
        a, b = Peer(redis.url, **FAST), Peer(redis.url, **FAST)
        async with started(a, b):
            await connected(a, b)
            await b.backend.subscribe("r")
            origin = b"\x01" * 16
            bad = [
                b"hello",  # no envelope at all
                b"wsr1t",  # too short
                b"xxxxt" + origin + b"hi",  # wrong magic
                MAGIC + b"t" + origin + b"\xff\xfe",  # text that is not UTF-8
                MAGIC + b"?" + origin + b"hi",  # unknown kind
            ]
            with caplog.at_level(logging.DEBUG, logger="wsrooms"):
                for data in bad:
                    assert await publish_raw(redis.port, "wsrooms:room:r", data) == 1
                await a.backend.publish("r", text("fine"))
                await b.until(lambda: len(b.received) == 1)
            assert b.received == [("r", text("fine"))]
            assert b.backend.lost == b.backend.statistics().malformed == len(bad)
            levels = [r.levelno for r in caplog.records if "malformed" in r.getMessage()]
            assert levels == [logging.INFO] + [logging.DEBUG] * (len(bad) - 1)
            assert b.backend.connected


# --------------------------------------------------------------------------- outages


async def test_a_frozen_redis_never_holds_a_caller() -> None:
    """Redis frozen (SIGSTOP): subscribe and unsubscribe return within their bound,
    publish fails within its own; after SIGCONT delivery resumes, also in a room
    subscribed during the freeze, and no connection is left behind."""
    async with running_redis() as redis:
        a, b = Peer(redis.url, **FAST), Peer(redis.url, **FAST)
        async with started(a, b):
            await connected(a, b)
            await b.backend.subscribe("old")
            await probe(a, b, "old")  # also opens the publisher's connection
            clients_before = len(await wsrooms_clients(redis.port))
            redis.freeze()
            frozen_at = time.monotonic()
            try:
                with anyio.fail_after(1.5):
                    await b.backend.subscribe("new")
                with anyio.fail_after(1.5):
                    await b.backend.unsubscribe("old")
                with anyio.fail_after(1.5), pytest.raises(TimeoutError):
                    await a.backend.publish("new", text("lost"))
                # The freeze itself lasts its two seconds (this sleep is the scenario).
                await anyio.sleep(max(0.0, FROZEN_SECONDS - (time.monotonic() - frozen_at)))
            finally:
                redis.thaw()
            took = await probe(a, b, "new")
            logger.info("frozen %.1fs: delivery back %.2fs after SIGCONT", FROZEN_SECONDS, took)
            await connected(a, b)
            # The freeze may have cost a reconnection, never a stray connection.
            await _settled_clients(redis, clients_before)


async def _settled_clients(redis: RedisServer, expected: int) -> None:
    """Poll CLIENT LIST (no event to wait for) until it shows `expected` connections."""
    with anyio.fail_after(10):
        while len(await wsrooms_clients(redis.port)) != expected:  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_redis_killed_and_restarted_three_times(
    record_property: Callable[[str, object], None],
) -> None:
    """Redis killed (SIGKILL) and started again on its port, three times: each time both
    backends report the outage and the recovery once, delivery resumes without
    restarting anything, a room subscribed during the outage works, and CLIENT LIST
    shows as many wsrooms connections as before."""
    async with running_redis() as redis:
        # Default reconnection delays: the recovery times measured are the real ones.
        options = {k: v for k, v in FAST.items() if k != "health_check_interval"}
        a, b = Peer(redis.url, **options), Peer(redis.url, **options)
        async with started(a, b):
            await connected(a, b)
            await b.backend.subscribe("steady")
            await probe(a, b, "steady")
            baseline = len(await wsrooms_clients(redis.port))
            assert baseline == 3  # two subscriber links and the publisher's connection
            recoveries: list[float] = []
            # Down long enough for the backoff to reach its cap in the last cycle.
            for cycle, down_for in enumerate((0.2, 1.0, 3.0), start=1):
                await redis.kill()
                killed_at = time.monotonic()
                await a.until(lambda cycle=cycle: a.states.count(False) == cycle)  # type: ignore[misc]
                await b.until(lambda cycle=cycle: b.states.count(False) == cycle)  # type: ignore[misc]
                assert not a.backend.connected
                assert not b.backend.connected
                with anyio.fail_after(0.5):  # a declaration only, while Redis is down
                    await b.backend.subscribe(f"late-{cycle}")
                with pytest.raises(Exception):  # noqa: B017 - coredis's own error
                    await a.backend.publish("steady", text("nobody hears this"))
                # The outage itself lasts `down_for` (this sleep is the scenario).
                await anyio.sleep(max(0.0, down_for - (time.monotonic() - killed_at)))
                await redis.start()
                back_at = time.monotonic()
                took = await probe(a, b, f"late-{cycle}")
                recoveries.append(time.monotonic() - back_at)
                assert took <= recoveries[-1]
                await connected(a, b)
                assert a.states == b.states == [False, True] * cycle
                await probe(a, b, "steady")
                await _settled_clients(redis, baseline)
            record_property("recovery_seconds", recoveries)
            logger.info(
                "Redis down 0.2/1/3 s; back -> cross-process delivery: %s s",
                ", ".join(f"{r:.3f}" for r in recoveries),
            )
            # The cap of the backoff (2 s) plus one connection set-up, with room to spare.
            assert max(recoveries) < 4.0


async def test_a_backend_started_while_redis_is_down() -> None:
    """A backend whose Redis is down starts at once, records subscriptions, reports the
    outage, and subscribes when Redis comes up."""
    redis = RedisServer()  # not started: nothing listens on its port
    try:
        a, b = Peer(redis.url, **FAST), Peer(redis.url, **FAST)
        async with started(a, b):
            with anyio.fail_after(0.5):
                await b.backend.subscribe("early")
            await a.until(lambda: a.states == [False])
            await b.until(lambda: b.states == [False])
            assert not b.backend.connected
            await redis.start()
            await connected(a, b)
            assert a.states == b.states == [False, True]
            assert await numsub(redis.port, "wsrooms:room:early") == {"wsrooms:room:early": 1}
            await a.backend.publish("early", text("hello"))
            await b.until(lambda: b.texts("early") == ["hello"])
    finally:
        await redis.stop()


async def test_a_flood_to_a_slow_subscriber_keeps_its_backlog_bounded() -> None:
    """A subscriber that cannot keep up holds at most about `max_backlog` messages: past
    that it drops them, counts them in `lost`, and reconnects (reported as an outage:
    more was lost on the way than anyone can count)."""
    max_backlog = 200
    async with running_redis() as redis:
        a = Peer(redis.url, **FAST)
        b = Peer(redis.url, max_backlog=max_backlog, **FAST)

        def slow_deliver(room: str | None, event: Message) -> None:
            sum(range(2000))  # a busy hub: some work per message
            Peer.deliver(b, room, event)

        b.deliver = slow_deliver  # type: ignore[method-assign]
        async with started(a, b):
            await connected(a, b)
            await b.backend.subscribe("flood")
            payload = "x" * 200
            sent = 0
            with anyio.fail_after(20):
                for _ in range(40):
                    await a.backend.publish_many([("flood", text(payload))] * 500)
                    sent += 500
            stats = b.backend.statistics()
            await probe(a, b, "flood")  # still subscribed, and delivering
            stats = b.backend.statistics()
            delivered = len(b.texts("flood"))
            logger.info("flood: %d sent, %d delivered, %s", sent, delivered, stats)
            assert stats.lag_resets >= 1
            assert stats.lost == stats.lagged > 0
            assert delivered + stats.lost <= sent + 1  # + the probe
            # Checked at every message taken; coredis reads up to 64 KiB per step, and may
            # take two steps between two of the reader's.
            assert stats.backlog_peak <= max_backlog + 2 * 65536 // len(payload)
            assert b.states == [False, True] * stats.lag_resets
            assert a.states == []


# --------------------------------------------------------------------------- contract


async def test_publish_needs_a_running_backend() -> None:
    """Publishing before `start` (or after `stop`) is a clear error, not a hang."""
    backend = RedisBackend("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match="not running"):
        await backend.publish("r", text("x"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "a:b"}, "hub name"),
        ({"name": ""}, "hub name"),
        ({"name": "x" * 65}, "hub name"),
        ({"publish_timeout": 0}, "publish_timeout"),
        ({"reconnect_delay": float("nan")}, "reconnect_delay"),
        ({"reconnect_delay": 3.0}, "max_reconnect_delay"),
        ({"max_backlog": 0}, "max_backlog"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RedisBackend("redis://127.0.0.1:6379/0", **kwargs)


def test_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisBackend("http://127.0.0.1:6379/0")


def test_the_envelope_is_a_small_header() -> None:
    """Magic and version, the frame type, 16 bytes of origin, then the payload as is."""
    backend = RedisBackend("redis://127.0.0.1:6379/0")
    envelope = backend._envelope(text("hé"))
    assert envelope[:4] == MAGIC
    assert envelope[4:5] == b"t"
    assert envelope[HEADER_SIZE:] == "hé".encode()
    envelope = backend._envelope({"type": "websocket.send", "bytes": b"\x00"})
    assert envelope[4:5] == b"b"
    assert envelope[HEADER_SIZE:] == b"\x00"
    assert len(envelope) == HEADER_SIZE + 1


def test_import_wsrooms_does_not_import_coredis() -> None:
    code = "import sys, wsrooms, wsrooms.backends; assert 'coredis' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
