"""`Room` and `ConnectionsManager`: the decorator API, on the `RoomEndpoint` engine.

Each `Room` builds a private `RoomEndpoint` subclass; `room.connect(websocket, *args)`
makes one instance of it per socket (the "connection"). So room handlers run exactly as
endpoint handlers do: a task per message, the same limits, close codes and outbox.

`connect` returns an object that is both awaitable (API 1: wsrooms reads the socket until
the client leaves) and an async context manager (API 2: the caller reads the socket).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, ClassVar, TypeVar, overload

from starlette.websockets import WebSocket, WebSocketState

from ._codec import dumps, encode
from ._hub import Hub
from ._membership import check_room
from ._room_endpoint import RoomEndpoint

__all__ = ["BaseRoom", "ConnectionsManager", "Room", "RoomConnect"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: Options a `Room` passes on to its connections (the `RoomEndpoint` class attributes).
OPTIONS = frozenset(
    {
        "max_tasks",
        "max_message_size",
        "exit_max_delay",
        "idle_timeout",
        "subprotocols",
        "json_loads",
        "json_dumps",
        "send_queue_size",
        "slow_consumer",
        "slow_consumer_timeout",
        "close_timeout",
        "send_timeout",
        "max_connections",
        "max_rooms_per_connection",
        "rate_limit",
        "allowed_origins",
    }
)
_names = itertools.count(1)


class BaseRoom:
    """Membership shared by rooms built on one another: a room name in a hub.

    Args:
        base_room: Share this room's membership (its hub and name).
        name: The room's name in the hub (default: a unique generated name).
        hub: The hub that holds the room (default: a new in-memory hub). A shared hub, or a
            Redis hub, lets endpoints and rooms in other processes share the room.
    """

    def __init__(
        self,
        base_room: BaseRoom | None = None,
        *,
        name: str | None = None,
        hub: Hub | None = None,
    ) -> None:
        if base_room is not None:
            if (name is not None and name != base_room.name) or (
                hub is not None and hub is not base_room.hub
            ):
                raise ValueError("a room built on base_room shares its name and hub: omit them")
            self.hub: Hub = base_room.hub
            self.name: str = base_room.name
        else:
            self.hub = hub if hub is not None else Hub()
            self.name = check_room(name) if name is not None else f"room-{next(_names)}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} connections={len(self.connections)}>"

    @property
    def connections(self) -> frozenset[Any]:
        """The connections in this room now (each has `.websocket`)."""
        return self.hub.members(self.name)

    @property
    def websockets(self) -> frozenset[WebSocket]:
        """The Starlette WebSockets of the connections in this room."""
        return frozenset(conn.websocket for conn in self.connections)

    def push(self, message: Any) -> Awaitable[None]:
        """Send `message` to every connection in the room, without blocking.

        `str` goes as a text frame, `bytes` as binary, anything else as JSON. Delivery to
        local members is done when `push` returns; awaiting the result waits until the
        backend has taken the message (at once on an in-memory hub).
        """
        return self.hub.publish_nowait(self.name, encode(message, self._dumps()), ())

    def _dumps(self) -> Callable[[Any], str | bytes]:
        return dumps


class _RoomConnection(RoomEndpoint):
    """The per-socket object of a room: a `RoomEndpoint` that runs the room's handlers."""

    manager: ClassVar[Room]  # the Room (or ConnectionsManager) whose handlers run
    hub = Hub()  # replaced per room; keeps this base class from making its own
    encoding = "json"  # the on_receive handler's mode, JSON without one
    args: tuple[Any, ...] = ()

    async def on_connect(self, websocket: WebSocket) -> None:
        # Join first: once the client sees the accept, it is a member of the room.
        await self.join(self.manager.name)
        if websocket.application_state is WebSocketState.CONNECTING:
            await self.accept(websocket)
        else:  # accepted by the caller before connect()
            self._accepted = True
        handler = self.manager._on_connection
        if handler is not None:
            await handler(self.manager._handler_room(), websocket, *self.args)

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
        handler = self.manager._on_receive
        if handler is not None:
            return await handler(self.manager._handler_room(), websocket, data)
        return None

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        handler = self.manager._on_disconnect
        if handler is not None:
            await handler(self.manager._handler_room(), websocket, *self.args)


class RoomConnect:
    """What `Room.connect` returns: await it (API 1) or `async with` it (API 2).

    Awaiting it serves the socket until the client leaves, wsrooms reading it. As an
    async context manager it serves the socket around the caller's block, which reads
    the socket itself; what the block reads is held to the room's limits
    (`max_message_size`, `rate_limit`, the frame type of `on_receive`), and `as` gives
    the connection (`statistics()`, `websocket`).
    """

    __slots__ = ("_conn", "_lifecycle", "_restore", "_websocket")

    def __init__(self, room: Room, websocket: WebSocket, args: tuple[Any, ...]) -> None:
        self._websocket = websocket
        # The outbox writes data frames with the raw ASGI `send` (as endpoint classes do):
        # Starlette's state checks would run once per delivery and change nothing for a
        # data frame. The close frame still goes through `websocket.close`.
        send = getattr(websocket, "_send", websocket.send)
        receive = getattr(websocket, "_receive", websocket.receive)
        self._conn = room._connection_class(websocket.scope, receive, send)
        self._conn.args = args
        self._lifecycle = self._conn.lifecycle(websocket)
        self._restore: Any = None

    def __await__(self) -> Generator[Any, None, None]:
        return self._serve().__await__()

    async def _serve(self) -> None:
        async with self._lifecycle as serving:
            if serving:
                await self._conn._receive_loop()

    async def __aenter__(self) -> _RoomConnection:
        # The caller reads through its own `websocket`, so its reads are checked there:
        # Starlette offers no public hook, so the instance's receive is swapped for the
        # block's duration and put back after.
        websocket = self._websocket
        self._restore = websocket._receive
        websocket._receive = self._conn.checked_receive(self._restore)
        await self._lifecycle.__aenter__()
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return await self._lifecycle.__aexit__(exc_type, exc, tb)
        finally:
            self._websocket._receive = self._restore


class Room(BaseRoom):
    """A room with decorator-registered handlers.

    ```python
    room = Room()

    @room.on_receive("json")
    async def on_receive(room, websocket, message):
        await room.push(message)

    @app.websocket("/chat")
    async def chat(websocket):
        await room.connect(websocket)
    ```

    Args:
        base_room: Share this room's membership (its hub and name).
        name: The room's name in the hub (default: a unique generated name).
        hub: The hub that holds the room (default: a new in-memory hub).
        **options: Options of the connections, as `RoomEndpoint` class attributes:
            `max_tasks`, `max_message_size`, `max_connections`, `max_rooms_per_connection`,
            `rate_limit`, `allowed_origins`, `exit_max_delay`, `idle_timeout`,
            `close_timeout`, `send_timeout`, `slow_consumer_timeout`,
            `subprotocols`, `json_loads`, `json_dumps`, `send_queue_size`, `slow_consumer`.

    Raises:
        TypeError: an unknown option.
        ValueError: an option value that cannot work.
    """

    def __init__(
        self,
        base_room: BaseRoom | None = None,
        *,
        name: str | None = None,
        hub: Hub | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_room, name=name, hub=hub)
        unknown = set(options) - OPTIONS
        if unknown:
            raise TypeError(
                f"unknown Room option(s) {sorted(unknown)}; the options are {sorted(OPTIONS)}"
            )
        self._on_receive: Callable[..., Awaitable[Any]] | None = None
        self._on_connection: Callable[..., Awaitable[Any]] | None = None
        self._on_disconnect: Callable[..., Awaitable[Any]] | None = None
        namespace: dict[str, Any] = {"manager": self, "hub": self.hub, **options}
        for codec in ("json_loads", "json_dumps"):
            if codec in namespace:
                namespace[codec] = staticmethod(namespace[codec])
        self._connection_class: type[_RoomConnection] = type(
            "RoomConnection", (_RoomConnection,), namespace
        )

    def _handler_room(self) -> Room:
        """The room object handlers receive as their first argument."""
        return self

    def _dumps(self) -> Callable[[Any], str | bytes]:
        return self._connection_class.json_dumps

    # ------------------------------------------------------------------ decorators

    @overload
    def on_receive(self, mode: F) -> F: ...

    @overload
    def on_receive(self, mode: str = "json") -> Callable[[F], F]: ...

    def on_receive(self, mode: str | F = "json") -> F | Callable[[F], F]:
        """Register `handler(room, websocket, message)`, run in a task per message.

        `mode` decodes the frames as `RoomEndpoint.encoding` does: `"json"`, `"text"`,
        `"bytes"`, or `None` for raw ASGI messages. Without a receive handler, a room's
        connections are listen-only: what clients send is read and discarded.
        """
        if callable(mode):
            return self.on_receive("json")(mode)
        if mode not in ("json", "text", "bytes", None):
            raise ValueError(
                f"on_receive mode must be 'json', 'text', 'bytes' or None, not {mode!r}"
            )

        def register(handler: F) -> F:
            self._on_receive = handler
            self._connection_class.encoding = mode  # type: ignore[assignment]
            return handler

        return register

    def on_connection(self, handler: F) -> F:
        """Register `handler(room, websocket, *args)`, run once the socket is accepted and
        in the room; `args` are the extra arguments given to `connect`."""
        self._on_connection = handler
        return handler

    def on_disconnect(self, handler: F) -> F:
        """Register `handler(room, websocket, *args)`, run once when the connection ends,
        after it has left the room and every task has ended."""
        self._on_disconnect = handler
        return handler

    # ------------------------------------------------------------------ connecting

    def connect(self, websocket: WebSocket, *args: Any) -> RoomConnect:
        """Connect `websocket` to the room; extra `args` reach the connection handlers.

        `await room.connect(websocket)` joins the room, accepts the socket, runs the
        receive loop until the client leaves, and cleans up. `async with
        room.connect(websocket):` does the same around a block that reads the socket
        itself (for example `async for message in websocket.iter_text()`); leaving the
        block ends the connection.
        """
        return RoomConnect(self, websocket, args)

    async def listen(self, websocket: WebSocket) -> None:
        """Read and discard what the client sends until it leaves (listen-only sockets).

        Use inside `async with room.connect(websocket):`. Returns at once if the client
        has already left.
        """
        while (
            websocket.client_state is WebSocketState.CONNECTED
            and websocket.application_state is WebSocketState.CONNECTED
        ):
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


class ConnectionsManager(Room):
    """Handlers of their own on another room's membership.

    For example a read-write endpoint and a listen-only endpoint on one room: each is a
    `ConnectionsManager(room)` with its own decorators and `connect`, and handlers receive
    the managed `room` as their first argument.

    Args:
        room: The room whose membership (hub and name) this manager's connections join.
        **options: Options of this manager's connections, as for `Room`; they are its own,
            not inherited from `room`.
    """

    def __init__(self, room: Room, **options: Any) -> None:
        super().__init__(room, **options)
        self.room = room

    def _handler_room(self) -> Room:
        return self.room
