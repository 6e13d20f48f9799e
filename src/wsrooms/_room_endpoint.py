"""`RoomEndpoint`: a `BaseWSEndpoint` whose connections join rooms of a `Hub`."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import anyio
from anyio.abc import TaskGroup
from starlette.types import Receive, Scope, Send

from ._codec import encode
from ._delivery import SLOW_CONSUMER_POLICIES, Outbox, SlowConsumerPolicy
from ._endpoint import SLOW_CLOSE_TIMEOUT, BaseWSEndpoint
from ._exceptions import CloseCode, JoinRefused
from ._hub import Hub
from ._membership import check_room

__all__ = ["RoomEndpoint"]

logger = logging.getLogger("wsrooms")


class RoomEndpoint(BaseWSEndpoint):
    """An endpoint whose connections join rooms and broadcast to them.

    Every outgoing message of the connection, its own `send_message` and the broadcasts of
    others alike, goes through one bounded outbox drained by a writer task in the
    connection's task group: ordered, and never able to stall a broadcaster.

    Attributes:
        hub: The `Hub` this class's connections live in. A direct subclass of
            `RoomEndpoint` gets a fresh in-memory hub unless it assigns one; subclasses of
            that class share it unless they assign their own.
        send_queue_size: Messages the outbox holds before `slow_consumer` applies
            (default 1024).
        slow_consumer: `"disconnect"` (default: leave every room at once, end the tasks,
            close with 1008 "slow consumer"), `"drop_oldest"` or `"drop_newest"`.
    """

    hub: ClassVar[Hub]
    # Delivery
    send_queue_size: ClassVar[int] = 1024
    slow_consumer: ClassVar[SlowConsumerPolicy] = "disconnect"

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
        size = cls.send_queue_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{cls.__name__}.send_queue_size must be an int >= 1, not {size!r}")
        if cls.slow_consumer not in SLOW_CONSUMER_POLICIES:
            raise ValueError(
                f"{cls.__name__}.slow_consumer must be one of {SLOW_CONSUMER_POLICIES}, "
                f"not {cls.slow_consumer!r}"
            )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self._outbox = Outbox(self.send_queue_size, self.slow_consumer, self._slow_consumer)
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
        return self._outbox.dropped

    async def join(self, room: str) -> None:
        """Join `room` if `can_join` allows it; `on_join` runs if it was not a member.

        Raises:
            ValueError: `room` is not a valid room name.
            JoinRefused: `can_join` returned false (uncaught: close 1008, or HTTP 403
                before accept).
            RuntimeError: the connection is closing.
        """
        check_room(room)
        if self._ending:
            raise RuntimeError(f"cannot join {room!r}: the connection is closing")
        if room in self.hub.rooms_of(self):
            return
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

        Never waits for a member's socket. Messages of one sender to one room reach every
        member in the order they were sent.
        """
        await self.hub._publish(
            room, encode(message, self.json_dumps), (self,) if exclude_self else ()
        )

    async def broadcast_all(self, message: Any) -> None:
        """Send `message` to every connection of the hub."""
        await self.hub._publish(None, encode(message, self.json_dumps), ())

    async def send_message(self, message: Any) -> None:
        """Queue `message` for this connection, in order with the broadcasts it receives.

        Returns once the message is queued, without waiting for the socket. If the outbox
        is full, the `slow_consumer` policy applies: under `"disconnect"` this very
        connection is closed with 1008; under the drop policies a message is dropped and
        counted.
        """
        if self._outbox.put(encode(message, self.json_dumps)):
            self.hub.dropped += 1

    # ------------------------------------------------------------------ internals

    def _slow_consumer(self) -> None:
        logger.info(
            "slow consumer on %s: %d messages queued; closing with 1008",
            self.websocket.url.path,
            self.send_queue_size,
        )
        self._close_timeout = SLOW_CLOSE_TIMEOUT
        self._request_close(CloseCode.POLICY_VIOLATION, "slow consumer")

    def _begin_ending(self) -> None:
        if not self._ending:
            # Leave every room at once: broadcasts stop reaching this connection now, not
            # after its tasks have unregistered.
            self._left.extend(self.hub._detach(self))
        super()._begin_ending()

    def _on_task_group_started(self, task_group: TaskGroup) -> None:
        self.hub.add(self)
        self._outbox.attach(
            self.send, self._send_failed, lambda: task_group.start_soon(self._write)
        )

    async def _write(self) -> None:
        try:
            await self._outbox.run()
        except Exception as exc:
            self._send_failed(exc)

    def _send_failed(self, exc: Exception) -> None:
        # Only well-formed events are sent: a failure means the socket is gone (OSError,
        # or uvicorn's RuntimeError after it answered a close frame).
        logger.debug("send to %s failed: %r", self.websocket.url.path, exc)
        self._client_left(getattr(exc, "code", CloseCode.ABNORMAL_CLOSURE))

    async def _flush(self) -> None:
        await self._outbox.flush(self.send)

    async def _on_ended(self) -> None:
        self._outbox.close()
        left = self._left + self.hub._detach(self)  # also rooms joined while ending
        self._left = []
        await self.hub._forget(self, left)
        with anyio.move_on_after(self.exit_max_delay) as scope:
            for room in left:
                try:
                    await self.on_leave(room)
                except Exception:
                    logger.exception("on_leave(%r) of %s failed", room, self.websocket.url.path)
        if scope.cancelled_caught:
            logger.warning(
                "on_leave hooks of %s ran past exit_max_delay (%ss)",
                self.websocket.url.path,
                self.exit_max_delay,
            )
