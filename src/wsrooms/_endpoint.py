"""`BaseWSEndpoint`: one task group per connection, one background task per message.

A connection's life is one sequence, `Lifecycle`, that both the endpoint classes and the
decorator API run:

1. **Open**: the origin and subprotocol checks, `max_connections`, then `on_connect`
   (default: accept). A refusal before accept answers the handshake with HTTP 403.
2. **Serve**: the body of `async with lifecycle:` runs inside the connection's task
   group: wsrooms' receive loop (one task per message), or the caller's own block.
3. **End**: the client left, or wsrooms or user code closed the connection, or the server
   cancelled the app. Every task is cancelled and unregistered (shielded, bounded by
   `exit_max_delay`).
4. **Clean up**: the close frame if the server closed, then `on_disconnect`, once; every
   step bounded in time.

Expected events (a client leaving, bad input, a handled error, a refusal) are logged and
never raised to the ASGI server.
"""

from __future__ import annotations

import enum
import json
import logging
import types
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, ClassVar, Literal

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import (
    WebSocket,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketState,
)

from ._codec import JsonDumps, JsonLoads, Rejected, decode, dumps, encode
from ._codec import loads as strict_loads
from ._delivery import pay, start_owing, stop_owing
from ._exceptions import CloseCode, InvalidMessage, JoinRefused
from ._limits import TokenBucket, check_origins, check_rate_limit, origin_allowed, safe
from ._stats import ConnectionStatistics

__all__ = ["BaseWSEndpoint", "ConnectionTaskGroup", "Lifecycle"]

logger = logging.getLogger("wsrooms")

Encoding = Literal["json", "text", "bytes"] | None
_ENCODINGS = ("json", "text", "bytes", None)

#: What a send or receive raises once the client has left.
_GONE: tuple[type[Exception], ...] = (WebSocketDisconnect, WebSocketDisconnected)

#: What a send raises once the socket is gone (uvicorn's RuntimeError: after it answered
#: the client's close frame).
_SEND_FAILED: tuple[type[Exception], ...] = (OSError, RuntimeError, *_GONE)


class _State(enum.Enum):
    CONNECTING = "connecting"  # before the lifecycle has opened the connection
    OPEN = "open"
    CLOSING = "closing"  # the end is decided: tasks are being cancelled and unregistered
    CLOSED = "closed"


class _Refused(Exception):
    """Refuse the handshake (HTTP 403)."""


def _close_for(exc: BaseException) -> tuple[int, str, int]:
    """Map an exception to (close code, reason sent, log level), as the close-code table
    of the docs lays out."""
    if isinstance(exc, InvalidMessage):
        return CloseCode.INVALID_DATA, exc.reason, logging.INFO
    if isinstance(exc, JoinRefused):
        return CloseCode.POLICY_VIOLATION, "join refused", logging.INFO
    if isinstance(exc, json.JSONDecodeError):  # a caller-owned block parsing client input
        return CloseCode.INVALID_DATA, "invalid JSON", logging.INFO
    return CloseCode.INTERNAL_ERROR, "internal error", logging.ERROR


def _cut_reason(reason: str) -> str:
    """Cut a close reason to the 123 UTF-8 bytes a close frame can carry."""
    raw = reason.encode("utf-8")
    if len(raw) <= 123:
        return reason
    return raw[:123].decode("utf-8", "ignore")


class BaseWSEndpoint:
    """A Starlette WebSocket endpoint class that runs each received message as a task.

    Mount a subclass with `WebSocketRoute(path, Subclass)`; Starlette makes one instance
    per connection. Override `_background_handler` (and, as needed, the other hooks). The
    hooks keep the underscore names of starlette_web's `BaseWSEndpoint`, so that code
    written for it ports unchanged.

    Attributes:
        encoding: How received frames are decoded: `"json"` (default; text frames, and
            binary frames holding UTF-8 JSON), `"text"`, `"bytes"`, or `None` for the raw
            ASGI message. A frame of the wrong kind closes the connection with 1003.
        max_tasks: Handler tasks that may run at once on one connection (default 32). At
            the limit the receive loop stops reading until a task ends (TCP backpressure
            reaches the client); no message is dropped.
        max_message_size: Largest inbound message (default 1 MiB), in bytes for binary
            frames and in characters for text frames; a larger one closes with 1009.
        exit_max_delay: Bound in seconds (default 60) for each shielded
            `_unregister_background_task`, and for the teardown hooks (`on_leave` of a
            room endpoint, `on_disconnect`); an overrun is logged at WARNING.
        idle_timeout: Seconds without an inbound message before the connection is closed
            with 1000 "idle timeout"; `None` (default) waits forever.
        close_timeout: Seconds (default 5) that bound each step of a server-side close:
            flushing what is queued (room endpoints), then the close frame together with
            reading until the client's close frame (RFC 6455 section 7.1.1).
        send_timeout: Seconds (default 10). While the receive loop is paused at
            `max_tasks`, a connection whose sends make no progress for this long is
            treated as gone (`on_disconnect` gets 1006): this is how a client that
            vanished is noticed on servers that cannot report it then.
        subprotocols: Subprotocols the endpoint speaks (default none). The first the client
            offers that is in this list is chosen; if the endpoint lists some and the
            client offers none of them, the handshake is refused (HTTP 403).
        json_loads: Decoder for `"json"` frames. The default speaks RFC 8259 only
            (`NaN`, `Infinity` and over-deep nesting are malformed: 1007).
        json_dumps: Encoder for JSON messages; may return `str` or UTF-8 `bytes`. JSON
            always goes out as a text frame.
        max_connections: Connections of this class open at once in this process (`None`,
            the default: no limit). One more is accepted and closed at once with 1013
            "try again later"; no hook runs for it.
        rate_limit: `(messages, per_seconds)`: a client sending faster is closed with 1008
            "rate limit" (a token bucket: bursts up to `messages` pass). `None`: no limit.
        allowed_origins: Origins (`"https://example.com"`) whose browsers may connect;
            any other `Origin` header gets HTTP 403 (against cross-site WebSocket
            hijacking). Scheme and host compare case-insensitively; `"null"` only if
            listed; a handshake without an `Origin` header (not a browser) is allowed.
            `None` (default) accepts any.
        task_group: The connection's task group while it runs, else `None`.
        websocket: The connection's Starlette `WebSocket`.
    """

    encoding: ClassVar[Encoding] = "json"
    # Limits
    max_tasks: ClassVar[int] = 32
    max_message_size: ClassVar[int] = 1024 * 1024
    max_connections: ClassVar[int | None] = None
    rate_limit: ClassVar[tuple[int, float] | None] = None
    allowed_origins: ClassVar[Sequence[str] | None] = None
    # Timeouts
    exit_max_delay: ClassVar[float] = 60.0
    idle_timeout: ClassVar[float | None] = None
    close_timeout: ClassVar[float] = 5.0
    send_timeout: ClassVar[float] = 10.0
    # Protocol
    subprotocols: ClassVar[Sequence[str]] = ()
    # Plain callables, not methods (so no ClassVar: mypy would bind them to `self`).
    json_loads: JsonLoads = staticmethod(strict_loads)
    json_dumps: JsonDumps = staticmethod(dumps)

    websocket: WebSocket
    task_group: ConnectionTaskGroup | None
    _has_register: ClassVar[bool] = False
    _has_unregister: ClassVar[bool] = False
    _origins: ClassVar[frozenset[str] | None] = None
    _open_count: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # `json_dumps = json.dumps` in a class body would bind as a method: keep it plain.
        for name in ("json_loads", "json_dumps"):
            value = cls.__dict__.get(name)
            if isinstance(value, types.FunctionType):
                setattr(cls, name, staticmethod(value))
        cls._check_options()
        cls._open_count = 0  # each class counts its own connections
        # Per-message costs saved for classes that keep the default (empty) hooks: the
        # shielded, bounded unregister alone is two cancel scopes and a timer per message.
        cls._has_unregister = (
            cls._unregister_background_task is not BaseWSEndpoint._unregister_background_task
        )
        cls._has_register = (
            cls._register_background_task is not BaseWSEndpoint._register_background_task
        )

    @classmethod
    def _check_options(cls) -> None:
        """Reject option values that cannot work, at class creation, saying what to set."""
        if cls.encoding not in _ENCODINGS:
            raise ValueError(
                f"{cls.__name__}.encoding must be 'json', 'text', 'bytes' or None, "
                f"not {cls.encoding!r}"
            )
        for name in ("max_tasks", "max_message_size"):
            _check_count(cls, name, getattr(cls, name))
        if cls.max_connections is not None:
            _check_count(cls, "max_connections", cls.max_connections)
        for name in ("exit_max_delay", "close_timeout", "send_timeout"):
            _check_seconds(cls, name, getattr(cls, name))
        if cls.idle_timeout is not None:
            _check_seconds(cls, "idle_timeout", cls.idle_timeout)
        if isinstance(cls.subprotocols, str):
            raise ValueError(
                f"{cls.__name__}.subprotocols must be a sequence of names, not one string: "
                f"write ({cls.subprotocols!r},)"
            )
        try:
            check_rate_limit(cls.rate_limit)
            cls._origins = check_origins(cls.allowed_origins)
        except ValueError as exc:
            raise ValueError(f"{cls.__name__}: {exc}") from None

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise TypeError(f"{type(self).__name__} serves WebSocket scopes, not {scope['type']!r}")
        self.scope = scope
        self.receive = receive
        self.send = send
        self.task_group = None
        self._where = safe(scope.get("path", ""))
        self._state = _State.CONNECTING
        self._tasks: TaskGroup | None = None
        self._accepted = False
        self._counted = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._send_close = False
        self._drain = False
        self._close_bound = self.close_timeout
        self._running = 0
        self._slot_free: anyio.Event | None = None
        self._task_count = 0
        self._sending = 0
        self._sent = 0
        self._owed: list[Any] = []

    def __await__(self) -> Generator[Any, None, None]:
        return self.dispatch().__await__()

    async def dispatch(self) -> None:
        """Serve the connection from handshake to teardown (the ASGI entry point)."""
        websocket = WebSocket(self.scope, receive=self.receive, send=self._tracked_send)
        async with self.lifecycle(websocket) as serving:
            if serving:
                await self._receive_loop()

    def lifecycle(self, websocket: WebSocket) -> Lifecycle:
        """The connection's life around a block that serves it (see `Lifecycle`)."""
        return Lifecycle(self, websocket)

    # ------------------------------------------------------------------ hooks

    async def on_connect(self, websocket: WebSocket) -> None:
        """Run before the receive loop; the default accepts the connection.

        Before accept, raising here (or returning without accepting) refuses the handshake:
        the client gets HTTP 403 and `on_disconnect` does not run. After accept, an
        exception closes the connection with its close code and `on_disconnect` runs.
        """
        await self.accept(websocket)

    async def accept(self, websocket: WebSocket) -> None:
        """Accept the connection with the subprotocol chosen from `subprotocols`."""
        await websocket.accept(subprotocol=self._subprotocol(websocket))
        self._accepted = True

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        """Run once per accepted connection, after every task has ended and unregistered.

        `close_code` is the client's code when the client closed, the server's when the
        server closed.
        """

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
        """Handle one received message, in its own task. Override this."""
        raise NotImplementedError(
            f"{type(self).__name__} must override _background_handler(task_id, websocket, data)"
        )

    async def _register_background_task(
        self, task_id: str, websocket: WebSocket, data: Any
    ) -> None:
        """Run in the message's task before the handler."""

    async def _unregister_background_task(
        self, task_id: str, websocket: WebSocket, task_result: Any
    ) -> None:
        """Run in the message's task after the handler, on every path, like a `finally`.

        Shielded from outside cancellation and bounded by `exit_max_delay`. `task_result`
        is the handler's return value, or `None` after an error or a cancellation.
        """

    async def _handle_background_task_exception(
        self, task_id: str, websocket: WebSocket, exc: Exception
    ) -> None:
        """Handle an exception from `_register_background_task` or the handler.

        The default logs it and closes the connection: `InvalidMessage` with 1007 and its
        reason, `JoinRefused` with 1008, anything else with 1011 "internal error" and a
        traceback in the log. Return normally from an override to keep the connection
        and its other tasks running.
        """
        code, reason, level = _close_for(exc)
        logger.log(
            level,
            "task %s on %s failed (%s); closing with %d",
            task_id,
            self._where,
            type(exc).__name__,
            code,
            exc_info=exc if level >= logging.ERROR else None,
        )
        await self.close(code, reason)

    # ------------------------------------------------------------------ public API

    async def send_message(self, message: Any) -> None:
        """Send `message`: `str` as a text frame, `bytes` as binary, anything else as JSON.

        Safe to call from any number of tasks at once; frames are never interleaved and one
        task's sends keep their order.
        """
        try:
            await self._tracked_send(encode(message, self.json_dumps))
        except (OSError, RuntimeError) as exc:
            # The event is well formed, so a failing send means the server has closed
            # the socket: OSError when the client vanished, RuntimeError (uvicorn) when
            # it already answered the client's close frame.
            raise WebSocketDisconnect(CloseCode.ABNORMAL_CLOSURE) from exc

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection from the server side.

        Every task of the connection is cancelled and unregistered, then the close frame is
        sent and `on_disconnect` runs with `code`. Called from one of the connection's own
        tasks, that task is cancelled at its next checkpoint.
        """
        self._request_close(code, reason)

    def abort(self, code: int, reason: str) -> None:
        """End the connection at once, without waiting for anything (hub shutdown).

        Synchronous: the close frame is sent, within `close_timeout`, by the connection's
        own task as it ends.
        """
        self._request_close(code, reason)

    @property
    def closing(self) -> bool:
        """True once the connection has begun to end (it never joins a room again)."""
        return self._state is _State.CLOSING or self._state is _State.CLOSED

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of this connection's counters."""
        return ConnectionStatistics(
            tasks=self._running, queued=0, dropped=0, sent=self._sent, messages=self._task_count
        )

    # ------------------------------------------------------------------ extension points

    def _serving(self, service: TaskGroup) -> None:
        """The connection is open; `service` runs its long-lived tasks (for rooms)."""

    def _ending(self) -> None:
        """The connection's end is decided (called once, synchronously; for rooms)."""

    async def _flush(self) -> None:
        """Write what is queued before the server's close frame (for rooms)."""

    async def _ended(self) -> None:
        """Clean up after every task has ended, before `on_disconnect` (for rooms)."""

    def _send_progress(self) -> tuple[bool, int]:
        """(a send is in flight, sends completed so far), for the vanished-client check."""
        return self._sending > 0, self._sent

    # ------------------------------------------------------------------ ending

    def _request_close(
        self,
        code: int,
        reason: str,
        *,
        send: bool = True,
        drain: bool = True,
        cancel: bool = True,
    ) -> None:
        """Record why the connection ends (first reason wins) and cancel its tasks.

        Synchronous, so that any code path (an outbox overflow, a hub shutting down) can
        end a connection at once without awaiting its socket.
        """
        if self._close_code is None:
            self._close_code = int(code)
            self._close_reason = _cut_reason(reason)
            self._send_close = send
            self._drain = send and drain
        if self._state is _State.CONNECTING or self._state is _State.OPEN:
            self._state = _State.CLOSING
            self._ending()
        if cancel and self._tasks is not None:
            self._tasks.cancel_scope.cancel()

    def _client_left(self, code: int) -> None:
        """The client closed or vanished: end the connection with the client's code."""
        logger.debug("client left %s with %s", self._where, code)
        self._request_close(code, "", send=False)

    def _fail(self, exc: Exception, where: str) -> None:
        """Log an unhandled exception of an accepted connection and close it by its code."""
        code, reason, level = _close_for(exc)
        logger.log(
            level,
            "%s of %s failed (%s); closing with %d",
            where,
            self._where,
            type(exc).__name__,
            code,
            exc_info=exc if level >= logging.ERROR else None,
        )
        self._request_close(code, reason)

    def _reject(self, code: int, reason: str) -> None:
        """Close for bad client input (logged at INFO: it is the client's doing)."""
        logger.info("closing %s with %d: %s", self._where, code, reason)
        self._request_close(code, reason)

    # ------------------------------------------------------------------ sending

    async def _tracked_send(self, message: Message) -> None:
        """The ASGI send, counted: sends in flight and done tell a vanished client."""
        self._sending += 1
        try:
            await self.send(message)
        finally:
            self._sending -= 1
        self._sent += 1

    # ------------------------------------------------------------------ opening

    def _subprotocol(self, websocket: WebSocket) -> str | None:
        if not self.subprotocols:
            return None
        offered = websocket.scope.get("subprotocols") or ()
        return next((p for p in offered if p in self.subprotocols), None)

    async def _open(self, websocket: WebSocket) -> bool:
        """The handshake: true when the connection is to be served.

        A refused connection gets no `on_disconnect`, but whatever it did before the
        refusal (rooms joined before accept) is undone.
        """
        self.websocket = websocket
        cls = type(self)
        if not origin_allowed(self.scope, self._origins):
            await self._refuse(websocket, _Refused("origin not allowed"))
            return False
        if self.subprotocols and self._subprotocol(websocket) is None:
            offered = list(websocket.scope.get("subprotocols") or ())
            await self._refuse(websocket, _Refused(f"no common subprotocol in {safe(offered)}"))
            return False
        if self.max_connections is not None and cls._open_count >= self.max_connections:
            logger.warning(
                "%s: %d connections open (max_connections); closing %s with 1013",
                cls.__name__,
                cls._open_count,
                self._where,
            )
            if websocket.application_state is WebSocketState.CONNECTING:
                await websocket.accept(subprotocol=self._subprotocol(websocket))
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "try again later")
            return False
        cls._open_count += 1
        self._counted = True
        try:
            opened = await self._connect(websocket)
        except BaseException:
            await self._undo()
            raise
        if not opened:
            await self._undo()
        return opened

    async def _connect(self, websocket: WebSocket) -> bool:
        try:
            await self.on_connect(websocket)
        except Exception as exc:
            if websocket.application_state is WebSocketState.CONNECTING:
                await self._refuse(websocket, exc)
                return False
            if not self._accepted:  # closed by on_connect before accept, then raised
                return False
            self._fail(exc, "on_connect")
            return True
        if websocket.application_state is WebSocketState.CONNECTING:
            await self._refuse(websocket, _Refused("on_connect did not accept"))
            return False
        if websocket.application_state is WebSocketState.DISCONNECTED:
            # Closed in on_connect: before accept it was a refusal; after, it still ends
            # with teardown and on_disconnect.
            if self._accepted:
                self._request_close(CloseCode.NORMAL_CLOSURE, "", send=False)
            return self._accepted
        self._accepted = True
        return True

    async def _refuse(self, websocket: WebSocket, exc: Exception) -> None:
        """Answer the handshake with HTTP 403."""
        if isinstance(exc, _Refused | InvalidMessage | JoinRefused):
            logger.info("refused %s: %s", self._where, safe(str(exc)))
        else:
            logger.error("on_connect of %s failed; refusing", self._where, exc_info=exc)
        await websocket.close(CloseCode.POLICY_VIOLATION)

    async def _undo(self) -> None:
        """Undo what a refused handshake did (bounded, shielded)."""
        if not self.closing:
            self._state = _State.CLOSING
            self._ending()
        self._state = _State.CLOSED
        with anyio.move_on_after(self.exit_max_delay, shield=True):
            try:
                await self._ended()
            except Exception:
                logger.exception("cleanup of refused %s failed", self._where)
        self._uncount()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            type(self)._open_count -= 1

    # ------------------------------------------------------------------ serving

    async def _receive_loop(self) -> None:
        """Read the socket and start one task per message, until the connection ends."""
        receive = self.receive
        encoding = self.encoding
        max_size = self.max_message_size
        max_tasks = self.max_tasks
        idle = self.idle_timeout
        loads = self.json_loads
        bucket = TokenBucket(*self.rate_limit) if self.rate_limit is not None else None
        json_ok, text_ok = encoding == "json", encoding == "text"
        tasks = self._tasks
        assert tasks is not None
        start_soon = tasks.start_soon
        run_task = self._run_task
        owed = self._owed
        while True:
            if self._running >= max_tasks and not await self._wait_for_slot():
                return
            if owed:  # un-awaited pushes left moving members full: slow the source
                await pay(owed)
            if idle is None:
                message = await receive()
            else:
                with anyio.move_on_after(idle) as idle_scope:
                    message = await receive()
                if idle_scope.cancelled_caught:
                    logger.info("closing %s: idle for %ss", self._where, idle)
                    self._request_close(CloseCode.NORMAL_CLOSURE, "idle timeout")
                    return
            if message["type"] != "websocket.receive":
                if message["type"] == "websocket.disconnect":
                    self._client_left(message.get("code", CloseCode.NO_STATUS_RCVD))
                else:  # the server broke the ASGI protocol
                    self._fail(
                        RuntimeError(f"unexpected ASGI message {message['type']!r}"), "receive loop"
                    )
                return
            if bucket is not None and not bucket.take(anyio.current_time()):
                return self._reject(CloseCode.POLICY_VIOLATION, "rate limit")
            text = message.get("text")
            if text is not None and len(text) <= max_size and (text_ok or json_ok):
                # The common case, inline: a text frame of acceptable size.
                if json_ok:
                    try:
                        data: Any = loads(text)
                    except Exception:  # any failure of the codec on client input
                        return self._reject(CloseCode.INVALID_DATA, "invalid JSON")
                else:
                    data = text
            else:
                try:
                    data = decode(message, encoding, loads, max_size)
                except Rejected as rejected:
                    return self._reject(rejected.code, rejected.reason)
            self._task_count += 1
            self._running += 1
            task_id = str(self._task_count)
            start_soon(run_task, task_id, data, name=task_id)

    async def _wait_for_slot(self) -> bool:
        """At `max_tasks`: wait until a task ends (no reading: TCP backpressure).

        Meanwhile, a connection whose sends make no progress for `send_timeout` is taken
        for gone (false is returned): a client that vanished while every task was
        blocked in a send cannot always be reported by the server then.
        """
        check = min(1.0, self.send_timeout)
        stalled_since: float | None = None
        last_done = -1
        while self._running >= self.max_tasks:
            event = self._slot_free = anyio.Event()
            with anyio.move_on_after(check):
                await event.wait()
            if self._running < self.max_tasks:
                break
            in_flight, done = self._send_progress()
            now = anyio.current_time()
            if not in_flight or done != last_done or stalled_since is None:
                stalled_since, last_done = now, done
            elif now - stalled_since >= self.send_timeout:
                logger.info(
                    "%s: no send progress for %ss with every task waiting; taking the "
                    "client for gone",
                    self._where,
                    self.send_timeout,
                )
                self._client_left(CloseCode.ABNORMAL_CLOSURE)
                return False
        return True

    async def _run_task(self, task_id: str, data: Any) -> None:
        """One message's task: register, handle, and always unregister."""
        websocket = self.websocket
        result = None
        try:
            try:
                if self._has_register:
                    await self._register_background_task(task_id, websocket, data)
                result = await self._background_handler(task_id, websocket, data)
            except _GONE as exc:
                # A send found the client gone: not a bug of the handler.
                self._client_left(getattr(exc, "code", CloseCode.ABNORMAL_CLOSURE))
            except Exception as exc:
                if self.closing and isinstance(exc, OSError):
                    pass  # a racing send after the connection ended
                else:
                    try:
                        await self._handle_background_task_exception(task_id, websocket, exc)
                    except Exception as hook_exc:
                        self._fail(hook_exc, "_handle_background_task_exception")
        finally:
            if self._has_unregister:
                await self._unregister(task_id, websocket, result)
            self._running -= 1
            event = self._slot_free
            if event is not None:
                self._slot_free = None
                event.set()

    async def _unregister(self, task_id: str, websocket: WebSocket, result: Any) -> None:
        """Run the unregister hook shielded from cancellation, within exit_max_delay."""
        try:
            with anyio.move_on_after(self.exit_max_delay, shield=True) as scope:
                await self._unregister_background_task(task_id, websocket, result)
            if scope.cancelled_caught:
                logger.warning(
                    "unregister of task %s on %s ran past exit_max_delay (%ss)",
                    task_id,
                    self._where,
                    self.exit_max_delay,
                )
        except Exception:
            logger.exception("unregister of task %s on %s failed", task_id, self._where)

    async def _guarded(
        self, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...], **kwargs: Any
    ) -> None:
        """Run a task started through `self.task_group` behind the connection's error
        boundary: a client that left ends the connection quietly, any other exception is
        logged and closes it with its code, as a handler's would."""
        try:
            await func(*args, **kwargs)
        except _GONE as exc:
            self._client_left(getattr(exc, "code", CloseCode.ABNORMAL_CLOSURE))
        except Exception as exc:
            if not (self.closing and isinstance(exc, OSError)):
                self._fail(exc, f"task {getattr(func, '__name__', func)!s}")

    # ------------------------------------------------------------------ API 2 support

    def checked_receive(self, receive: Receive) -> Receive:
        """Wrap `receive` for a block that reads the socket itself (the decorator API).

        The block gets what the client sent, within the same limits as the receive loop:
        `max_message_size` (1009), `rate_limit` (1008) and the frame type of `encoding`
        (1003; a binary frame of UTF-8 JSON is handed over as text to a JSON endpoint).
        A message over a limit closes the connection and cancels the block.
        """
        encoding = self.encoding
        max_size = self.max_message_size
        bucket = TokenBucket(*self.rate_limit) if self.rate_limit is not None else None

        owed = self._owed

        async def checked() -> Message:
            if owed:  # un-awaited pushes left moving members full: slow the source
                await pay(owed)
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                # Record only: the block ends by itself, as its reads end.
                code = message.get("code", CloseCode.NO_STATUS_RCVD)
                self._request_close(code, "", send=False, cancel=False)
                return message
            if kind != "websocket.receive" or encoding is None:
                return message
            problem: Rejected | None = None
            if bucket is not None and not bucket.take(anyio.current_time()):
                problem = Rejected(CloseCode.POLICY_VIOLATION, "rate limit")
            else:
                message, problem = _check_frame(message, encoding, max_size)
            if problem is not None:
                self._reject(problem.code, problem.reason)
                await anyio.lowlevel.checkpoint()  # the block is cancelled here
            return message

        return checked


def _check_frame(
    message: Message, encoding: Literal["json", "text", "bytes"], max_size: int
) -> tuple[Message, Rejected | None]:
    """Size and frame type of a message that a caller's block will parse itself."""
    text = message.get("text")
    raw = message.get("bytes") or b""
    size = len(text) if text is not None else len(raw)
    if size > max_size:
        return message, Rejected(CloseCode.MESSAGE_TOO_BIG, "message too big")
    if text is not None:
        if encoding == "bytes":
            return message, Rejected(CloseCode.UNSUPPORTED_DATA, "binary frames expected")
        return message, None
    if encoding == "text":
        return message, Rejected(CloseCode.UNSUPPORTED_DATA, "text frames expected")
    if encoding == "json":  # binary UTF-8 JSON is handed over as the text it holds
        try:
            text = raw.decode("utf-8")
            strict_loads(text)
        except ValueError:
            return message, Rejected(CloseCode.UNSUPPORTED_DATA, "UTF-8 JSON expected")
        return {"type": "websocket.receive", "text": text}, None
    return message, None


def _check_count(cls: type, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{cls.__name__}.{name} must be an int >= 1, not {value!r}")


def _check_seconds(cls: type, name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{cls.__name__}.{name} must be a number of seconds > 0, not {value!r}")


class Lifecycle:
    """One connection's life, as an async context manager.

    Entering opens the connection (checks, `on_connect`) and the connection's task
    groups, and gives whether it is served; the block serves it (the receive loop, or a
    caller's own block); leaving ends it and cleans up, every step bounded in time. A
    refused connection's block is cancelled at its first checkpoint.

    Two task groups, both entered here and left in `__aexit__` through one exit stack:
    the service group holds the outbox writer, the tasks group holds the block and the
    handler tasks. Closing cancels the tasks; the writer then flushes what is queued
    (within `close_timeout`) before it is cancelled and the close frame goes out.
    """

    __slots__ = ("_endpoint", "_owing", "_refused", "_stack", "_websocket")

    def __init__(self, endpoint: BaseWSEndpoint, websocket: WebSocket) -> None:
        self._endpoint = endpoint
        self._websocket = websocket
        self._stack: AsyncExitStack | None = None
        self._refused: anyio.CancelScope | None = None
        self._owing: Any = None

    async def __aenter__(self) -> bool:
        endpoint = self._endpoint
        if not await endpoint._open(self._websocket):
            self._refused = anyio.CancelScope()
            self._refused.cancel()
            self._refused.__enter__()
            return False
        # What this connection's un-awaited pushes owe, seen by its tasks (they inherit it).
        endpoint._owed, self._owing = start_owing()
        stack = self._stack = AsyncExitStack()
        try:
            service = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_exit(self._end_service(service))
            tasks = await stack.enter_async_context(anyio.create_task_group())
        except BaseException:
            await stack.aclose()
            raise
        endpoint._tasks = tasks
        endpoint.task_group = ConnectionTaskGroup(endpoint, tasks)
        if endpoint._state is _State.CONNECTING:
            endpoint._state = _State.OPEN
            endpoint._serving(service)
        else:  # closed while connecting
            tasks.cancel_scope.cancel()
        return True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        endpoint = self._endpoint
        if self._refused is not None:
            return bool(self._refused.__exit__(exc_type, exc, tb)) or isinstance(exc, _GONE)
        assert self._stack is not None
        # What the block raised decides how the connection ends; only a cancellation
        # goes on into the task groups (which absorb their own).
        passed: BaseException | None = None
        suppress = reraise = False
        if exc is None:
            if not endpoint.closing:  # the block ended with the client still there
                endpoint._request_close(CloseCode.NORMAL_CLOSURE, "")
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            passed = exc
        elif isinstance(exc, _GONE):
            endpoint._client_left(getattr(exc, "code", CloseCode.ABNORMAL_CLOSURE))
            suppress = True
        elif isinstance(exc, Exception):
            endpoint._fail(exc, "the connection's block")
            suppress = True
        else:  # KeyboardInterrupt and the like: clean up, then let it go on unchanged
            endpoint._request_close(CloseCode.GOING_AWAY, "server shutting down")
            reraise = True
        assert endpoint._tasks is not None
        endpoint._tasks.cancel_scope.cancel()
        try:
            absorbed = await self._stack.__aexit__(
                type(passed) if passed else None, passed, passed.__traceback__ if passed else None
            )
        except anyio.get_cancelled_exc_class():
            if endpoint._close_code is None:
                logger.info("server shutting down; closing %s with 1001", endpoint._where)
            endpoint._request_close(CloseCode.GOING_AWAY, "server shutting down", drain=False)
            raise
        finally:
            endpoint._tasks = endpoint.task_group = None
            stop_owing(self._owing)
            await self._clean_up()
        return not reraise and (suppress or bool(absorbed))

    def _end_service(self, service: TaskGroup) -> Callable[..., Awaitable[bool]]:
        """The step between the two task groups: flush the outbox, then stop the writer."""

        async def end(
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> bool:
            endpoint = self._endpoint
            if exc is None and endpoint._drain:
                with anyio.move_on_after(endpoint._close_bound):
                    await endpoint._flush()
            service.cancel_scope.cancel()
            return False

        return end

    async def _clean_up(self) -> None:
        """After every task has ended: close frame, rooms, `on_disconnect`; each bounded."""
        endpoint = self._endpoint
        websocket = self._websocket
        endpoint._state = _State.CLOSED
        code = endpoint._close_code
        if code is None:  # pragma: no cover - every path records a code
            code = endpoint._close_code = CloseCode.NORMAL_CLOSURE
        if endpoint._send_close and websocket.application_state is WebSocketState.CONNECTED:
            with anyio.move_on_after(endpoint._close_bound, shield=True):
                try:
                    await websocket.close(code, endpoint._close_reason)
                    await _discard_until_closed(endpoint.receive)
                except _SEND_FAILED:
                    pass
        with anyio.move_on_after(endpoint.exit_max_delay, shield=True) as scope:
            try:
                await endpoint._ended()
            except Exception:
                logger.exception("cleanup of %s failed", endpoint._where)
        _warn_overrun(scope, "cleanup", endpoint)
        with anyio.move_on_after(endpoint.exit_max_delay, shield=True) as scope:
            try:
                await endpoint.on_disconnect(websocket, code)
            except Exception:
                logger.exception("on_disconnect of %s failed", endpoint._where)
        _warn_overrun(scope, "on_disconnect", endpoint)
        endpoint._uncount()


async def _discard_until_closed(receive: Receive) -> None:
    """After the server's close frame: read until the client's (RFC 6455 section 7.1.1)."""
    while (await receive())["type"] != "websocket.disconnect":
        pass


def _warn_overrun(scope: anyio.CancelScope, what: str, endpoint: BaseWSEndpoint) -> None:
    if scope.cancelled_caught:
        logger.warning(
            "%s of %s ran past exit_max_delay (%ss)",
            what,
            endpoint._where,
            endpoint.exit_max_delay,
        )


class ConnectionTaskGroup:
    """The connection's task group as user code sees it (`self.task_group`).

    Tasks started through it run in the connection's anyio task group, so they end with
    the connection, and behind its error boundary: a client that left ends the
    connection quietly, any other exception is logged and closes the connection with
    its code (1011 for an unexpected one), and none reaches the ASGI server.

    Attributes:
        cancel_scope: The task group's cancel scope (cancelling it ends the connection).
    """

    __slots__ = ("_endpoint", "_task_group", "cancel_scope")

    def __init__(self, endpoint: BaseWSEndpoint, task_group: TaskGroup) -> None:
        self._endpoint = endpoint
        self._task_group = task_group
        self.cancel_scope = task_group.cancel_scope

    def start_soon(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        """Start `func(*args)` in the connection's task group."""
        self._task_group.start_soon(
            self._endpoint._guarded, func, args, name=name or getattr(func, "__name__", None)
        )

    async def start(
        self, func: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Start `func(*args, task_status=...)` and wait until it calls `task_status.started()`."""

        async def run(*, task_status: TaskStatus[Any]) -> None:
            await self._endpoint._guarded(func, args, task_status=task_status)

        return await self._task_group.start(run, name=name or getattr(func, "__name__", None))
