"""The test client: `connect()` and `WebSocketClient`, thin over websockets' own clients.

The WebSocket protocol, the opening handshake and the reading are those of the
`websockets` library: its asyncio client (`websockets.asyncio.client`) on asyncio and its
trio client (`websockets.trio.client`, websockets 17.1+) on trio. This module gives them
one API on both loops, wsrooms' exceptions, and the settings a test wants: no compression
unless asked, no client pings, and `max_queue=1`.

Two things stay hand-written, because those clients cannot do them:

- **The TCP connection.** Neither client sets a socket option before connecting, and
  `receive_buffer` must be `SO_RCVBUF` before `connect()` (the TCP window is agreed in
  the handshake). This module connects the socket and hands it over (`sock=` on
  asyncio, `stream=` on trio).
- **`abort()`.** Both clients only close gracefully or drop the socket with a FIN. A
  vanished client is a TCP reset: `SO_LINGER` 0 on that socket, then the loop's own
  forced close (`transport.abort()`, `trio.aclose_forcefully`).

What they cannot do, and this module no longer does, is read nothing at all: their
reader runs in the background and stops once one message is queued (`max_queue=1`), so
a client that stops calling `recv()` still holds one message and one socket read. With a
small `receive_buffer` that is enough for every slow-consumer test here. The background
reader costs a task switch per message. Measured against the hand-written client this
replaces: one connection is as fast on both loops; a 20-client fan-out test is as fast
on asyncio and 10-30 % slower on trio (more when the CPU is busy). One maintained protocol
implementation on both loops was worth that. `close()` and `wait_closed()` read on while
they wait, so unread messages never hold up the closing handshake.

Everything loop-specific is in `_AsyncioLink` and `_TrioLink`; the rest is anyio.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import struct
import sys
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio
import anyio.lowlevel
import websockets.asyncio.client
from websockets.exceptions import ConnectionClosed as _WSConnectionClosed
from websockets.exceptions import InvalidHandshake as _WSInvalidHandshake
from websockets.exceptions import InvalidStatus as _WSInvalidStatus
from websockets.frames import Close
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

if TYPE_CHECKING:
    import websockets.trio.client
    from websockets.asyncio.client import ClientConnection as AsyncioClientConnection
    from websockets.client import ClientProtocol
    from websockets.http11 import Response
    from websockets.trio.client import ClientConnection as TrioClientConnection

# Frames the client buffers before it stops reading its socket (websockets' `max_queue`):
# one, so that a test that stops calling `recv()` soon stops reading.
_MAX_QUEUE = 1

# The open clients of this module, with their event loop and the server's address, so
# that a shutdown that hangs on one can abort it.
_open_clients: weakref.WeakKeyDictionary[WebSocketClient, tuple[object, tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


# Exceptions ------------------------------------------------------------------------------


class ConnectionClosed(Exception):
    """The WebSocket connection is closed: raised by `recv()` and `send()`.

    `code` and `reason` are those of the close frame the server sent, or 1006 and `""`
    when the connection ended without one (the TCP connection dropped, or the client
    aborted it).

    Args:
        code: The close code.
        reason: The close reason.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        if self.reason:
            return f"connection closed: {self.code} {self.reason}"
        return f"connection closed: {self.code}"


class HandshakeError(Exception):
    """The opening handshake failed: the server did not accept the WebSocket."""


class InvalidStatus(HandshakeError):
    """The server answered the opening handshake with an HTTP status other than 101.

    A connection the app refuses before accepting it (`websocket.close` before
    `websocket.accept`) gets HTTP 403 from both uvicorn and hypercorn.

    Args:
        status_code: The HTTP status code, e.g. 403.
        headers: The response headers, as `(name, value)` pairs.
        body: The response body.
    """

    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body


# The adapter over websockets' clients -----------------------------------------------------


class _Connection(Protocol):
    """What websockets' asyncio and trio client connections both offer, as used here."""

    @property
    def protocol(self) -> ClientProtocol: ...

    @property
    def response(self) -> Response | None: ...

    async def recv(self) -> str | bytes: ...

    async def wait_closed(self) -> None: ...


class _Link(Protocol):
    """The calls on a websockets client connection that differ between the loops."""

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a message; return once the kernel has it, after a checkpoint."""

    async def close(self, code: int, reason: str) -> None:
        """Perform the closing handshake (websockets bounds it by `close_timeout`)."""

    async def abort(self) -> None:
        """Reset the TCP connection (no closing handshake) and settle as closed."""


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


async def _open_asyncio(
    stack: AsyncExitStack, url: str, sock: socket.socket, options: dict[str, Any]
) -> AsyncioClientConnection:
    """Run websockets' asyncio client on a connected socket."""
    # With `sock`, websockets uses no proxy and hands the socket to asyncio.
    # `write_limit=0`: `send()` returns once the kernel has the frame, as on trio.
    opener = websockets.asyncio.client.connect(url, sock=sock, write_limit=0, **options)
    return await stack.enter_async_context(opener)


async def _open_trio(
    stack: AsyncExitStack, url: str, sock: socket.socket, options: dict[str, Any]
) -> TrioClientConnection:
    """Run websockets' trio client on a connected socket."""
    import trio
    from websockets.trio.client import connect as trio_connect

    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    # The trio client runs its reader in a nursery of its own, which the context manager
    # holds open: the stack leaves it in the task that entered it.
    return await stack.enter_async_context(trio_connect(url, stream=stream, **options))


class _AsyncioLink:
    def __init__(self, connection: AsyncioClientConnection) -> None:
        self.connection = connection

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        await self.connection.send(message)
        # websockets' asyncio send() does not yield while the kernel takes the frames,
        # so a loop of sends would starve every other task (the server's among them)
        # until the socket is full. trio's does; yield here too.
        await anyio.lowlevel.checkpoint()

    async def close(self, code: int, reason: str) -> None:
        await self.connection.close(code, reason)

    async def abort(self) -> None:
        transport = self.connection.transport
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(AttributeError, OSError):  # closed already
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
        await self.connection.wait_closed()


class _TrioLink:
    def __init__(self, connection: TrioClientConnection) -> None:
        self.connection = connection

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        await self.connection.send(message)

    async def close(self, code: int, reason: str) -> None:
        await self.connection.aclose(code, reason)
        # The stream may have been closed under a paused reader (aclose() timed out, or
        # a send failed): wake it, or it waits for room in its queue for ever and the
        # nursery never exits (websockets 17.4).
        self._wake_reader()

    async def abort(self) -> None:
        import trio

        stream = self.connection.stream
        assert isinstance(stream, trio.SocketStream)  # made by _open_trio
        with contextlib.suppress(OSError):  # closed already
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        await trio.aclose_forcefully(stream)
        self._wake_reader()
        await self.connection.wait_closed()

    def _wake_reader(self) -> None:
        if self.connection.recv_flow_control is not None:
            self.connection.resume_reading()


# Client ----------------------------------------------------------------------------------


class WebSocketClient:
    """A WebSocket client connection, opened by [`connect`][wsrooms.testing.connect].

    It reads from its socket in the background, but at most one message (and one
    socket read) ahead of `recv()`: a test that stops calling `recv()` leaves the data
    in the kernel buffers and the server feels the backpressure. Pings are answered
    while it reads.

    One task may read at a time (others wait their turn); any task may send. Used as
    an async context manager, it closes on exit like the `connect()` block does.
    `connect()` makes it; a test has no reason to.

    Args:
        connection: An open client connection of websockets, asyncio's or trio's.
        close_timeout: Seconds allowed for the closing handshake.

    Attributes:
        response_headers: The headers of the server's handshake response, as
            `(name, value)` pairs.
    """

    def __init__(
        self,
        connection: (
            websockets.asyncio.client.ClientConnection | websockets.trio.client.ClientConnection
        ),
        *,
        close_timeout: float,
    ) -> None:
        self._connection: _Connection = connection
        self._link: _Link = (
            _AsyncioLink(connection)
            if isinstance(connection, websockets.asyncio.client.ClientConnection)
            else _TrioLink(connection)
        )
        self._protocol = connection.protocol
        self._close_timeout = close_timeout
        # Messages read by `wait_closed()` or `close()` before `recv()` asked for them.
        self._messages: deque[str | bytes] = deque()
        self._read_lock = anyio.Lock()
        response = connection.response
        self.response_headers: list[tuple[str, str]] = (
            [] if response is None else list(response.headers.raw_items())
        )

    async def __aenter__(self) -> WebSocketClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # Properties

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected, or `None`."""
        return self._protocol.subprotocol

    @property
    def closed(self) -> bool:
        """Whether the connection is fully closed."""
        return self._protocol.state is State.CLOSED

    @property
    def close_code(self) -> int | None:
        """The close code the server sent; 1006 if it sent none; `None` until closed."""
        code = self._protocol.close_code
        return None if code is None else int(code)

    @property
    def close_reason(self) -> str | None:
        """The close reason the server sent; `""` if none; `None` until closed."""
        return self._protocol.close_reason

    # Sending

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a message: `str` as a text frame, `bytes` as a binary frame.

        Returns once the frame is handed to the kernel, which takes a while if the
        server does not read; it does not wait for the server to process it.

        Args:
            message: The message.

        Raises:
            ConnectionClosed: If the connection is closing or closed.
            TypeError: If `message` is neither `str` nor bytes-like.
        """
        if not isinstance(message, str | bytes | bytearray | memoryview):
            raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
        if self._protocol.state is not State.OPEN:
            # websockets would wait for the closing handshake first: say it at once.
            raise self._closed_error()
        try:
            await self._link.send(message)
        except _WSConnectionClosed:
            raise self._closed_error() from None

    async def send_json(self, obj: Any) -> None:
        """Send `obj` encoded as JSON in a text frame.

        Args:
            obj: Anything `json.dumps` accepts.

        Raises:
            ConnectionClosed: If the connection is closing or closed.
        """
        await self.send(json.dumps(obj))

    # Receiving

    async def recv(self) -> str | bytes:
        """Receive the next message: `str` for a text frame, `bytes` for a binary one.

        Messages the server sent before closing are returned first.

        Returns:
            The message.

        Raises:
            ConnectionClosed: Once the connection is closed and no message is left;
                `.code` and `.reason` are those of the server's close frame.
        """
        async with self._read_lock:
            if self._messages:
                return self._messages.popleft()
            try:
                return await self._connection.recv()
            except _WSConnectionClosed:
                raise self._closed_error() from None

    async def recv_json(self) -> Any:
        """Receive the next message and decode it as JSON.

        Returns:
            The decoded value.

        Raises:
            ConnectionClosed: Once the connection is closed and no message is left.
            ValueError: If the message is not valid JSON.
        """
        return json.loads(await self.recv())

    async def wait_closed(self) -> None:
        """Wait until the server closes the connection.

        Messages that arrive meanwhile are kept for `recv()`. Afterwards `close_code`
        and `close_reason` tell how the server closed. Bound it with
        `anyio.fail_after` if the server might never close.
        """
        async with self._read_lock:
            while True:
                try:
                    message = await self._connection.recv()
                except _WSConnectionClosed:
                    return
                self._messages.append(message)

    # Closing

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Perform the closing handshake and close the TCP connection.

        Waits up to `close_timeout` (see [`connect`][wsrooms.testing.connect]) for
        the server's answer, then drops the connection anyway; runs shielded from
        cancellation within that bound. Closing a closed connection does nothing.

        Args:
            code: The close code to send.
            reason: The close reason to send.
        """
        _open_clients.pop(self, None)
        # Also when closed already: on trio that settles a reader left paused.
        with anyio.move_on_after(self._close_timeout, shield=True):
            async with anyio.create_task_group() as task_group:
                # Read meanwhile: with unread messages the client has stopped reading,
                # and the server's answer would wait behind them.
                task_group.start_soon(self.wait_closed)
                await self._link.close(code, reason)
        if not self.closed:
            # websockets' own bound did not hold (a send blocked on a full buffer).
            await self._abort()

    async def abort(self) -> None:
        """Drop the TCP connection at once, without a close frame, like a client that vanishes.

        The socket is reset (RST), so the server notices even if it is blocked
        writing to this client. Afterwards `close_code` is 1006.
        """
        _open_clients.pop(self, None)
        if not self.closed:
            await self._abort()

    # Internals

    async def _abort(self) -> None:
        # Shielded so an abort still happens in a cancelled test, and bounded so it
        # cannot hang one (a reset needs no answer from the peer).
        with anyio.move_on_after(self._close_timeout, shield=True):
            await self._link.abort()

    def _closed_error(self) -> ConnectionClosed:
        close: Close | None = self._protocol.close_rcvd
        if close is None:
            return ConnectionClosed(1006, "")
        return ConnectionClosed(int(close.code), close.reason)


def connect(
    url: str,
    *,
    subprotocols: Iterable[str] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    max_size: int | None = 2**24,
    receive_buffer: int | None = None,
    compression: Literal["deflate"] | None = None,
    open_timeout: float = 10.0,
    close_timeout: float = 5.0,
) -> AbstractAsyncContextManager[WebSocketClient]:
    """Open a WebSocket client connection, on asyncio or trio.

    Used as `async with connect(url) as ws:`. The block starts once the server has
    accepted the WebSocket; leaving it closes the connection with code 1000 (bounded
    by `close_timeout`) unless it is closed already.

    Args:
        url: A `ws://` URL, e.g. `server.ws_url("/ws")`.
        subprotocols: Subprotocols to offer, in order of preference.
        headers: Extra request headers (e.g. `Origin`, `Cookie`, `Authorization`).
        max_size: Largest message accepted from the server, in bytes; `None` for no
            limit. A bigger message fails the connection with 1009.
        receive_buffer: If set, the socket's `SO_RCVBUF` in bytes, set before
            connecting: a small one makes a client that stops reading fill up fast.
        compression: `"deflate"` to offer permessage-deflate; off by default, so that
            payloads are as big on the wire as in memory.
        open_timeout: Seconds allowed for the TCP connection and the handshake.
        close_timeout: Seconds allowed for the closing handshake.

    Returns:
        An async context manager yielding a
        [`WebSocketClient`][wsrooms.testing.WebSocketClient].

    Raises:
        InvalidStatus: If the server answers the handshake with an HTTP status other
            than 101 (403 when the app refuses the connection).
        HandshakeError: If the handshake fails otherwise.
        TimeoutError: If the connection is not open within `open_timeout`.
        OSError: If the TCP connection fails (e.g. connection refused).
    """
    return _ClientContext(
        url,
        subprotocols=list(subprotocols),
        headers=headers,
        max_size=max_size,
        receive_buffer=receive_buffer,
        compression=compression,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
    )


class _ClientContext:
    """The async context manager that `connect()` returns.

    A class rather than `@asynccontextmanager`: on trio, websockets' client holds a
    nursery open for the life of the connection, and no `yield` may sit inside one.
    """

    def __init__(
        self,
        url: str,
        *,
        subprotocols: list[str],
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
        max_size: int | None,
        receive_buffer: int | None,
        compression: Literal["deflate"] | None,
        open_timeout: float,
        close_timeout: float,
    ) -> None:
        uri = parse_uri(url)
        if uri.secure:
            raise ValueError("wsrooms.testing.connect() speaks ws:// only, not wss://")
        if compression not in (None, "deflate"):
            raise ValueError(f"compression must be None or 'deflate', not {compression!r}")
        self._url = url
        self._host = uri.host
        self._port = uri.port
        self._receive_buffer = receive_buffer
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._options: dict[str, Any] = {
            "subprotocols": [Subprotocol(s) for s in subprotocols] or None,
            "additional_headers": None if headers is None else list(_header_items(headers)),
            "compression": compression,
            "max_size": max_size,
            "max_queue": _MAX_QUEUE,
            # The hand-written client this replaces never pinged: nor does this one.
            "ping_interval": None,
            "ping_timeout": None,
            "close_timeout": close_timeout,
        }
        self._stack: AsyncExitStack | None = None
        self._client: WebSocketClient | None = None

    async def __aenter__(self) -> WebSocketClient:
        if self._stack is not None:
            raise RuntimeError("connect() context manager is not reentrant")
        self._stack = AsyncExitStack()
        open_connection = _open_trio if trio_running() else _open_asyncio
        deadline = anyio.current_time() + self._open_timeout
        with anyio.fail_after(self._open_timeout):
            sock = await _open_tcp(self._host, self._port, self._receive_buffer)
        peer = tuple(sock.getpeername())
        # websockets bounds the handshake itself: on trio its nursery opens inside
        # that bound, which an anyio scope around `open()` could not allow.
        options = dict(self._options, open_timeout=max(deadline - anyio.current_time(), 0.0))
        try:
            connection = await open_connection(self._stack, self._url, sock, options)
        except BaseException as exc:
            sock.close()  # closed already if websockets took it over; closing is idempotent
            error = _handshake_error(exc)
            if error is None:
                raise
            raise error from (None if isinstance(error, InvalidStatus) else exc)
        client = WebSocketClient(connection, close_timeout=self._close_timeout)
        self._client = client
        _open_clients[client] = (_loop_identity(), peer)
        return client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        assert self._client is not None
        try:
            await self._client.close()
        finally:
            # Leaves websockets' client (and on trio its nursery, whose reader has
            # ended with the connection).
            await self._stack.__aexit__(exc_type, exc, tb)


def _handshake_error(exc: BaseException) -> HandshakeError | None:
    """Translate a failed handshake from websockets' terms; `None` for other errors."""
    # A redirect comes back as a ValueError caused by it: the socket cannot be reused.
    status = exc if isinstance(exc, _WSInvalidStatus) else exc.__cause__
    if isinstance(status, _WSInvalidStatus):
        response = status.response
        return InvalidStatus(
            response.status_code,
            list(response.headers.raw_items()),
            bytes(response.body or b""),
        )
    if isinstance(exc, _WSInvalidHandshake):
        return HandshakeError(f"opening handshake failed: {exc}")
    return None


def _header_items(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> Iterable[tuple[str, str]]:
    return headers.items() if isinstance(headers, Mapping) else headers


async def resolve(host: str, port: int, *, passive: bool) -> list[Any]:
    """Resolve `host:port` for TCP; an IP address is taken as it is, without a thread."""
    flags = socket.AI_PASSIVE if passive else 0
    try:
        return socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=flags | socket.AI_NUMERICHOST
        )
    except socket.gaierror:
        return list(await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags))


async def _open_tcp(host: str, port: int, receive_buffer: int | None) -> socket.socket:
    """Connect a non-blocking TCP socket, setting `SO_RCVBUF` before connecting when asked."""
    infos = await resolve(host, port, passive=False)
    error: OSError | None = None
    for family, type_, proto, _, address in infos:
        sock = socket.socket(family, type_, proto)
        try:
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code == errno.EINPROGRESS:
                await anyio.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except BaseException:
            sock.close()
            raise
        if code == 0:
            return sock
        sock.close()
        error = OSError(code, f"connect to {host}:{port} failed: {os.strerror(code)}")
    raise error or OSError(f"cannot resolve {host!r}")


def clients_of(host: str, port: int) -> list[WebSocketClient]:
    """List the open clients, on the running event loop, connected to `host:port`."""
    here = _loop_identity()
    return [
        client
        for client, (loop, peer) in list(_open_clients.items())
        if loop is here and peer[:2] == (host, port)
    ]


def _loop_identity() -> object:
    """Return an object that identifies the running event loop (asyncio or trio)."""
    return anyio.lowlevel.current_token().native_token


def trio_running() -> bool:
    """Tell whether the running event loop is trio's (without importing trio)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
