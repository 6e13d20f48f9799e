"""`Hub`: local connections, room membership, and fan-out through a backend.

The boundary between a hub and its connections is small and runs both ways:

- the hub asks a connection (`Member`) to `deliver` an event (never awaiting its socket)
  or to `abort`;
- a connection asks the hub to `publish` an encoded event, to `detach` it (at once,
  synchronously, as soon as it starts to end) and to `release` it (once it has ended).

Membership changes are synchronous steps with no `await` inside, so they are atomic on
any event loop without a lock, and no backend call (subscribe, unsubscribe, publish)
ever runs inside one: the hub's syncer task settles subscriptions afterwards, and its
publisher task carries broadcasts to other processes, both bounded by `backend_timeout`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Collection, Generator, Hashable, Iterable
from types import TracebackType
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup
from starlette.types import Message

from ._codec import dumps, encode
from ._delivery import WAIT, DropCount, Outbox, owe_room, wait_for_room
from ._exceptions import CloseCode, HubNotRunning
from ._limits import safe
from ._membership import Membership, check_room
from ._park import Parker, make_parker
from ._stats import ConnectionStatistics, HubStatistics
from .backends import Backend, MemoryBackend

__all__ = ["Hub", "Member", "Pending"]

logger = logging.getLogger("wsrooms")


class Member(Hashable, Protocol):
    """What a hub needs of a connection.

    `RoomEndpoint` instances, and so the per-socket objects of `Room.connect`, are members.

    Attributes:
        deliver: Queue one encoded event for the socket without waiting; returns one of
            `QUEUED`, `DROPPED`, `WAIT` (queued above the mark of a moving member: the
            broadcaster should wait for room).
        outbox: The member's outbox (to wait for room in).
    """

    deliver: Callable[[Message], int]
    outbox: Outbox

    @property
    def websocket(self) -> Any: ...

    @property
    def closing(self) -> bool:
        """True once the connection has begun to end."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """End the connection at once, without awaiting anything."""
        ...

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of the connection's counters."""
        ...


class Pending:
    """What `push` returns: awaiting it waits until the message is on its way everywhere.

    That is: room in the queues of members that were full but moving (at most
    `slow_consumer_timeout`), and the backend having taken the message (at most the
    hub's `backend_timeout`). Not awaiting it is fine (it is no coroutine, so nothing
    warns): the message is delivered either way.
    """

    __slots__ = ("_full", "_hub", "_ticket")

    def __init__(self, hub: Hub | None, ticket: int, full: list[Outbox] | None) -> None:
        self._hub = hub
        self._ticket = ticket
        self._full = full

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        if self._full:
            await wait_for_room(self._full, self._full[0].stall_timeout)
        if self._hub is not None and self._ticket:
            await self._hub._published(self._ticket)


class Hub:
    """Who is in which room, and delivery of broadcasts to them.

    `Hub()` keeps rooms inside this process. `Hub("redis://host:6379/0")` spans every
    process that uses the same Redis and hub `name`; such a hub runs inside the
    application's lifespan (`async with hub:`).

    A broadcast encodes the message once and puts it in every member's outbox without
    awaiting any socket; queries are synchronous and return snapshots.

    Args:
        backend: `None` or `"memory://"` for the in-memory backend, a `redis://`,
            `rediss://` or `unix://` URL for Redis (extra `wsrooms[redis]`), or a
            `wsrooms.backends.Backend` object.
        name: Prefix of every channel the hub uses in a shared backend, so that several
            hubs (or apps) can share one Redis (default `"wsrooms"`).
        backend_timeout: Bound in seconds (default 5) for each backend call: a publish,
            a subscription change, and stopping the backend.
        publish_queue_size: Broadcasts waiting for the publisher (default 1024); past
            that, a broadcast's cross-process copy is dropped and counted in
            `publish_failures` (local members have theirs).
        on_backend_state: Called with `False` when the backend's link to other processes
            goes down and with `True` when it is back.
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        name: str = "wsrooms",
        backend_timeout: float = 5.0,
        publish_queue_size: int = 1024,
        on_backend_state: Callable[[bool], None] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a hub name must be a non-empty str, not {name!r}")
        if not isinstance(backend_timeout, int | float) or backend_timeout <= 0:
            raise ValueError(f"backend_timeout must be seconds > 0, not {backend_timeout!r}")
        if not isinstance(publish_queue_size, int) or publish_queue_size < 1:
            raise ValueError(f"publish_queue_size must be an int >= 1, not {publish_queue_size!r}")
        self.name = name
        self.backend_timeout = backend_timeout
        self._backend = _make_backend(backend, name)
        self._local = self._backend.local_only
        self._members: Membership[Member] = Membership()
        self._on_backend_state = on_backend_state
        self._task_group: TaskGroup | None = None
        self._running = False
        # Cross-process publishing: one queue, one publisher task.
        self._publish_queue: deque[tuple[str | None, Message]] = deque()
        self._publish_queue_size = publish_queue_size
        self._publisher: Parker | None = None
        self._enqueued = 0  # tickets handed out
        self._settled = 0  # tickets published (or failed)
        self._settle_event: anyio.Event | None = None
        # Subscriptions: what the backend was told, and rooms to settle.
        self._subscribed: set[str] = set()
        self._dirty: dict[str, None] = {}
        self._syncer: Parker | None = None
        # Counters.
        self._published_count = 0
        self._drops = DropCount()
        self._slow_disconnects = 0
        self._outages = 0
        self._publish_failures = 0

    def __repr__(self) -> str:
        return (
            f"<Hub {self.name!r} {type(self._backend).__name__} "
            f"connections={len(self._members)} rooms={len(self._members.rooms())}>"
        )

    @property
    def backend(self) -> Backend:
        """The backend that carries this hub's broadcasts between processes."""
        return self._backend

    @property
    def dropped(self) -> int:
        """Messages dropped by the slow-consumer policies of this hub's connections since
        the hub was created."""
        return self._drops.value

    def statistics(self) -> HubStatistics:
        """A snapshot of this hub's counters."""
        return HubStatistics(
            connections=len(self._members),
            rooms=len(self._members.rooms()),
            published=self._published_count,
            dropped=self.dropped,
            slow_consumer_disconnects=self._slow_disconnects,
            backend_connected=self._backend.connected,
            backend_outages=self._outages,
            publish_failures=self._publish_failures,
            publish_queued=len(self._publish_queue),
            backend_lost=self._backend.lost,
        )

    # ------------------------------------------------------------------ lifespan

    async def __aenter__(self) -> Hub:
        if self._running:
            raise RuntimeError("this hub is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            if not self._local:
                await tg.start(self._publish_forever)
                await tg.start(self._sync_forever)
            with anyio.fail_after(self.backend_timeout):
                await self._backend.start(self._deliver, tg, self._backend_state)
        except BaseException as exc:
            # Close the group, then raise the backend's own error (not an ExceptionGroup);
            # a cancellation must pass through the group's scope to be accounted for.
            tg.cancel_scope.cancel()
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                await tg.__aexit__(type(exc), exc, exc.__traceback__)
            else:
                await tg.__aexit__(None, None, None)
            raise
        self._task_group = tg
        self._running = True
        self._dirty.update(dict.fromkeys(self._members.rooms()))  # rooms joined before
        self._wake(self._syncer)
        logger.info("hub %r started (%s)", self.name, type(self._backend).__name__)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Close every local connection with 1001 and stop the backend (bounded)."""
        tg = self._task_group
        assert tg is not None
        self._running = False
        count = len(self._members)
        for conn in self._members.all_connections():
            conn.abort(CloseCode.GOING_AWAY, "server shutting down")
        logger.info("hub %r stopping; closing %d connection(s) with 1001", self.name, count)
        self._task_group = None
        self._wake_settled()  # awaited pushes stop waiting for a publisher that stops
        try:
            with anyio.move_on_after(self.backend_timeout, shield=True) as scope:
                await self._backend.stop()
            if scope.cancelled_caught:
                logger.warning(
                    "hub %r: the backend did not stop within %ss", self.name, self.backend_timeout
                )
        finally:
            tg.cancel_scope.cancel()
        return await tg.__aexit__(exc_type, exc, tb)

    def _check_running(self) -> None:
        if not self._running:
            raise HubNotRunning(
                f"this hub's {type(self._backend).__name__} needs the hub running: "
                "enter it in the app's lifespan with `async with hub:`"
            )

    def _backend_state(self, connected: bool) -> None:
        if connected:
            logger.info("hub %r: backend link is back", self.name)
        else:
            self._outages += 1
            logger.warning(
                "hub %r: backend link is down; local delivery goes on, cross-process "
                "delivery resumes when it is back",
                self.name,
            )
        if self._on_backend_state is not None:
            try:
                self._on_backend_state(connected)
            except Exception:
                logger.exception("on_backend_state of hub %r failed", self.name)

    # ------------------------------------------------------------------ membership

    def add(self, connection: Member) -> None:
        """Register a local connection (with no rooms yet).

        Raises:
            RuntimeError: the connection has ended (or is ending).
        """
        self._check_alive(connection)
        self._adopt(connection)
        self._members.add(connection)

    async def remove(self, connection: Member) -> frozenset[str]:
        """Forget a connection, leaving every room it is in; returns those rooms."""
        left = self._members.remove(connection)
        self._settle(left)
        return frozenset(left)

    async def join(self, connection: Member, room: str) -> bool:
        """Put a connection in a room (adding it if unknown); true if it was not in it.

        Raises:
            InvalidRoomName: `room` is not a valid room name.
            RuntimeError: the connection has ended (or is ending).
            HubNotRunning: a cross-process hub used outside `async with hub:`.
        """
        check_room(room)
        self._check_alive(connection)
        if not self._local:
            self._check_running()
        self._adopt(connection)
        first = not self._members.has_room(room)
        joined = self._members.join(connection, room)
        if first:
            self._settle((room,))
        return joined

    async def leave(self, connection: Member, room: str) -> bool:
        """Take a connection out of a room; true if it was in it."""
        left = self._members.leave(connection, room)
        if left:
            self._settle((room,))
        return left

    async def leave_all(self, connection: Member) -> frozenset[str]:
        """Leave every room, keeping the connection registered; returns the rooms left."""
        rooms = list(self._members.rooms_of(connection))
        for room in rooms:
            self._members.leave(connection, room)
        self._settle(rooms)
        return frozenset(rooms)

    def detach(self, connection: Member) -> list[str]:
        """Take an ending connection out of every room at once; returns the rooms left.

        Called synchronously as soon as the connection starts to end, so broadcasts stop
        reaching it at once; it is never added back. Idempotent.
        """
        if connection not in self._members:
            return []
        left = self._members.remove(connection)
        if connection.outbox.slow_consumer:
            self._slow_disconnects += 1
        self._settle(left)
        return left

    async def release(self, connection: Member, rooms: Iterable[str]) -> None:
        """The connection has ended: settle the backend for the rooms it left.

        Returns without waiting for the backend: the hub's syncer carries the change
        out, bounded by `backend_timeout` per call.
        """
        self._settle(rooms)

    def _adopt(self, connection: Member) -> None:
        """Have the member's drops counted in this hub's total."""
        connection.outbox.hub_drops = self._drops

    def _check_alive(self, connection: Member) -> None:
        if connection.closing:
            raise RuntimeError(
                f"{connection!r} has ended: an ended connection cannot be added to a hub "
                "or join a room"
            )

    # ------------------------------------------------------------------ subscriptions

    def _settle(self, rooms: Iterable[str]) -> None:
        """Have the syncer bring the backend in line with local membership for `rooms`."""
        if self._local:
            return
        dirty = self._dirty
        for room in rooms:
            dirty[room] = None
        self._wake(self._syncer)

    async def _sync_forever(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The syncer: one backend call at a time, outside any membership change."""
        parker = self._syncer = make_parker()
        task_status.started()
        dirty = self._dirty
        while True:
            while dirty and self._running:
                room = next(iter(dirty))
                del dirty[room]
                await self._sync(room)
            self._syncer = parker
            await parker.park()

    async def _sync(self, room: str) -> None:
        want = self._members.has_room(room)
        if want == (room in self._subscribed):
            return
        call = self._backend.subscribe if want else self._backend.unsubscribe
        # Declared first: a backend whose link is down records the wish and carries it
        # out when it reconnects.
        if want:
            self._subscribed.add(room)
        else:
            self._subscribed.discard(room)
        try:
            with anyio.fail_after(self.backend_timeout):
                await call(room)
        except Exception as exc:
            logger.info(
                "hub %r: %s(%s) failed (%s); the backend retries when its link is back",
                self.name,
                call.__name__,
                safe(room),
                type(exc).__name__,
            )

    # ------------------------------------------------------------------ queries

    def members(self, room: str) -> frozenset[Member]:
        """The local connections in `room`."""
        return self._members.members(room)

    def rooms_of(self, connection: Member) -> frozenset[str]:
        """The rooms `connection` is in."""
        return self._members.rooms_of(connection)

    def rooms(self) -> frozenset[str]:
        """The names of the rooms that have local members."""
        return self._members.rooms()

    @property
    def connections(self) -> frozenset[Member]:
        """Every local connection."""
        return self._members.connections()

    # ------------------------------------------------------------------ delivery

    async def broadcast(self, room: str, message: Any, exclude: Collection[Member] = ()) -> None:
        """Send `message` to every member of `room`, except those in `exclude`.

        `str` goes as a text frame, `bytes` as binary, anything else as JSON text. Never
        waits for a stuck member's socket; may wait, at most `slow_consumer_timeout`, for
        a moving member's full queue (that is what slows a flood at its source); with a
        cross-process backend, returns once the backend has taken the message (at most
        `backend_timeout`; a failure is counted, never raised).
        """
        await self.publish(room, encode(message, dumps), exclude)

    async def broadcast_all(self, message: Any, exclude: Collection[Member] = ()) -> None:
        """Send `message` to every connection of the hub (in every process)."""
        await self.publish(None, encode(message, dumps), exclude)

    async def publish(
        self, room: str | None, event: Message, exclude: Collection[Member] = ()
    ) -> None:
        """Deliver an encoded event to the members of `room` (`None`: everyone) here and
        in other processes; what `broadcast` does after encoding."""
        await self.publish_nowait(room, event, exclude)

    def publish_nowait(
        self, room: str | None, event: Message, exclude: Collection[Member] = ()
    ) -> Pending:
        """Deliver locally now and queue the cross-process copy; awaiting the result waits
        for room in moving members' queues and for the backend (see `Pending`)."""
        if not self._local:
            self._check_running()
        full = self._fanout(room, event, exclude)
        self._published_count += 1
        if full:
            owe_room(full)  # waited for before the pushing connection reads again
        if self._local:
            return Pending(None, 0, full) if full else _DONE
        queue = self._publish_queue
        if len(queue) >= self._publish_queue_size:
            self._publish_failures += 1
            return Pending(None, 0, full) if full else _DONE
        queue.append((room, event))
        self._enqueued += 1
        self._wake(self._publisher)
        return Pending(self, self._enqueued, full)

    def _fanout(
        self, room: str | None, event: Message, exclude: Collection[Member]
    ) -> list[Outbox] | None:
        """Put `event` in each member's outbox; the outboxes to wait for, if any."""
        if room is None:
            members: Iterable[Member] = tuple(self._members.all_connections())
        else:
            members = self._members.fanout(room)
            if not members:
                check_room(room)
                return None
        full: list[Outbox] | None = None
        for conn in members:
            if exclude and conn in exclude:
                continue
            if conn.deliver(event) == WAIT:  # drops are counted by the member's outbox
                if full is None:
                    full = []
                full.append(conn.outbox)
        return full

    def _deliver(self, room: str | None, event: Message) -> None:
        """Deliver what another process published (the backend's callback).

        Nothing can wait here: a member that is full and moving goes over its mark, up to
        its cap, where its policy applies.
        """
        self._fanout(room, event, ())

    async def _publish_forever(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The publisher: every queued broadcast to the backend, in order, in batches."""
        parker = self._publisher = make_parker()
        task_status.started()
        queue = self._publish_queue
        while True:
            while queue:
                batch = list(queue)
                queue.clear()
                try:
                    with anyio.fail_after(self.backend_timeout):
                        await self._backend.publish_many(batch)
                except Exception as exc:
                    self._publish_failures += len(batch)
                    logger.debug("hub %r: publishing %d failed: %r", self.name, len(batch), exc)
                self._settled += len(batch)
                self._wake_settled()
            self._publisher = parker
            await parker.park()

    async def _published(self, ticket: int) -> None:
        """Wait until the publisher has dealt with `ticket` (bounded)."""
        with anyio.move_on_after(self.backend_timeout):
            while self._settled < ticket and self._running:
                event = self._settle_event
                if event is None:
                    event = self._settle_event = anyio.Event()
                await event.wait()

    def _wake_settled(self) -> None:
        event = self._settle_event
        if event is not None:
            self._settle_event = None
            event.set()

    @staticmethod
    def _wake(parker: Parker | None) -> None:
        if parker is not None:
            parker.unpark()


_DONE = Pending(None, 0, None)


def _make_backend(backend: str | Backend | None, name: str) -> Backend:
    if backend is None or backend == "memory://":
        return MemoryBackend()
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str) and backend.startswith(("redis://", "rediss://", "unix://")):
        try:
            from .backends.redis import RedisBackend
        except ImportError as exc:
            raise ImportError(
                "a redis:// hub needs the Redis client: pip install 'wsrooms[redis]'"
            ) from exc
        return RedisBackend(backend, name=name)
    raise ValueError(
        f"unknown hub backend {backend!r}: pass None, 'memory://', a 'redis://' URL, "
        "or a wsrooms.backends.Backend object"
    )
