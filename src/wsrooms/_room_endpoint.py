"""`RoomEndpoint`: a `BaseWSEndpoint` whose connections join rooms of a `Hub`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import anyio
from anyio.abc import TaskGroup
from starlette.types import Receive, Scope, Send

from ._codec import encode
from ._delivery import SLOW_CONSUMER_POLICIES, WAIT, Outbox, SlowConsumerPolicy
from ._endpoint import (
    _SEND_FAILED,
    BaseWSEndpoint,
    _check_count,
    _check_seconds,
)
from ._exceptions import CloseCode, JoinRefused
from ._hub import Hub
from ._limits import safe
from ._membership import check_room
from ._stats import ConnectionStatistics

__all__ = ["RoomEndpoint"]

logger = logging.getLogger("wsrooms")


class RoomEndpoint(BaseWSEndpoint):
    """An endpoint whose connections join rooms and broadcast to them.

    Every outgoing message of the connection, its own `send_message` and the broadcasts of
    others alike, goes through one bounded outbox written by the connection's own writer
    task: ordered, and never able to stall a broadcaster.

    Attributes:
        hub: The `Hub` this class's connections live in. A direct subclass of
            `RoomEndpoint` gets a fresh in-memory hub unless it assigns one; subclasses of
            that class share it unless they assign their own.
        send_queue_size: Messages the outbox holds before the connection is judged
            (default 1024).
        slow_consumer: What happens to a slow consumer, a connection whose queue is full
            and whose socket has taken nothing for `slow_consumer_timeout`:
            `"disconnect"` (default: leave every room at once, end the tasks, close with
            1008 "slow consumer"), `"drop_oldest"` or `"drop_newest"`.
        slow_consumer_timeout: Seconds without a completed write (default 1) that make a
            connection with a full queue a slow consumer. A connection whose socket is
            moving is never one: a broadcaster waits for room in its queue instead, at
            most this long, which slows a flood down at its source.
        max_rooms_per_connection: Rooms one connection may be in at once (default 1000);
            joining one more raises `JoinRefused`.
    """

    hub: ClassVar[Hub]
    # Delivery
    send_queue_size: ClassVar[int] = 1024
    slow_consumer: ClassVar[SlowConsumerPolicy] = "disconnect"
    slow_consumer_timeout: ClassVar[float] = 1.0
    # Limits
    max_rooms_per_connection: ClassVar[int] = 1000

    deliver: Callable[[Any], int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("hub")
        if own is None and RoomEndpoint in cls.__bases__:
            cls.hub = Hub()
        elif own is not None and not isinstance(own, Hub):
            raise TypeError(f"{cls.__name__}.hub must be a wsrooms.Hub, not {type(own).__name__}")

    @classmethod
    def _check_options(cls) -> None:
        super()._check_options()
        _check_count(cls, "send_queue_size", cls.send_queue_size)
        _check_count(cls, "max_rooms_per_connection", cls.max_rooms_per_connection)
        _check_seconds(cls, "slow_consumer_timeout", cls.slow_consumer_timeout)
        if cls.slow_consumer not in SLOW_CONSUMER_POLICIES:
            raise ValueError(
                f"{cls.__name__}.slow_consumer must be one of {SLOW_CONSUMER_POLICIES}, "
                f"not {cls.slow_consumer!r}"
            )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.outbox = Outbox(
            self.send_queue_size,
            self.slow_consumer,
            self.slow_consumer_timeout,
            self._slow_consumer,
        )
        self.deliver = self.outbox.put
        self._left: list[str] = []

    # ------------------------------------------------------------------ hooks

    async def can_join(self, room: str) -> bool:
        """Decide whether this connection may join `room` (default: yes)."""
        return True

    async def on_join(self, room: str) -> None:
        """Run after the connection joined `room`."""

    async def on_leave(self, room: str) -> None:
        """Run after the connection left `room`, also when it left by disconnecting."""

    # ------------------------------------------------------------------ public API

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this connection is in."""
        return self.hub.rooms_of(self)

    @property
    def dropped(self) -> int:
        """Messages to this connection dropped by the `drop_*` slow-consumer policies."""
        return self.outbox.dropped

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of this connection's counters."""
        return dataclasses.replace(
            super().statistics(),
            queued=len(self.outbox),
            dropped=self.outbox.dropped,
            sent=self._sent + self.outbox.written,
        )

    async def join(self, room: str) -> None:
        """Join `room` if `can_join` allows it; `on_join` runs if it was not a member.

        Raises:
            InvalidRoomName: `room` is not a valid room name (uncaught: close 1007, or
                HTTP 403 before accept).
            JoinRefused: `can_join` returned false, or the connection is in
                `max_rooms_per_connection` rooms already (uncaught: close 1008, or HTTP
                403 before accept).
            RuntimeError: the connection is closing.
        """
        check_room(room)
        if self.closing:
            raise RuntimeError(f"cannot join {safe(room)}: the connection is closing")
        rooms = self.hub.rooms_of(self)
        if room in rooms:
            return
        if len(rooms) >= self.max_rooms_per_connection:
            raise JoinRefused(room)
        if not await self.can_join(room):
            raise JoinRefused(room)
        if await self.hub.join(self, room):
            await self.on_join(room)

    async def leave(self, room: str) -> None:
        """Leave `room`; `on_leave` runs if the connection was in it."""
        if await self.hub.leave(self, room):
            await self.on_leave(room)

    async def broadcast(self, room: str, message: Any, exclude_self: bool = False) -> None:
        """Send `message` to every member of `room`, encoded once with `json_dumps`.

        Never waits for a stuck member's socket (see `Hub.broadcast`). Messages of one
        sender to one room reach every member in the order they were sent.

        Args:
            room: The room's name.
            message: `str` (a text frame), `bytes` (binary), or anything else (JSON text).
            exclude_self: Leave this connection out (an echo-free chat).
        """
        await self.hub.publish(
            room, encode(message, self.json_dumps), (self,) if exclude_self else ()
        )

    async def broadcast_all(self, message: Any) -> None:
        """Send `message` to every connection of the hub."""
        await self.hub.publish(None, encode(message, self.json_dumps), ())

    async def send_message(self, message: Any) -> None:
        """Queue `message` for this connection, in order with the broadcasts it receives.

        Returns once the message is queued, without waiting for the socket, unless the
        queue is full: then it waits for room while the socket is moving (at most
        `slow_consumer_timeout`), and the `slow_consumer` policy applies if it is not.
        """
        if self.deliver(encode(message, self.json_dumps)) == WAIT:
            await self.outbox.wait_room(anyio.current_time() + self.slow_consumer_timeout)

    # ------------------------------------------------------------------ internals

    def _slow_consumer(self) -> None:
        logger.info(
            "slow consumer on %s: queue full and no write for %ss; closing with 1008",
            self._where,
            self.slow_consumer_timeout,
        )
        # The socket is known not to drain: no flush, and a short bound for the close frame.
        self._close_bound = min(self.close_timeout, self.slow_consumer_timeout)
        self._request_close(CloseCode.POLICY_VIOLATION, "slow consumer", drain=False)

    def _serving(self, service: TaskGroup) -> None:
        self.hub.add(self)
        self.outbox.attach(self.send, lambda run: service.start_soon(self._write, run))

    async def _write(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """The writer task's error boundary."""
        try:
            await run()
        except _SEND_FAILED as exc:
            # Only well-formed events are sent: the socket is gone (OSError, or uvicorn's
            # RuntimeError after it answered a close frame).
            logger.debug("send to %s failed: %r", self._where, exc)
            self._client_left(getattr(exc, "code", CloseCode.ABNORMAL_CLOSURE))
        except Exception as exc:
            self._fail(exc, "the writer")

    def _send_progress(self) -> tuple[bool, int]:
        in_flight, done = super()._send_progress()
        return in_flight or bool(len(self.outbox)), done + self.outbox.written

    def _ending(self) -> None:
        # Leave every room at once: broadcasts stop reaching this connection now, not
        # after its tasks have unregistered.
        self._left = self.hub.detach(self)

    async def _flush(self) -> None:
        await self.outbox.drained()

    async def _ended(self) -> None:
        self.outbox.close()
        left, self._left = self._left, []
        await self.hub.release(self, left)
        for room in left:
            try:
                await self.on_leave(room)
            except Exception:
                logger.exception("on_leave(%s) of %s failed", safe(room), self._where)
