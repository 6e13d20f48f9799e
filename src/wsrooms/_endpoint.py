"""`BaseWSEndpoint`: one task group per connection, one background task per message.

The connection's life, in order:

1. `on_connect` (default: `accept`, choosing a subprotocol). An exception or a refusal
   before accept answers the handshake with HTTP 403.
2. The receive loop, the only reader of the socket, runs in the host task inside the
   connection's task group. Each decoded message is handed to `_run_task` in a new child
   task; at `max_tasks` running tasks the loop stops reading until one ends.
3. The connection ends when the client leaves, when wsrooms or user code closes it, or when
   the server cancels the app. Every task is cancelled and unregistered (shielded, bounded
   by `exit_max_delay`), the close frame is sent if the server closed, and `on_disconnect`
   runs once.

Expected events (a client leaving, bad input, a handled error, a refusal) are logged and
never raised to the ASGI server.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, ClassVar, Literal

import anyio
from anyio.abc import TaskGroup, TaskStatus
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import (
    WebSocket,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketState,
)

from ._codec import JsonDumps, JsonLoads, dumps, encode
from ._exceptions import CloseCode, InvalidMessage, JoinRefused

__all__ = ["BaseWSEndpoint"]

logger = logging.getLogger("wsrooms")

Encoding = Literal["json", "text", "bytes"] | None
_ENCODINGS = ("json", "text", "bytes", None)

#: How long a close frame may wait for the socket (uvicorn awaits a writable socket even
#: for the close frame, so a client that reads nothing would otherwise hold teardown).
CLOSE_TIMEOUT = 5.0
#: The same bound for a member dropped as a slow consumer: its socket is known not to drain.
SLOW_CLOSE_TIMEOUT = 1.0

# Errors that mean "the client is gone", raised by a send on a dead socket. They end the
# connection quietly instead of reaching the exception hook as a bug.
_GONE = (WebSocketDisconnect, WebSocketDisconnected)


class _Refused(Exception):
    """Raised inside `on_connect` to refuse the handshake (HTTP 403)."""


def _close_for(exc: BaseException) -> tuple[int, str, int]:
    """Map an exception to (close code, reason sent, log level), as SPEC §1.4 lays out."""
    if isinstance(exc, InvalidMessage):
        return CloseCode.INVALID_DATA, exc.reason, logging.INFO
    if isinstance(exc, JoinRefused):
        return CloseCode.POLICY_VIOLATION, "join refused", logging.INFO
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
    per connection. Override `_background_handler` (and, as needed, the other hooks).

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
        subprotocols: Subprotocols the endpoint speaks (default none). The first the client
            offers that is in this list is chosen; if the endpoint lists some and the
            client offers none of them, the handshake is refused (HTTP 403).
        json_loads: Decoder for `"json"` frames (stdlib `json.loads` by default).
        json_dumps: Encoder for JSON messages; may return `str` or UTF-8 `bytes`. JSON
            always goes out as a text frame.
        task_group: The connection's task group while it runs, else `None`: tasks
            started with `self.task_group.start_soon(...)` end with the connection and
            share its error boundary (see `ConnectionTaskGroup`).
        websocket: The connection's Starlette `WebSocket`.
    """

    encoding: ClassVar[Encoding] = "json"
    # Limits
    max_tasks: ClassVar[int] = 32
    max_message_size: ClassVar[int] = 1024 * 1024
    # Timeouts
    exit_max_delay: ClassVar[float] = 60.0
    idle_timeout: ClassVar[float | None] = None
    # Protocol
    subprotocols: ClassVar[Sequence[str]] = ()
    # Plain callables, not methods (so no ClassVar: mypy would bind them to `self`).
    json_loads: JsonLoads = staticmethod(json.loads)
    json_dumps: JsonDumps = staticmethod(dumps)

    websocket: WebSocket
    task_group: ConnectionTaskGroup | None
    _has_register: ClassVar[bool] = False
    _has_unregister: ClassVar[bool] = False
    _tg: TaskGroup | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # `json_dumps = json.dumps` in a class body would bind as a method: keep it plain.
        for name in ("json_loads", "json_dumps"):
            value = cls.__dict__.get(name)
            if isinstance(value, types.FunctionType):
                setattr(cls, name, staticmethod(value))
        cls._check_options()
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
            value = getattr(cls, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{cls.__name__}.{name} must be an int >= 1, not {value!r}")
        if not isinstance(cls.exit_max_delay, int | float) or cls.exit_max_delay <= 0:
            raise ValueError(
                f"{cls.__name__}.exit_max_delay must be a number of seconds > 0, "
                f"not {cls.exit_max_delay!r}"
            )
        idle = cls.idle_timeout
        if idle is not None and (not isinstance(idle, int | float) or idle <= 0):
            raise ValueError(
                f"{cls.__name__}.idle_timeout must be None or seconds > 0, not {idle!r}"
            )
        if isinstance(cls.subprotocols, str):
            raise ValueError(
                f"{cls.__name__}.subprotocols must be a sequence of names, not one string: "
                f"write ({cls.subprotocols!r},)"
            )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise TypeError(f"{type(self).__name__} serves WebSocket scopes, not {scope['type']!r}")
        self.scope = scope
        self.receive = receive
        self.send = send
        self.task_group = None
        self._tg = None
        self._accepted = False
        self._ending = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._send_close = False
        self._close_timeout = CLOSE_TIMEOUT
        self._running = 0
        self._slot_free: anyio.Event | None = None
        self._task_count = 0

    def __await__(self) -> Generator[Any, None, None]:
        return self.dispatch().__await__()

    async def dispatch(self) -> None:
        """Serve the connection from handshake to teardown (the ASGI entry point)."""
        await self._serve(WebSocket(self.scope, receive=self.receive, send=self.send))

    # ------------------------------------------------------------------ hooks

    async def on_connect(self, websocket: WebSocket) -> None:
        """Run before the receive loop; the default accepts the connection.

        Before accept, raising here (or returning without accepting) refuses the handshake:
        the client gets HTTP 403 and `on_disconnect` does not run. After accept, an
        exception closes the connection with its code (SPEC §1.4) and `on_disconnect` runs.
        """
        await self.accept(websocket)

    async def accept(self, websocket: WebSocket) -> None:
        """Accept the connection, choosing a subprotocol (see `subprotocols`).

        When the endpoint lists subprotocols and the client offers none of them, the
        handshake is refused instead (HTTP 403, logged at INFO) and the rest of
        `on_connect` does not run.
        """
        subprotocol = None
        if self.subprotocols:
            offered = websocket.scope.get("subprotocols") or ()
            subprotocol = next((p for p in offered if p in self.subprotocols), None)
            if subprotocol is None:
                logger.info(
                    "refusing %s: client offered subprotocols %s, endpoint speaks %s",
                    websocket.url.path,
                    list(offered),
                    list(self.subprotocols),
                )
                raise _Refused("no common subprotocol")
        await websocket.accept(subprotocol=subprotocol)
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
            websocket.url.path,
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
        await self._send_event(encode(message, self.json_dumps))

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection from the server side.

        Every task of the connection is cancelled and unregistered, then the close frame is
        sent and `on_disconnect` runs with `code`. Called from one of the connection's own
        tasks, that task is cancelled at its next checkpoint.
        """
        self._request_close(code, reason)

    # ------------------------------------------------------------------ internals

    async def _send_event(self, event: Message) -> None:
        try:
            await self.send(event)
        except (OSError, RuntimeError) as exc:
            # The event is well formed, so a failing send means the server has closed
            # the socket: OSError when the client vanished, RuntimeError (uvicorn) when
            # it already answered the client's close frame.
            raise WebSocketDisconnect(CloseCode.ABNORMAL_CLOSURE) from exc

    def _request_close(self, code: int, reason: str, *, send: bool = True) -> None:
        """Record why the connection ends (first reason wins) and cancel its tasks.

        Synchronous, so that any code path (an outbox overflow, a hub shutting down) can
        end a connection at once without awaiting its socket.
        """
        if self._close_code is None:
            self._close_code = int(code)
            self._close_reason = _cut_reason(reason)
            self._send_close = send
        self._begin_ending()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _begin_ending(self) -> None:
        """Called as soon as the connection is known to end, and again on each later close
        request (hook for rooms; `self._ending` tells a repeat)."""
        self._ending = True

    def _on_task_group_started(self, task_group: TaskGroup) -> None:
        """Start the connection's own long-lived tasks (hook for rooms)."""

    async def _flush(self) -> None:
        """Send what is still queued, before the server's close frame (hook for rooms)."""

    async def _on_ended(self) -> None:
        """Clean up after every task has ended, before `on_disconnect` (hook for rooms)."""

    async def _serve(self, websocket: WebSocket) -> None:
        """Run one connection, API 1 style: wsrooms reads the socket until it ends."""
        if not await self._open(websocket):
            return
        try:
            async with anyio.create_task_group() as tg:
                self._started(tg)
                if not self._ending:
                    try:
                        await self._receive_loop(websocket)
                    except Exception as exc:
                        self._fail(exc, "receive loop")
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            self._cancelled_from_outside()
            raise
        finally:
            self._tg = self.task_group = None
            await self._finish(websocket)

    async def _enter(self, websocket: WebSocket) -> None:
        """Open the connection for a caller that reads the socket itself (Room API 2).

        The caller's code then runs inside the connection's task group, so ending the
        connection (a slow consumer, a hub shutting down) cancels it too; `_exit` ends it.
        """
        # The caller reads through `websocket`: note the client's close code on the way.
        receive = websocket._receive

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect" and self._close_code is None:
                # Record only: the caller's block goes on to its end (no cancellation).
                self._close_code = message.get("code", CloseCode.NO_STATUS_RCVD)
                self._begin_ending()
            return message

        websocket._receive = watched_receive
        if not await self._open(websocket):
            return
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._started(task_group)
        if self._ending:
            task_group.cancel_scope.cancel()

    async def _exit(self, exc: BaseException | None) -> bool:
        """End a connection opened by `_enter`; true to suppress the caller's exception.

        Expected endings (the client left, the connection was closed) are absorbed; an
        unexpected exception is logged and closes with 1011, as a handler's would.
        """
        task_group = self._tg
        if task_group is None:  # refused at the handshake
            return isinstance(exc, _GONE)
        passed: BaseException | None = None
        suppress = reraise = False
        if exc is None:
            if not self._ending:  # the caller left the block with the client still there
                self._request_close(CloseCode.NORMAL_CLOSURE, "")
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            passed = exc  # the task group's own cancel scope absorbs its cancellation
        elif isinstance(exc, _GONE):
            self._client_left(getattr(exc, "code", CloseCode.ABNORMAL_CLOSURE))
            suppress = True
        elif isinstance(exc, Exception):
            self._fail(exc, "the connection's block")
            suppress = True
        else:  # KeyboardInterrupt and the like: clean up, then let it go on unchanged
            self._request_close(CloseCode.GOING_AWAY, "server shutting down")
            reraise = True
        task_group.cancel_scope.cancel()
        try:
            absorbed = await task_group.__aexit__(
                type(passed) if passed else None, passed, passed.__traceback__ if passed else None
            )
        except anyio.get_cancelled_exc_class():
            self._cancelled_from_outside()
            raise
        finally:
            self._tg = self.task_group = None
            await self._finish(self.websocket)
        return not reraise and (suppress or bool(absorbed))

    async def _open(self, websocket: WebSocket) -> bool:
        """Run `on_connect`; true when the connection is accepted and must be served.

        A connection refused at the handshake gets no `on_disconnect`, but whatever it
        did before the refusal (rooms joined before accept) is undone.
        """
        self.websocket = websocket
        if await self._handshake(websocket):
            return True
        self._begin_ending()
        with anyio.CancelScope(shield=True):
            await self._on_ended()
        return False

    async def _handshake(self, websocket: WebSocket) -> bool:
        try:
            await self.on_connect(websocket)
        except Exception as exc:
            if websocket.application_state is WebSocketState.CONNECTING:
                await self._refuse(websocket, exc)
                return False
            if not self._accepted:
                return False
            self._fail(exc, "on_connect")
            return True
        if websocket.application_state is WebSocketState.CONNECTING:
            logger.info("refusing %s: on_connect did not accept", websocket.url.path)
            await websocket.close(CloseCode.POLICY_VIOLATION)
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
        """Answer the handshake with HTTP 403 after `on_connect` raised before accept."""
        if isinstance(exc, _Refused | JoinRefused):
            logger.info("refused %s: %s", websocket.url.path, exc)
        else:
            logger.error("on_connect of %s failed; refusing", websocket.url.path, exc_info=exc)
        await websocket.close(CloseCode.POLICY_VIOLATION)

    def _fail(self, exc: Exception, where: str) -> None:
        """Log an unhandled exception of an accepted connection and close it by SPEC §1.4."""
        code, reason, level = _close_for(exc)
        logger.log(
            level,
            "%s of %s failed (%s); closing with %d",
            where,
            self.websocket.url.path,
            type(exc).__name__,
            code,
            exc_info=exc if level >= logging.ERROR else None,
        )
        self._request_close(code, reason)

    def _cancelled_from_outside(self) -> None:
        """The server cancelled the app (shutdown): close with 1001 if nothing else did."""
        if self._close_code is None:
            logger.info("server shutting down; closing %s with 1001", self.websocket.url.path)
        self._request_close(CloseCode.GOING_AWAY, "server shutting down")

    async def _receive_loop(self, websocket: WebSocket) -> None:
        """Read the socket and start one task per message, until the connection ends."""
        receive = websocket.receive
        encoding = self.encoding
        max_size = self.max_message_size
        max_tasks = self.max_tasks
        idle = self.idle_timeout
        loads = self.json_loads
        start_soon = self._task_group().start_soon
        run_task = self._run_task
        while True:
            while self._running >= max_tasks:
                # At the limit: stop reading until a task ends (TCP backpressure).
                event = self._slot_free = anyio.Event()
                await event.wait()
            if idle is None:
                message = await receive()
            else:
                with anyio.move_on_after(idle) as idle_scope:
                    message = await receive()
                if idle_scope.cancelled_caught:
                    logger.info("closing %s: idle for %ss", websocket.url.path, idle)
                    self._request_close(CloseCode.NORMAL_CLOSURE, "idle timeout")
                    return
            if message["type"] == "websocket.disconnect":
                self._client_left(message.get("code", CloseCode.NO_STATUS_RCVD))
                return
            text = message.get("text")
            if text is not None:
                if len(text) > max_size:
                    return self._reject(CloseCode.MESSAGE_TOO_BIG, "message too big", len(text))
                if encoding == "json":
                    try:
                        data = loads(text)
                    except ValueError:
                        return self._reject(CloseCode.INVALID_DATA, "invalid JSON", len(text))
                elif encoding == "bytes":
                    return self._reject(
                        CloseCode.UNSUPPORTED_DATA, "binary frames expected", len(text)
                    )
                elif encoding == "text":
                    data = text
                else:
                    data = message
            else:
                raw = message.get("bytes") or b""
                if len(raw) > max_size:
                    return self._reject(CloseCode.MESSAGE_TOO_BIG, "message too big", len(raw))
                if encoding == "json":
                    try:
                        data = loads(raw)
                    except ValueError:  # includes UnicodeDecodeError
                        return self._reject(CloseCode.INVALID_DATA, "invalid JSON", len(raw))
                elif encoding == "text":
                    return self._reject(
                        CloseCode.UNSUPPORTED_DATA, "text frames expected", len(raw)
                    )
                elif encoding == "bytes":
                    data = raw
                else:
                    data = message
            self._task_count += 1
            self._running += 1
            task_id = str(self._task_count)
            start_soon(run_task, task_id, data, name=task_id)

    def _task_group(self) -> TaskGroup:
        assert self._tg is not None
        return self._tg

    def _started(self, task_group: TaskGroup) -> None:
        """The connection's task group is open: expose it, start the connection's tasks."""
        self._tg = task_group
        self.task_group = ConnectionTaskGroup(self, task_group)
        self._on_task_group_started(task_group)

    async def _guarded(
        self, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...], **kwargs: Any
    ) -> None:
        """Run a task started through `self.task_group` behind the connection's error
        boundary: a client that left ends the connection quietly, any other exception is
        logged and closes it with its code (SPEC §1.4), as a handler's would."""
        try:
            await func(*args, **kwargs)
        except _GONE as exc:
            self._client_left(getattr(exc, "code", CloseCode.ABNORMAL_CLOSURE))
        except Exception as exc:
            if not (self._ending and isinstance(exc, OSError)):
                self._fail(exc, f"task {getattr(func, '__name__', func)!s}")

    def _reject(self, code: int, reason: str, size: int) -> None:
        logger.info(
            "closing %s with %d: %s (%d in frame)", self.websocket.url.path, code, reason, size
        )
        self._request_close(code, reason)

    def _client_left(self, code: int) -> None:
        """The client closed or vanished: end the connection with the client's code."""
        logger.debug("client left %s with %s", self.websocket.url.path, code)
        self._request_close(code, "", send=False)

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
                if self._ending and isinstance(exc, OSError):
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
                    websocket.url.path,
                    self.exit_max_delay,
                )
        except Exception:
            logger.exception("unregister of task %s on %s failed", task_id, websocket.url.path)

    async def _finish(self, websocket: WebSocket) -> None:
        """Teardown after every task has ended: close frame, room cleanup, on_disconnect."""
        with anyio.CancelScope(shield=True):
            if self._close_code is None:  # pragma: no cover - every path records a code
                self._request_close(CloseCode.NORMAL_CLOSURE, "")
            code = self._close_code
            assert code is not None
            if self._send_close and websocket.application_state is WebSocketState.CONNECTED:
                with anyio.move_on_after(self._close_timeout):
                    try:
                        await self._flush()
                        await websocket.close(code, self._close_reason)
                    except (OSError, *_GONE):
                        pass
            try:
                await self._on_ended()
            except Exception:
                logger.exception("cleanup of %s failed", websocket.url.path)
            with anyio.move_on_after(self.exit_max_delay) as scope:
                try:
                    await self.on_disconnect(websocket, code)
                except Exception:
                    logger.exception("on_disconnect of %s failed", websocket.url.path)
            if scope.cancelled_caught:
                logger.warning(
                    "on_disconnect of %s ran past exit_max_delay (%ss)",
                    websocket.url.path,
                    self.exit_max_delay,
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
