"""The test server: `serve()` runs uvicorn or hypercorn on the running event loop.

The server listens on a socket bound here first, so the port is known at once and a
client that connects early waits in the backlog. It runs in a task group of the caller's
task, on asyncio (uvicorn, hypercorn) or trio (hypercorn); what each server does on its
own (shutdown, close codes, slow clients) is described in docs/topics/servers.md.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc

from ._client import WebSocketClient, clients_of, connect, resolve, trio_running

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("wsrooms")

ServerName = Literal["uvicorn", "hypercorn"]

# How `serve()` drives a server: the runner hands back a callable that asks the server to
# stop, then serves until it has stopped.
_RequestStop = Callable[[], None]
_SetStopper = Callable[[_RequestStop], None]
_Runner = Callable[[_SetStopper], Awaitable[None]]

# Extra time, beyond the graceful timeout, before `Server.shutdown()` aborts the clients
# of this module still connected to a server that has not stopped.
_ABORT_MARGIN = 0.5
# Extra time, beyond twice the graceful timeout, before a server that does not stop is
# cancelled outright (hypercorn may spend one graceful timeout on connections and one
# on the lifespan shutdown).
_STOP_MARGIN = 5.0


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

    def connect(
        self, path: str = "/", **kwargs: Any
    ) -> AbstractAsyncContextManager[WebSocketClient]:
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
        does on its own (see [Servers](../topics/servers.md)), within the `shutdown_timeout`
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
            clients = clients_of(self.host, self.port)
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
) -> AbstractAsyncContextManager[Server]:
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
    return _ServerContext(
        app,
        server=server,
        host=host,
        port=port,
        lifespan=lifespan,
        shutdown_timeout=shutdown_timeout,
        ws_max_size=ws_max_size,
        options=options,
    )


class _ServerContext:
    """The async context manager that `serve()` returns.

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
        on_trio = trio_running()
        name: ServerName = self._server_name or ("hypercorn" if on_trio else "uvicorn")
        if name == "uvicorn" and on_trio:
            raise ValueError("uvicorn runs on asyncio only: use server='hypercorn' on trio")
        ready = self._ready = anyio.Event()
        gate = _LifespanGate(self._app, enabled=self._lifespan, on_startup=ready.set)
        run = (
            self._uvicorn_runner(gate)
            if name == "uvicorn"
            else self._hypercorn_runner(gate, on_trio=on_trio)
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

    def _hypercorn_runner(self, gate: _LifespanGate, *, on_trio: bool) -> _Runner:
        settings: dict[str, Any] = {
            "graceful_timeout": self._shutdown_timeout,
            "shutdown_timeout": self._shutdown_timeout,
        }
        if self._ws_max_size is not None:
            settings["websocket_max_message_size"] = self._ws_max_size
        settings.update(self._options)

        async def run(set_stopper: _SetStopper) -> None:
            assert self._sock is not None
            await _run_hypercorn(gate, self._sock, settings, set_stopper, trio=on_trio)

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
    infos = await resolve(host, port, passive=True)
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
