"""`Hub`: local connections, room membership, and fan-out through a backend."""

from __future__ import annotations

import logging
from collections.abc import Collection, Generator, Hashable
from types import TracebackType
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup
from starlette.types import Message

from ._codec import dumps, encode
from ._delivery import Outbox
from ._exceptions import CloseCode, HubNotRunning
from ._lock import Lock
from ._membership import Membership, check_room
from .backends import Backend, MemoryBackend

__all__ = ["Connection", "Hub", "Pending"]

logger = logging.getLogger("wsrooms")


class Connection(Hashable, Protocol):
    """What a hub needs of a connection: an outbox, and a way to end it at once.

    `RoomEndpoint` instances (and so the per-socket objects `Room.connect` makes) are
    connections.
    """

    _outbox: Outbox

    @property
    def websocket(self) -> Any: ...

    def _request_close(self, code: int, reason: str, *, send: bool = True) -> None: ...


class Pending:
    """What `push` returns: awaiting it waits until the backend has taken the message.

    Not awaiting it is fine (it is no coroutine, so nothing warns): the message is
    delivered either way.
    """

    __slots__ = ("_event",)

    def __init__(self, event: anyio.Event | None = None) -> None:
        self._event = event

    def __await__(self) -> Generator[Any, None, None]:
        if self._event is not None:
            yield from self._event.wait().__await__()


_DONE = Pending()


class Hub:
    """Who is in which room, and delivery of broadcasts to them.

    `Hub()` keeps rooms inside this process. A hub with a cross-process backend must run
    inside the application's lifespan (`async with hub:`).

    Membership changes (`join`, `leave`, `remove`) are atomic under the hub's lock, which
    works on whichever event loop is running. Queries are synchronous and return snapshots.
    A broadcast encodes the message once and puts it in every member's outbox without
    awaiting any socket.

    Args:
        backend: `None` or `"memory://"` for the in-memory backend, or a `Backend` object.

    Attributes:
        dropped: Messages dropped by the slow-consumer policies of this hub's connections
            since the hub was created.
    """

    def __init__(self, backend: str | Backend | None = None) -> None:
        self._backend = _make_backend(backend)
        self._members: Membership[Connection] = Membership()
        self._lock = Lock()
        self._task_group: TaskGroup | None = None
        self._running = False
        self.dropped = 0

    def __repr__(self) -> str:
        return (
            f"<Hub {type(self._backend).__name__} connections={len(self._members)} "
            f"rooms={len(self._members.rooms())}>"
        )

    @property
    def backend(self) -> Backend:
        """The backend that carries this hub's broadcasts between processes."""
        return self._backend

    # ------------------------------------------------------------------ lifespan

    async def __aenter__(self) -> Hub:
        if self._running:
            raise RuntimeError("this hub is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await self._backend.start(self._deliver, tg, lambda connected: None)
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
        logger.info("hub started (%s)", type(self._backend).__name__)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Close every local connection with 1001 and stop the backend."""
        tg = self._task_group
        assert tg is not None
        self._running = False
        count = len(self._members)
        for conn in self._members.all_connections():
            conn._request_close(CloseCode.GOING_AWAY, "server shutting down")
        logger.info("hub stopping; closed %d connection(s) with 1001", count)
        self._task_group = None
        try:
            with anyio.CancelScope(shield=True):
                await self._backend.stop()
        finally:
            tg.cancel_scope.cancel()
        return await tg.__aexit__(exc_type, exc, tb)

    def _check_running(self) -> None:
        if not self._running:
            raise HubNotRunning(
                f"this hub's {type(self._backend).__name__} needs the hub running: "
                "enter it in the app's lifespan with `async with hub:`"
            )

    # ------------------------------------------------------------------ membership

    def add(self, connection: Connection) -> None:
        """Register a local connection (with no rooms yet)."""
        self._members.add(connection)

    async def remove(self, connection: Connection) -> frozenset[str]:
        """Forget a connection, leaving every room it is in; returns those rooms."""
        async with self._lock:
            left = self._members.remove(connection)
            await self._released(left)
        return frozenset(left)

    async def join(self, connection: Connection, room: str) -> bool:
        """Put a connection in a room (adding it if unknown); true if it was not in it.

        Raises:
            ValueError: `room` is not a valid room name.
        """
        check_room(room)
        async with self._lock:
            first = not self._members.has_room(room)
            joined = self._members.join(connection, room)
            if first and not self._backend.local_only:
                self._check_running()
                try:
                    await self._backend.subscribe(room)
                except BaseException:
                    self._members.leave(connection, room)
                    raise
        return joined

    async def leave(self, connection: Connection, room: str) -> bool:
        """Take a connection out of a room; true if it was in it."""
        async with self._lock:
            left = self._members.leave(connection, room)
            if left:
                await self._released([room])
        return left

    async def leave_all(self, connection: Connection) -> frozenset[str]:
        """Leave every room, keeping the connection registered; returns the rooms left."""
        async with self._lock:
            rooms = list(self._members.rooms_of(connection))
            for room in rooms:
                self._members.leave(connection, room)
            await self._released(rooms)
        return frozenset(rooms)

    def _detach(self, connection: Connection) -> list[str]:
        """Remove a connection at once, without the lock (a connection that is ending).

        Backend subscriptions of rooms this empties are released later by `_released`.
        """
        return self._members.remove(connection)

    async def _forget(self, connection: Connection, left: list[str]) -> None:
        """Final removal of an ended connection that had already left `left`."""
        async with self._lock:
            self._members.remove(connection)
            await self._released(left)

    async def _released(self, rooms: list[str]) -> None:
        """Unsubscribe the backend from rooms that no longer have local members."""
        if self._backend.local_only or not self._running:
            return
        for room in rooms:
            if not self._members.has_room(room):
                await self._backend.unsubscribe(room)

    # ------------------------------------------------------------------ queries

    def members(self, room: str) -> frozenset[Connection]:
        """The local connections in `room`."""
        return self._members.members(room)

    def rooms_of(self, connection: Connection) -> frozenset[str]:
        """The rooms `connection` is in."""
        return self._members.rooms_of(connection)

    def rooms(self) -> frozenset[str]:
        """The names of the rooms that have local members."""
        return self._members.rooms()

    @property
    def connections(self) -> frozenset[Connection]:
        """Every local connection."""
        return self._members.connections()

    # ------------------------------------------------------------------ delivery

    async def broadcast(
        self, room: str, message: Any, exclude: Collection[Connection] = ()
    ) -> None:
        """Send `message` to every member of `room`, except those in `exclude`.

        `str` goes as a text frame, `bytes` as binary, anything else as JSON text. Never
        waits for a member's socket; with a cross-process backend, returns once the
        backend has taken the message.
        """
        await self._publish(room, encode(message, dumps), exclude)

    async def broadcast_all(self, message: Any, exclude: Collection[Connection] = ()) -> None:
        """Send `message` to every connection of the hub (in every process)."""
        await self._publish(None, encode(message, dumps), exclude)

    async def _publish(
        self, room: str | None, event: Message, exclude: Collection[Connection]
    ) -> None:
        """Deliver an encoded event locally, then hand it to the backend."""
        self._fanout(room, event, exclude)
        if not self._backend.local_only:
            self._check_running()
            await self._backend.publish(room, event)

    def _publish_nowait(
        self, room: str | None, event: Message, exclude: Collection[Connection]
    ) -> Pending:
        """Deliver locally now; return an awaitable that completes when the backend has it."""
        self._fanout(room, event, exclude)
        if self._backend.local_only:
            return _DONE
        self._check_running()
        assert self._task_group is not None
        done = anyio.Event()

        async def publish() -> None:
            try:
                await self._backend.publish(room, event)
            finally:
                done.set()

        self._task_group.start_soon(publish)
        return Pending(done)

    def _deliver(self, room: str | None, event: Message) -> None:
        """Deliver what another process published (the backend's callback)."""
        self._fanout(room, event, ())

    def _fanout(self, room: str | None, event: Message, exclude: Collection[Connection]) -> None:
        if room is None:
            members: tuple[Connection, ...] = tuple(self._members.all_connections())
        else:
            members = self._members.fanout(room)
            if not members:
                check_room(room)
                return
        dropped = 0
        if exclude:
            for conn in members:
                if conn not in exclude and conn._outbox.put(event):
                    dropped += 1
        else:
            for conn in members:
                if conn._outbox.put(event):
                    dropped += 1
        if dropped:
            self.dropped += dropped


def _make_backend(backend: str | Backend | None) -> Backend:
    if backend is None or backend == "memory://":
        return MemoryBackend()
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str) and backend.startswith(("redis://", "rediss://", "unix://")):
        raise NotImplementedError(
            "the Redis backend is not part of this version of wsrooms yet; "
            "use Hub() for rooms inside one process"
        )
    raise ValueError(
        f"unknown hub backend {backend!r}: pass None, 'memory://', a 'redis://' URL, "
        "or a wsrooms.backends.Backend object"
    )
