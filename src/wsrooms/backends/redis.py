"""The Redis backend: rooms that span every process on one Redis, on asyncio and trio.

Built on coredis 6 (anyio-based). One plain pub/sub channel per room and one for
broadcasts to everyone, all prefixed by the hub's name; payloads travel in a small binary
envelope that says who sent them, so a process never delivers its own message twice.

coredis reconnects its pub/sub by itself, but it forgets subscriptions made while Redis is
down, hangs in its start-up while Redis is unreachable and buffers without limit. So this
backend owns the link instead: one subscriber session at a time, started in the
background, that subscribes to the channels the process wants, reads with `get_message`,
and on any failure is thrown away and replaced after a capped backoff. What the process
wants is kept here, never in coredis, and reconciled against every new session. See
docs/topics/cross-process.md.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.abc
import coredis
from coredis.patterns.pubsub import PubSub
from coredis.retry import NoRetryPolicy
from starlette.types import Message

from .._limits import safe
from ._base import Backend, Deliver, StateChanged

__all__ = ["RedisBackend", "RedisStatistics"]

logger = logging.getLogger("wsrooms")

#: Hub names usable in channel and client names: no ':' (so that no two hubs' channel
#: names can meet), no space (CLIENT SETNAME refuses them).
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

# The envelope: MAGIC, one kind byte, the 16-byte origin, then the payload as is.
MAGIC: Final = b"wsr1"
TEXT: Final = b"t"
BYTES: Final = b"b"
HEADER_SIZE: Final = len(MAGIC) + 1 + 16
_TEXT_KIND = TEXT[0]
_BYTES_KIND = BYTES[0]

# Channels per SUBSCRIBE command when many are (re)subscribed at once.
_SUBSCRIBE_BATCH = 500


@dataclass(frozen=True, slots=True)
class RedisStatistics:
    """A snapshot of a `RedisBackend` (see `RedisBackend.statistics`).

    Attributes:
        connected: Whether the subscriber link is up (and subscribed) now.
        channels: Channels subscribed on the live link.
        wanted: Channels this process wants: its rooms with local members, plus the
            broadcast-to-all channel.
        sessions: Subscriber links established so far (the first one included).
        lost: Messages from other processes lost on the way in (`lagged` + `malformed`).
        malformed: Messages dropped because their envelope was not one of ours.
        lagged: Messages dropped because the process fell `max_backlog` behind.
        lag_resets: Times the subscriber link was reset for falling behind.
        backlog_peak: The largest backlog seen (messages read from Redis, not yet
            delivered to the hub).
    """

    connected: bool
    channels: int
    wanted: int
    sessions: int
    lost: int
    malformed: int
    lagged: int
    lag_resets: int
    backlog_peak: int


class _Lagging(Exception):
    """The reader fell too far behind what coredis has read from the socket."""

    def __init__(self, backlog: int) -> None:
        super().__init__(f"{backlog} messages behind")
        self.backlog = backlog


class RedisBackend(Backend):
    """Carries a hub's broadcasts between processes through Redis pub/sub.

    `Hub("redis://…", name=…)` builds one; build it yourself to change its options and
    pass it as `Hub(RedisBackend(url, name=…, …))`. Needs the `redis` extra
    (`pip install 'wsrooms[redis]'`, which installs coredis 6) and Redis 6 or newer.

    Channels are `{name}:room:{room}` for a room and `{name}:all` for broadcasts to
    every connection. A process subscribes to a room's channel while the room has local
    members, and always to `{name}:all`. Redis pub/sub ignores the database number in
    the URL: only the name keeps hubs sharing one Redis apart.

    Delivery across processes is at most once: what is published while a process's link
    is down, or while it is reconnecting, does not reach that process's members.

    Args:
        url: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS) or
            `unix://[[user]:password@]/path/to/redis.sock[?db=0]`.
        name: The hub's name, prefix of every channel: letters, digits, `.`, `_` and
            `-`, at most 64 (default `"wsrooms"`).
        connect_timeout: Bound in seconds on opening a connection (TCP and handshake).
        response_timeout: Bound in seconds on Redis answering a command on a live
            connection (a subscription's confirmation, a health-check `PING`); a
            subscriber link that misses it is replaced.
        publish_timeout: Bound in seconds on one `publish` / `publish_many` call, from
            taking a connection to Redis's reply.
        subscribe_timeout: How long `subscribe` and `unsubscribe` wait, while the link is
            up, for Redis to confirm the change before returning anyway (the change is
            still carried out). While the link is down they return at once.
        health_check_interval: A subscriber link silent this long is sent a `PING`, so a
            Redis that hangs is noticed within about this plus `response_timeout`.
        reconnect_delay: First delay in seconds before reconnecting after a failure;
            each further failure doubles it.
        max_reconnect_delay: The cap of that delay (default 2 s): once Redis is back,
            the link is back within this (plus one connection set-up). The delay resets
            once a link is up.
        max_backlog: Messages the process may hold between reading them from Redis and
            delivering them to the hub. A reader that falls further behind resets its
            link: what was held is dropped and counted in `lost`, like Redis itself
            drops a subscriber past its `client-output-buffer-limit`.

    Raises:
        ValueError: A bad name or option, or a URL coredis cannot read.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "wsrooms",
        # Timeouts
        connect_timeout: float = 2.0,
        response_timeout: float = 2.0,
        publish_timeout: float = 2.0,
        subscribe_timeout: float = 1.0,
        health_check_interval: float = 5.0,
        # Reconnection
        reconnect_delay: float = 0.05,
        max_reconnect_delay: float = 2.0,
        # Limits
        max_backlog: int = 10_000,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"a Redis hub name is 1 to 64 letters, digits, '.', '_' or '-', "
                f"not {safe(name, 80)}"
            )
        for option, value in (
            ("connect_timeout", connect_timeout),
            ("response_timeout", response_timeout),
            ("publish_timeout", publish_timeout),
            ("subscribe_timeout", subscribe_timeout),
            ("health_check_interval", health_check_interval),
            ("reconnect_delay", reconnect_delay),
            ("max_reconnect_delay", max_reconnect_delay),
        ):
            if not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise ValueError(f"{option} must be a finite number of seconds > 0, not {value!r}")
        if max_reconnect_delay < reconnect_delay:
            raise ValueError("max_reconnect_delay must not be below reconnect_delay")
        if not isinstance(max_backlog, int) or max_backlog < 1:
            raise ValueError(f"max_backlog must be an int >= 1, not {max_backlog!r}")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://: {url!r}")
        self.name = name
        self._connect_timeout = float(connect_timeout)
        self._response_timeout = float(response_timeout)
        self._publish_timeout = float(publish_timeout)
        self._subscribe_timeout = float(subscribe_timeout)
        self._health_check_interval = float(health_check_interval)
        self._reconnect_delay = float(reconnect_delay)
        self._max_reconnect_delay = float(max_reconnect_delay)
        self._max_backlog = max_backlog
        # No retries inside coredis: a retried PUBLISH can be delivered twice, and the
        # subscriber's reconnection is ours.
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            retry_policy=NoRetryPolicy(),
            connect_timeout=self._connect_timeout,
            stream_timeout=self._response_timeout,
            client_name=f"wsrooms:{name}",
        )
        self._url = url
        self._origin = uuid.uuid4().bytes
        self._text_header = MAGIC + TEXT + self._origin
        self._bytes_header = MAGIC + BYTES + self._origin
        self._all_channel = f"{name}:all"
        self._room_prefix = f"{name}:room:"

        # What the process wants (channel -> room; None is the broadcast-to-all channel)
        # and what the live link has.
        self._rooms: dict[bytes, str | None] = {self._all_channel.encode(): None}
        self._wanted: set[str] = {self._all_channel}
        self._active: set[str] = set()

        self._deliver: Deliver | None = None
        self._state_changed: StateChanged | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._running = False
        self._wake: anyio.Event | None = None  # wakes the reconciler
        self._round: anyio.Event | None = None  # set after each reconcile round

        self._connected = False
        self._reported_down = False
        self._sessions = 0
        self._malformed = 0
        self._lagged = 0
        self._lag_resets = 0
        self._backlog_peak = 0

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"<RedisBackend {self.name!r} {state} channels={len(self._active)}>"

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """Whether the subscriber link is up and subscribed now."""
        return self._connected

    @property
    def lost(self) -> int:
        """Messages from other processes lost on the way in (lagging or malformed)."""
        return self._lagged + self._malformed

    def statistics(self) -> RedisStatistics:
        """A frozen snapshot of the link and its counters."""
        return RedisStatistics(
            connected=self._connected,
            channels=len(self._active),
            wanted=len(self._wanted),
            sessions=self._sessions,
            lost=self.lost,
            malformed=self._malformed,
            lagged=self._lagged,
            lag_resets=self._lag_resets,
            backlog_peak=self._backlog_peak,
        )

    def _link_up(self) -> None:
        self._sessions += 1
        self._connected = True
        if self._reported_down:
            self._reported_down = False
            assert self._state_changed is not None
            self._state_changed(True)

    def _link_down(self) -> None:
        self._connected = False
        if not self._reported_down:
            self._reported_down = True
            assert self._state_changed is not None
            self._state_changed(False)

    def _announce_round(self) -> None:
        """Wake whoever waits for the reconciler to have caught up."""
        done, self._round = self._round, anyio.Event()
        if done is not None:
            done.set()

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self, deliver: Deliver, task_group: anyio.abc.TaskGroup, state_changed: StateChanged
    ) -> None:
        """Start the subscriber in `task_group` and return at once, even if Redis is down.

        `state_changed(False)` is called when a link fails or cannot be made (also at
        start-up), `state_changed(True)` when a link is up again after that.
        """
        if self._stopped is not None:
            raise RuntimeError("a RedisBackend is started once")
        self._deliver = deliver
        self._state_changed = state_changed
        self._stopped = anyio.Event()
        self._wake = anyio.Event()
        self._round = anyio.Event()
        await task_group.start(self._run)

    async def stop(self) -> None:
        """Close the links (subscriptions end with them) and wait for that."""
        if self._scope is not None:
            self._scope.cancel()
        if self._stopped is not None:
            await self._stopped.wait()

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        assert self._stopped is not None
        try:
            with anyio.CancelScope() as self._scope:
                # Entering the client opens no connection: nothing here waits for Redis.
                async with self._client:
                    self._running = True
                    task_status.started()
                    await self._supervise()
        finally:
            self._running = False
            self._connected = False
            self._active.clear()
            self._stopped.set()

    async def _supervise(self) -> None:
        """Keep one subscriber session alive: on failure, back off (capped) and retry.

        Every end of a session is reported as the link going down, a reset for lagging
        too: messages were lost on the way that no one could count.
        """
        delay = self._reconnect_delay
        while True:
            was_up = self._sessions
            failure = await self._session()
            self._link_down()
            if failure is None:  # reset for lagging: reconnect at once
                continue
            if self._sessions != was_up:
                delay = self._reconnect_delay  # the link was up: start the backoff afresh
            logger.debug(
                "RedisBackend %r: subscriber link failed (%s); retrying in about %.2fs",
                self.name,
                failure,
                delay,
            )
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max_reconnect_delay)

    async def _session(self) -> str | None:
        """One subscriber link from connection to failure.

        Returns what ended it, or `None` when it was reset for lagging.
        """
        pubsub: PubSub[bytes] = PubSub(
            self._client.connection_pool,
            ignore_subscribe_messages=True,
            retry_policy=NoRetryPolicy(),
            subscription_timeout=self._response_timeout,
            unsubscription_timeout=self._response_timeout,
            max_idle_seconds=self._health_check_interval,
        )
        lagging: _Lagging | None = None
        failure = "unknown"
        try:
            async with pubsub:
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._read, pubsub)
                        await self._reconcile(pubsub)
                finally:
                    # A subscriber connection never goes back to the pool.
                    pubsub.connection.invalidate()
        except* _Lagging as group:
            lagging = next(exc for exc in _leaves(group) if isinstance(exc, _Lagging))
        except* Exception as group:
            failure = "; ".join(_describe(exc) for exc in _leaves(group))
        finally:
            self._active.clear()
            self._announce_round()
        if lagging is None:
            return failure
        self._lag_resets += 1
        self._lagged += lagging.backlog
        logger.info(
            "RedisBackend %r: fell %d messages behind Redis; dropped them and reconnects",
            self.name,
            lagging.backlog,
        )
        return None

    async def _reconcile(self, pubsub: PubSub[bytes]) -> None:
        """Bring the link's subscriptions in line with what the process wants, for ever."""
        first = True
        while True:
            # A new wake event before reading the wishes, so none is missed.
            self._wake = wake = anyio.Event()
            wanted = set(self._wanted)
            add = sorted(wanted - self._active)
            drop = sorted(self._active - wanted)
            for start in range(0, len(add), _SUBSCRIBE_BATCH):
                batch = add[start : start + _SUBSCRIBE_BATCH]
                await pubsub.subscribe(*batch)  # TimeoutError ends the session
                self._active.update(batch)
            if drop:
                # Unconfirmed is fine: the reader drops what no room wants.
                await pubsub.unsubscribe(*drop)
                self._active.difference_update(drop)
            if first:
                first = False
                self._link_up()
            self._announce_round()
            await wake.wait()

    async def _read(self, pubsub: PubSub[bytes]) -> None:
        """Take messages from coredis one at a time and hand them to the hub."""
        rooms = self._rooms
        while True:
            message = await pubsub.get_message()
            if message is None or message["type"] != "message":
                continue
            backlog = _backlog(pubsub)
            if backlog > self._backlog_peak:
                self._backlog_peak = backlog
            if backlog > self._max_backlog:
                raise _Lagging(backlog)
            channel = message["channel"]
            if isinstance(channel, str):
                channel = channel.encode()
            try:
                room = rooms[channel]
            except KeyError:
                continue  # a room this process has just left
            self._receive(room, message["data"])

    def _receive(self, room: str | None, data: object) -> None:
        if not isinstance(data, bytes) or data[:4] != MAGIC or len(data) < HEADER_SIZE:
            self._drop_malformed(room, "not a wsrooms envelope")
            return
        if data[5:HEADER_SIZE] == self._origin:
            return  # ours: the hub delivered it locally already
        kind = data[4]
        event: Message
        if kind == _TEXT_KIND:
            try:
                event = {"type": "websocket.send", "text": data[HEADER_SIZE:].decode()}
            except UnicodeDecodeError:
                self._drop_malformed(room, "text that is not UTF-8")
                return
        elif kind == _BYTES_KIND:
            event = {"type": "websocket.send", "bytes": data[HEADER_SIZE:]}
        else:
            self._drop_malformed(room, f"unknown kind {kind!r}")
            return
        assert self._deliver is not None
        try:
            self._deliver(room, event)
        except Exception:
            logger.exception("RedisBackend %r: the hub failed to deliver a message", self.name)

    def _drop_malformed(self, room: str | None, why: str) -> None:
        self._malformed += 1
        level = logging.INFO if self._malformed == 1 else logging.DEBUG
        logger.log(
            level,
            "RedisBackend %r: dropped a malformed message on room %s (%s)%s",
            self.name,
            safe(room),
            why,
            "; further ones are logged at DEBUG" if level == logging.INFO else "",
        )

    # ------------------------------------------------------------------ subscriptions

    def _channel(self, room: str | None) -> str:
        return self._all_channel if room is None else self._room_prefix + room

    async def subscribe(self, room: str) -> None:
        """Receive what other processes publish to `room` (idempotent).

        Recorded at once and carried out by the subscriber, also after every reconnect.
        While the link is up, returns once Redis confirmed it (at most
        `subscribe_timeout`); while it is down, returns at once.
        """
        channel = self._channel(room)
        self._rooms[channel.encode()] = room
        self._wanted.add(channel)
        await self._settle(channel, want=True)

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving `room` (idempotent); waits as `subscribe` does."""
        channel = self._channel(room)
        self._rooms.pop(channel.encode(), None)
        self._wanted.discard(channel)
        await self._settle(channel, want=False)

    async def _settle(self, channel: str, *, want: bool) -> None:
        if self._wake is not None:
            self._wake.set()
        with anyio.move_on_after(self._subscribe_timeout):
            while (
                self._connected
                and (channel in self._active) != want
                and (channel in self._wanted) == want
            ):
                assert self._round is not None
                await self._round.wait()

    # ------------------------------------------------------------------ publishing

    def _envelope(self, event: Message) -> bytes:
        text: str | None = event.get("text")
        if text is not None:
            return self._text_header + text.encode()
        data: bytes | None = event.get("bytes")
        if data is None:
            raise ValueError("an event to publish has 'text' or 'bytes'")
        return self._bytes_header + data

    async def publish(self, room: str | None, event: Message) -> None:
        """Send `event` to the other processes' members of `room` (`None`: everyone).

        Raises:
            TimeoutError: Redis did not take it within `publish_timeout`.
            coredis.exceptions.RedisError: Redis is unreachable or refused it.
        """
        await self.publish_many(((room, event),))

    async def publish_many(self, items: Sequence[tuple[str | None, Message]]) -> None:
        """Send several events in order, in one pipeline (one write, one round trip).

        Raises as `publish` does; then none, some or all of them were published.
        """
        if not self._running:
            raise RuntimeError("this RedisBackend is not running (start it with its hub)")
        if not items:
            return
        commands = [(self._channel(room), self._envelope(event)) for room, event in items]
        with anyio.fail_after(self._publish_timeout):
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, payload in commands:
                    pipe.publish(channel, payload)


def _backlog(pubsub: PubSub[bytes]) -> int:
    """Messages coredis has read from the socket that `get_message` has not returned.

    coredis reads the socket as fast as data comes and keeps what it parsed in two
    unbounded buffers (the connection's push messages, then the pub/sub's own); neither
    is public, and with coredis pinned below 7 they are read here, defensively.
    """
    total = 0
    try:
        total += pubsub._receive_stream.statistics().current_buffer_used
        total += pubsub.connection._push_message_buffer_out.statistics().current_buffer_used
    except Exception:  # pragma: no cover - a coredis that moved them: no bound then
        return 0
    return total


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(_leaves(exc))
        else:
            leaves.append(exc)
    return leaves


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
