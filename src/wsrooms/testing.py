"""Test helpers: a real ASGI server on a free loopback port and a real WebSocket client.

Both helpers run on the event loop that is already running, inside the caller's task, on
asyncio and on trio alike: no thread, no subprocess, no sleep.

```python
from wsrooms.testing import connect, serve

async def test_echo() -> None:
    async with serve(app) as server, connect(server.ws_url("/ws")) as ws:
        await ws.send_json({"hello": "world"})
        assert await ws.recv_json() == {"echo": {"hello": "world"}}
```

[`serve`][wsrooms.testing.serve] runs uvicorn (asyncio) or hypercorn (asyncio or trio) on
a socket it binds and listens on first, so the port is known at once and a client that
connects early waits in the backlog instead of being refused.
[`connect`][wsrooms.testing.connect] is a small client on anyio sockets driving the
sans-I/O protocol of the `websockets` library: one code path on both event loops, no
compression unless asked, and no reader in the background. A client that does not call
`recv()` does not read its socket, so the server really meets a slow consumer.

What the servers do on their own, worth knowing when a test asserts close codes:

- **Shutdown with connections open.** uvicorn sends close 1012 (service restart) to every
  WebSocket, tells the app `websocket.disconnect` with code 1012 and waits up to
  `shutdown_timeout` for its tasks. hypercorn tells neither: it waits up to
  `shutdown_timeout` and then cancels the app. A plain ASGI app's client then gets
  close 1011 on asyncio and sees the TCP connection drop (1006) on trio; a wsrooms
  endpoint catches the cancellation and closes with 1001 "server shutting down" itself.
- **A client that closes** ([`WebSocketClient.close`][wsrooms.testing.WebSocketClient.close]):
  uvicorn hands the app `websocket.disconnect` with the client's code; hypercorn always
  says 1006, whatever code the client sent.
- **A client that vanishes** ([`WebSocketClient.abort`][wsrooms.testing.WebSocketClient.abort]):
  uvicorn's default WebSocket protocol reports `websocket.disconnect` with code 1005 once
  the handshake is complete, hypercorn reports 1006.
- **A client that reads nothing**: the app's `send` blocks once the buffers are full, on
  both servers. hypercorn shields that write from cancellation, so on shutdown it waits
  for such a client forever; [`Server.shutdown`][wsrooms.testing.Server.shutdown] then
  aborts the clients of this module still connected.
- **A refused handshake** (`websocket.close` before `websocket.accept`): both answer
  HTTP 403, which [`connect`][wsrooms.testing.connect] raises as
  [`InvalidStatus`][wsrooms.testing.InvalidStatus].

This module needs `websockets`; the server you pick needs `uvicorn` or `hypercorn`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
import sys
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus as _WSInvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import Event, State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ConnectionClosed",
    "HandshakeError",
    "InvalidStatus",
    "Server",
    "ServerName",
    "WebSocketClient",
    "connect",
    "serve",
]

logger = logging.getLogger("wsrooms")

ServerName = Literal["uvicorn", "hypercorn"]

# How `serve()` drives a server: the runner hands back a callable that asks the server to
# stop, then serves until it has stopped.
_RequestStop = Callable[[], None]
_SetStopper = Callable[[_RequestStop], None]
_Runner = Callable[[_SetStopper], Awaitable[None]]

# Read at most this much per socket read: `recv()` never pulls more than one chunk beyond
# the message it needs, so a client that stops calling it stops reading.
_READ_SIZE = 65536
# Extra time, beyond the graceful timeout, before `Server.shutdown()` aborts the clients
# of this module still connected to a server that has not stopped.
_ABORT_MARGIN = 0.5
# Extra time, beyond twice the graceful timeout, before a server that does not stop is
# cancelled outright (hypercorn may spend one graceful timeout on connections and one
# on the lifespan shutdown).
_STOP_MARGIN = 5.0

# The open clients of this module, so that a shutdown that hangs on one can abort it.
_open_clients: weakref.WeakSet[WebSocketClient] = weakref.WeakSet()


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


# Server ----------------------------------------------------------------------------------


class Server:
    """A server started by [`serve`][wsrooms.testing.serve], as seen by a test.

    Attributes:
        name: `"uvicorn"` or `"hypercorn"`.
        host: The address the server listens on, e.g. `"127.0.0.1"`.
        port: The port the server listens on.
        url: The WebSocket base URL, e.g. `"ws://127.0.0.1:54321"`.
    """

    def __init__(self, name: ServerName, host: str, port: int, *, shutdown_timeout: float) -> None:
        self.name: ServerName = name
        self.host = host
        self.port = port
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = f"ws://{netloc}"
        self._shutdown_timeout = shutdown_timeout
        self._request_stop: _RequestStop | None = None
        self._stop_requested = False
        self._stopped = anyio.Event()

    def __repr__(self) -> str:
        return f"<Server {self.name} {self.url}>"

    def ws_url(self, path: str = "/") -> str:
        """Build the WebSocket URL of a path on this server.

        Args:
            path: The path, with an optional query string, e.g. `"/ws?room=1"`.

        Returns:
            The URL, e.g. `"ws://127.0.0.1:54321/ws?room=1"`.
        """
        if not path.startswith("/"):
            path = "/" + path
        return self.url + path

    def connect(self, path: str = "/", **kwargs: Any) -> _Connect:
        """Open a client connection to a path on this server.

        A shortcut for `connect(server.ws_url(path), **kwargs)`.

        Args:
            path: The path, with an optional query string.
            **kwargs: Keyword arguments of [`connect`][wsrooms.testing.connect].

        Returns:
            An async context manager yielding a
            [`WebSocketClient`][wsrooms.testing.WebSocketClient].
        """
        return connect(self.ws_url(path), **kwargs)

    async def shutdown(self) -> None:
        """Shut the server down and wait until it has stopped.

        The server stops accepting connections and closes the open ones the way it
        does on its own (see the module documentation), within the `shutdown_timeout`
        given to [`serve`][wsrooms.testing.serve]. If it is still running shortly
        after that, the [`connect`][wsrooms.testing.connect] clients still connected
        to it are aborted: hypercorn cannot interrupt a write to a client that reads
        nothing, so without this its shutdown would wait for that client forever.
        Leaving the `serve` block afterwards does nothing more. Calling this twice is
        harmless.
        """
        if not self._stop_requested:
            self._stop_requested = True
            if self._request_stop is not None:
                self._request_stop()
        with anyio.move_on_after(self._shutdown_timeout + _ABORT_MARGIN):
            await self._stopped.wait()
        if not self._stopped.is_set():
            clients = _clients_of(self.host, self.port)
            if clients:
                logger.warning(
                    "%r still running %.1f s after shutdown began: aborting %d client(s)"
                    " still connected to it",
                    self,
                    self._shutdown_timeout + _ABORT_MARGIN,
                    len(clients),
                )
                for client in clients:
                    await client.abort()
            await self._stopped.wait()


def serve(
    app: ASGIApp,
    *,
    server: ServerName | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    lifespan: bool = False,
    shutdown_timeout: float = 3.0,
    ws_max_size: int | None = None,
    **options: Any,
) -> _Serve:
    """Run an ASGI app on a real server, on the running event loop, for a test.

    Used as `async with serve(app) as server:`. The server binds `host:port` (port 0
    picks a free port), starts in the caller's task group and is ready when the block
    begins: the socket is listening and, with `lifespan=True`, the app's startup has
    completed. On leaving the block the server shuts down as on
    [`Server.shutdown`][wsrooms.testing.Server.shutdown] and is waited for; a server
    that outlives its bounds is cancelled. An exception raised in the block propagates
    unchanged; a server that crashes cancels the block and its error is raised.

    uvicorn runs on asyncio only, with its default WebSocket protocol; hypercorn runs
    on asyncio (`hypercorn.asyncio.serve`) and on trio (`hypercorn.trio.serve`). Neither
    installs signal handlers nor configures logging: they log to the `uvicorn.*` and
    `hypercorn.*` loggers.

    Args:
        app: The ASGI app, e.g. a Starlette or FastAPI application.
        server: `"uvicorn"` or `"hypercorn"`. The default is uvicorn on asyncio and
            hypercorn on trio.
        host: The address to listen on. Keep it on loopback.
        port: The port to listen on; 0 picks a free one.
        lifespan: Run the app's lifespan (startup and shutdown). Off by default: the
            server then answers the lifespan protocol itself and never calls the app
            with a `lifespan` scope.
        shutdown_timeout: Seconds the server waits for open connections on shutdown
            before it cancels them (uvicorn's `timeout_graceful_shutdown`, hypercorn's
            `graceful_timeout`; hypercorn also uses it to bound the lifespan shutdown).
        ws_max_size: Largest WebSocket message the server accepts, in bytes (uvicorn's
            `ws_max_size`, hypercorn's `websocket_max_message_size`); `None` keeps the
            server's default, 16 MiB for both.
        **options: Further settings of the chosen server, by its own names:
            `uvicorn.Config` keyword arguments (e.g. `ws_ping_interval=None`) or
            `hypercorn.config.Config` attributes (e.g. `websocket_ping_interval=5`).

    Returns:
        An async context manager yielding a [`Server`][wsrooms.testing.Server].

    Raises:
        ValueError: If `server` is unknown, or is uvicorn while trio is running.
        TypeError: If an option is not a setting of the chosen server.
        RuntimeError: On entering, if the server does not start (for example the
            app's lifespan startup fails); on leaving, if the server crashed.
    """
    if server is not None and server not in ("uvicorn", "hypercorn"):
        raise ValueError(f"server must be 'uvicorn' or 'hypercorn', not {server!r}")
    if shutdown_timeout < 0:
        raise ValueError("shutdown_timeout must be >= 0")
    return _Serve(
        app,
        server=server,
        host=host,
        port=port,
        lifespan=lifespan,
        shutdown_timeout=shutdown_timeout,
        ws_max_size=ws_max_size,
        options=options,
    )


class _Serve:
    """The async context manager returned by `serve()`.

    Written as a class rather than with `@asynccontextmanager`, so that no `yield` sits
    inside a task group or a cancel scope, and so that the block's own exception is
    not wrapped into an exception group by the task group that runs the server.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        server: ServerName | None,
        host: str,
        port: int,
        lifespan: bool,
        shutdown_timeout: float,
        ws_max_size: int | None,
        options: dict[str, Any],
    ) -> None:
        self._app = app
        self._server_name = server
        self._host = host
        self._port = port
        self._lifespan = lifespan
        self._shutdown_timeout = shutdown_timeout
        self._ws_max_size = ws_max_size
        self._options = options
        self._sock: socket.socket | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._body_scope: anyio.CancelScope | None = None
        self._server: Server | None = None
        self._ready: anyio.Event | None = None
        self._error: Exception | None = None

    async def __aenter__(self) -> Server:
        if self._task_group is not None:
            raise RuntimeError("serve() context manager is not reentrant")
        trio_running = _trio_running()
        name: ServerName = self._server_name or ("hypercorn" if trio_running else "uvicorn")
        if name == "uvicorn" and trio_running:
            raise ValueError("uvicorn runs on asyncio only: use server='hypercorn' on trio")
        ready = self._ready = anyio.Event()
        gate = _LifespanGate(self._app, enabled=self._lifespan, on_startup=ready.set)
        run = (
            self._uvicorn_runner(gate)
            if name == "uvicorn"
            else self._hypercorn_runner(gate, trio_running=trio_running)
        )
        sock = await _listening_socket(self._host, self._port)
        self._sock = sock
        sockname = sock.getsockname()
        self._server = Server(
            name, sockname[0], sockname[1], shutdown_timeout=self._shutdown_timeout
        )
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run, run, gate, name=f"wsrooms.testing {name} server")
        try:
            await ready.wait()
        except BaseException:
            await self._stop()
            raise
        if self._error is not None:
            await self._stop()
            raise self._error
        # No checkpoint since the check above: a crash from now on finds this scope.
        self._body_scope = anyio.CancelScope()
        self._body_scope.__enter__()
        return self._server

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._body_scope is not None
        # Absorbs the cancellation that a crashing server sent into the block.
        suppressed = self._body_scope.__exit__(exc_type, exc, tb)
        if suppressed:
            exc_type, exc, tb = None, None, None
        await self._stop()
        if exc is None and self._error is not None:
            raise self._error
        return suppressed

    async def _stop(self) -> None:
        """Stop the server (bounded, shielded), then leave the task group."""
        assert self._server is not None
        assert self._task_group is not None
        try:
            bound = 2 * self._shutdown_timeout + _STOP_MARGIN
            with anyio.move_on_after(bound, shield=True):
                await self._server.shutdown()
            if not self._server._stopped.is_set():
                logger.warning("%r did not stop within %.1f s: cancelling it", self._server, bound)
            self._task_group.cancel_scope.cancel()
        finally:
            try:
                # The server task has ended and reported its own error, if any: the
                # block's exception is not the task group's to wrap.
                await self._task_group.__aexit__(None, None, None)
            finally:
                if self._sock is not None:
                    self._sock.close()

    async def _run(self, run: _Runner, gate: _LifespanGate) -> None:
        """Run the server until it stops, recording rather than raising its error."""
        assert self._server is not None
        server = self._server

        def set_stopper(request_stop: _RequestStop) -> None:
            server._request_stop = request_stop
            if server._stop_requested:
                request_stop()

        try:
            await run(set_stopper)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            assert self._ready is not None
            if gate.startup_failure is not None:
                # uvicorn exits, hypercorn raises its own error: say the same for both.
                self._error = RuntimeError(f"lifespan startup failed: {gate.startup_failure}")
                self._error.__cause__ = exc
            elif not self._ready.is_set():
                self._error = exc
            else:
                logger.error("%r crashed", server, exc_info=True)
                self._error = RuntimeError(f"{server!r} crashed: {exc!r}")
                self._error.__cause__ = exc
                if self._body_scope is not None:
                    self._body_scope.cancel()
        finally:
            # Refuse new connections at once rather than leave them in the backlog.
            assert self._sock is not None
            self._sock.close()
            server._stopped.set()
            assert self._ready is not None
            self._ready.set()

    def _uvicorn_runner(self, gate: _LifespanGate) -> _Runner:
        settings: dict[str, Any] = {
            "log_config": None,
            # Always on: with lifespan off the gate answers it, and its startup is
            # the readiness signal.
            "lifespan": "on",
            "timeout_graceful_shutdown": self._shutdown_timeout,
        }
        if self._ws_max_size is not None:
            settings["ws_max_size"] = self._ws_max_size
        settings.update(self._options)

        async def run(set_stopper: _SetStopper) -> None:
            assert self._sock is not None
            await _run_uvicorn(gate, self._sock, settings, set_stopper)

        return run

    def _hypercorn_runner(self, gate: _LifespanGate, *, trio_running: bool) -> _Runner:
        settings: dict[str, Any] = {
            "graceful_timeout": self._shutdown_timeout,
            "shutdown_timeout": self._shutdown_timeout,
        }
        if self._ws_max_size is not None:
            settings["websocket_max_message_size"] = self._ws_max_size
        settings.update(self._options)

        async def run(set_stopper: _SetStopper) -> None:
            assert self._sock is not None
            await _run_hypercorn(gate, self._sock, settings, set_stopper, trio=trio_running)

        return run


class _LifespanGate:
    """Wrap an ASGI app to own the lifespan protocol.

    With lifespan off it answers startup and shutdown itself (hypercorn cannot switch
    lifespan off), so the app never sees a `lifespan` scope. In both modes it reports
    the end of startup, which is when `serve()` is ready.
    """

    def __init__(self, app: ASGIApp, *, enabled: bool, on_startup: Callable[[], None]) -> None:
        self.app = app
        self.enabled = enabled
        self.on_startup = on_startup
        self.startup_failure: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
        elif self.enabled:
            await self._lifespan(scope, receive, send)
        else:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                    self.on_startup()
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_and_watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "lifespan.startup.failed":
                self.startup_failure = str(message.get("message", ""))
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                started = True
                self.on_startup()

        try:
            await self.app(scope, receive, send_and_watch)
        except Exception as exc:
            if started or self.startup_failure is not None:
                raise
            failure = f"the app raised {exc!r}"
        else:
            if started or self.startup_failure is not None:
                return
            failure = "the app returned without completing startup"
        # An app without lifespan support: uvicorn would refuse to start, hypercorn would
        # go on without lifespan (and serve() would never be ready). Fail the same way
        # on both, since lifespan=True asked for it.
        await send_and_watch({"type": "lifespan.startup.failed", "message": failure})


async def _run_uvicorn(
    app: _LifespanGate,
    sock: socket.socket,
    settings: dict[str, Any],
    set_stopper: _SetStopper,
) -> None:
    """Serve `app` with uvicorn on `sock` until asked to stop."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The test run owns the process's signals: Ctrl+C must stop the tests, not
            # ask this server to drain.
            yield

    try:
        config = uvicorn.Config(app, **settings)
    except TypeError as exc:
        raise TypeError(f"invalid uvicorn option: {exc}") from None
    server = _Server(config)
    set_stopper(lambda: setattr(server, "should_exit", True))
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        # uvicorn exits the process when it cannot start (e.g. lifespan startup failed).
        raise RuntimeError(
            "uvicorn did not start (lifespan startup failed?); see the uvicorn.error log"
        ) from exc
    finally:
        # A connection whose peer stopped reading never finishes closing: its write
        # buffer cannot drain. Drop what is left so no transport outlives the server.
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()


async def _run_hypercorn(
    app: _LifespanGate,
    sock: socket.socket,
    settings: dict[str, Any],
    set_stopper: _SetStopper,
    *,
    trio: bool,
) -> None:
    """Serve `app` with hypercorn on `sock`, on asyncio or trio, until asked to stop."""
    from hypercorn.config import Config, Sockets

    class _Config(Config):
        def create_sockets(self) -> Sockets:
            # Serve on the socket bound before the server started: its port is known
            # up front and early clients wait in its backlog.
            return Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])

    config = _Config()
    # A logger object is used as it is; a name would make hypercorn add a handler.
    config.errorlog = logging.getLogger("hypercorn.error")
    for key, value in settings.items():
        if key.startswith("_") or not hasattr(Config, key):
            raise TypeError(f"invalid hypercorn option: {key!r}")
        setattr(config, key, value)
    stop = anyio.Event()
    set_stopper(stop.set)
    # hypercorn types the app with its own scope and event TypedDicts, narrower than
    # Starlette's mappings; the app is a plain ASGI 3 callable either way.
    asgi_app: Any = app
    if trio:
        from hypercorn.trio import serve as trio_serve

        await trio_serve(asgi_app, config, shutdown_trigger=stop.wait, mode="asgi")
    else:
        from hypercorn.asyncio import serve as asyncio_serve

        with _quiet_cancelled_stream_callbacks():
            await asyncio_serve(asgi_app, config, shutdown_trigger=stop.wait, mode="asgi")


@contextlib.contextmanager
def _quiet_cancelled_stream_callbacks() -> Iterator[None]:
    """Drop the error asyncio logs for each connection hypercorn cancels, on Python 3.11.

    hypercorn cancels the connections left after its graceful timeout. Before Python
    3.12, the done-callback of `asyncio.start_server` calls `task.exception()` on the
    cancelled task, which raises `CancelledError` inside the callback and logs it at
    ERROR as "Exception in callback StreamReaderProtocol.connection_made...". Python 3.12
    checks `task.cancelled()` first. Only that exact report is dropped.
    """
    if sys.version_info >= (3, 12):
        yield
        return
    import asyncio

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), asyncio.CancelledError) and (
            "StreamReaderProtocol.connection_made" in str(context.get("message", ""))
        ):
            return
        if previous is None:
            loop.default_exception_handler(context)
        else:
            previous(loop, context)

    loop.set_exception_handler(handler)
    try:
        yield
    finally:
        if loop.get_exception_handler() is handler:
            loop.set_exception_handler(previous)


async def _listening_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on `host:port`; the server takes the socket over."""
    infos = await _resolve(host, port, passive=True)
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _clients_of(host: str, port: int) -> list[WebSocketClient]:
    """List the open clients, on the running event loop, connected to `host:port`."""
    here = _loop_identity()
    return [
        client
        for client in list(_open_clients)
        if client._loop is here and client._peer[:2] == (host, port)
    ]


def _loop_identity() -> object:
    """Return an object that identifies the running event loop (asyncio or trio)."""
    return anyio.lowlevel.current_token().native_token


def _trio_running() -> bool:
    """Tell whether the running event loop is trio's (without importing trio)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


# Client ----------------------------------------------------------------------------------


class WebSocketClient:
    """A WebSocket client connection, opened by [`connect`][wsrooms.testing.connect].

    It reads from its socket only while a method that needs the server's data runs
    (`recv`, `recv_json`, `close`, `wait_closed`), one bounded chunk at a time: a test
    that stops calling `recv()` leaves the data in the kernel buffers and the server
    feels the backpressure. Pings are answered while reading.

    One task may read at a time (others wait their turn); any task may send. Used as
    an async context manager, it closes on exit like the `connect()` block does.

    Attributes:
        response_headers: The headers of the server's handshake response, as
            `(name, value)` pairs.
    """

    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        protocol: ClientProtocol,
        *,
        close_timeout: float,
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._close_timeout = close_timeout
        self._messages: deque[str | bytes] = deque()
        self._fragments: list[bytes] = []
        self._fragments_text = False
        self._read_lock = anyio.Lock()
        self._write_lock = anyio.Lock()
        self._stream_closed = False
        # Where it is connected, and on which event loop: see `_clients_of()`.
        self._peer: tuple[Any, ...] = tuple(stream.extra(anyio.abc.SocketAttribute.remote_address))
        self._loop = _loop_identity()
        self.response_headers: list[tuple[str, str]] = []

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
        if self._protocol.state is not State.OPEN:
            raise self._closed_error()
        if isinstance(message, str):
            self._protocol.send_text(message.encode())
        elif isinstance(message, bytes | bytearray | memoryview):
            self._protocol.send_binary(bytes(message))
        else:
            raise TypeError(f"message must be str or bytes, not {type(message).__name__}")
        if not await self._flush():
            raise self._closed_error()

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
            while not self._messages:
                if self._protocol.state is State.CLOSED:
                    raise self._closed_error()
                await self._read_chunk()
            return self._messages.popleft()

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
            while self._protocol.state is not State.CLOSED:
                await self._read_chunk()

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
        with anyio.move_on_after(self._close_timeout, shield=True):
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(code, reason)
                await self._flush()
            async with self._read_lock:
                while self._protocol.state is not State.CLOSED:
                    await self._read_chunk()
        await self._drop()

    async def abort(self) -> None:
        """Drop the TCP connection at once, without a close frame, like a client that vanishes.

        The socket is reset (RST), so the server notices even if it is blocked
        writing to this client. Afterwards `close_code` is 1006.
        """
        if not self._stream_closed:
            raw = self._stream.extra(anyio.abc.SocketAttribute.raw_socket)
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self._drop()

    # Internals

    def _closed_error(self) -> ConnectionClosed:
        close = self._protocol.close_rcvd
        if close is None:
            return ConnectionClosed(1006, "")
        return ConnectionClosed(int(close.code), close.reason)

    async def _read_chunk(self) -> None:
        """Read one chunk from the socket and feed it to the protocol."""
        try:
            data = await self._stream.receive(_READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self._protocol.receive_eof()
        else:
            self._protocol.receive_data(data)
        await self._process(self._protocol.events_received())

    async def _process(self, events: list[Event]) -> None:
        """Take received frames as messages, send the protocol's answers (pong, close)."""
        self._take_events(events)
        await self._flush()
        if self._protocol.state is State.CLOSED:
            await self._close_stream()

    def _take_events(self, events: list[Event]) -> None:
        """Turn received frames into messages."""
        for event in events:
            if not isinstance(event, Frame):
                continue  # the handshake response
            if event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY:
                self._fragments = [bytes(event.data)]
                self._fragments_text = event.opcode is Opcode.TEXT
            elif event.opcode is Opcode.CONT:
                self._fragments.append(bytes(event.data))
            else:
                continue  # ping, pong, close: the protocol handles them
            if event.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._messages.append(data.decode() if self._fragments_text else data)

    async def _flush(self) -> bool:
        """Write what the protocol has to send; return False if the peer is gone."""
        async with self._write_lock:
            # Taken under the lock, so frames go out in the order the protocol made them.
            chunks = self._protocol.data_to_send()
            if not chunks or self._stream_closed:
                return not self._stream_closed
            data = b"".join(chunks)
            try:
                if data:
                    await self._stream.send(data)
                if not chunks[-1]:  # websockets.protocol.SEND_EOF: half-close
                    await self._stream.send_eof()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return False
            return True

    async def _drop(self) -> None:
        """Close the socket and settle the protocol as closed."""
        await self._close_stream()
        if self._protocol.state is not State.CLOSED:
            self._protocol.receive_eof()
            self._protocol.data_to_send()
            self._take_events(self._protocol.events_received())

    async def _close_stream(self) -> None:
        if not self._stream_closed:
            self._stream_closed = True
            _open_clients.discard(self)
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()


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
) -> _Connect:
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
    return _Connect(
        url,
        subprotocols=list(subprotocols),
        headers=headers,
        max_size=max_size,
        receive_buffer=receive_buffer,
        compression=compression,
        open_timeout=open_timeout,
        close_timeout=close_timeout,
    )


class _Connect:
    """The async context manager returned by `connect()`."""

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
        self._uri = uri
        self._protocol = ClientProtocol(
            uri,
            subprotocols=[Subprotocol(s) for s in subprotocols] or None,
            extensions=[ClientPerMessageDeflateFactory()] if compression else None,
            max_size=max_size,
        )
        self._headers = headers
        self._receive_buffer = receive_buffer
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._client: WebSocketClient | None = None

    async def __aenter__(self) -> WebSocketClient:
        if self._client is not None:
            raise RuntimeError("connect() context manager is not reentrant")
        with anyio.fail_after(self._open_timeout):
            stream = await _open_tcp(self._uri.host, self._uri.port, self._receive_buffer)
            client = WebSocketClient(stream, self._protocol, close_timeout=self._close_timeout)
            try:
                await self._handshake(client)
            except BaseException:
                await client._drop()
                raise
        self._client = client
        _open_clients.add(client)
        return client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._client is not None
        await self._client.close()

    async def _handshake(self, client: WebSocketClient) -> None:
        protocol = self._protocol
        request = protocol.connect()
        if self._headers is not None:
            items = self._headers.items() if isinstance(self._headers, Mapping) else self._headers
            for name, value in items:
                request.headers[name] = value
        protocol.send_request(request)
        if not await client._flush():
            raise HandshakeError("connection lost during the opening handshake")
        response: Response | None = None
        events: list[Event] = []
        while response is None and protocol.handshake_exc is None:
            try:
                data = await client._stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                protocol.receive_eof()
            else:
                protocol.receive_data(data)
            events = protocol.events_received()
            if events and isinstance(events[0], Response):
                response = events[0]
        exc = protocol.handshake_exc
        if isinstance(exc, _WSInvalidStatus):
            raise InvalidStatus(
                exc.response.status_code,
                list(exc.response.headers.raw_items()),
                bytes(exc.response.body or b""),
            ) from None
        if exc is not None:
            raise HandshakeError(f"opening handshake failed: {exc}") from exc
        assert response is not None
        client.response_headers = list(response.headers.raw_items())
        # Frames the server sent right after accepting may arrive with the response,
        # a close frame among them, which the protocol has already answered.
        await client._process(events[1:])


async def _resolve(host: str, port: int, *, passive: bool) -> list[Any]:
    """Resolve `host:port` for TCP; an IP address is taken as it is, without a thread."""
    flags = socket.AI_PASSIVE if passive else 0
    try:
        return socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=flags | socket.AI_NUMERICHOST
        )
    except socket.gaierror:
        return list(await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags))


async def _open_tcp(host: str, port: int, receive_buffer: int | None) -> anyio.abc.SocketStream:
    """Connect a TCP socket, setting `SO_RCVBUF` before connecting when asked."""
    infos = await _resolve(host, port, passive=False)
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
            return await anyio.abc.SocketStream.from_socket(sock)
        sock.close()
        error = OSError(code, f"connect to {host}:{port} failed: {os.strerror(code)}")
    raise error or OSError(f"cannot resolve {host!r}")
