"""BaseWSEndpoint on a fake ASGI peer: hooks, guarantees, limits and close codes (SPEC §1)."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
from starlette.types import Message
from starlette.websockets import WebSocket

from tests._fake import FakePeer, serving
from wsrooms import BaseWSEndpoint, CloseCode, InvalidMessage, JoinRefused

pytestmark = pytest.mark.anyio


class Recorder(BaseWSEndpoint):
    """Records hook calls in a list shared by the class (reset per test)."""

    events: list[tuple[Any, ...]] = []

    async def _register_background_task(
        self, task_id: str, websocket: WebSocket, data: Any
    ) -> None:
        self.events.append(("register", task_id, data))

    async def _unregister_background_task(
        self, task_id: str, websocket: WebSocket, task_result: Any
    ) -> None:
        self.events.append(("unregister", task_id, task_result))

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.events.append(("disconnect", close_code))


class Forever(Recorder):
    """Every message starts a task that runs until it is cancelled."""

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
        await anyio.sleep_forever()


def make(base: type[Recorder] = Recorder, **attrs: Any) -> type[Recorder]:
    attrs.setdefault("events", [])
    return type("Endpoint", (base,), attrs)


async def test_echo_json() -> None:
    """A JSON message is decoded, handled in a task, and the reply sent as a text frame."""

    class Echo(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await websocket.send_json({"echo": data, "task": task_id})

    peer = FakePeer()
    async with serving(Echo, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json({"a": 1})
        await peer.send_json([2])
        assert await peer.next_json() == {"echo": {"a": 1}, "task": "1"}
        assert await peer.next_json() == {"echo": [2], "task": "2"}
        await peer.disconnect()


async def test_three_handlers_run_concurrently() -> None:
    """Three handlers finish together: each waits until all three have started."""
    started = 0
    all_started = anyio.Event()

    class Concurrent(Recorder):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            nonlocal started
            started += 1
            if started == 3:
                all_started.set()
            await all_started.wait()  # would deadlock if handlers ran one after another
            return f"done {data}"

    endpoint = make(Concurrent)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        for i in range(3):
            await peer.send_json(i)
        with anyio.fail_after(5):
            await all_started.wait()
        await peer.disconnect()
    results = sorted(e[2] for e in endpoint.events if e[0] == "unregister")
    assert results == ["done 0", "done 1", "done 2"]


async def test_unregister_records_results_and_none() -> None:
    """Unregister receives each handler's result; a handler returning None gives None."""

    class Results(Recorder):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            await websocket.send_json("ok")
            return data if data != "nothing" else None

    endpoint = make(Results)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        for item in ("x", "nothing", "y"):
            await peer.send_json(item)
            assert await peer.next_json() == "ok"
        await peer.disconnect()
    recorded = {e[1]: e[2] for e in endpoint.events if e[0] == "unregister"}
    assert recorded == {"1": "x", "2": None, "3": "y"}
    assert [e[2] for e in endpoint.events if e[0] == "unregister" and e[2] is not None] == [
        "x",
        "y",
    ]


async def test_failing_handler_closes_1011_after_siblings_unregister(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing handler: siblings are cancelled and unregistered, then close 1011, no text."""
    siblings_running = anyio.Event()
    running = 0

    class Failing(Recorder):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            nonlocal running
            if data == "boom":
                await siblings_running.wait()
                raise ValueError("secret detail")
            running += 1
            if running == 2:
                siblings_running.set()
            await anyio.sleep_forever()

    endpoint = make(Failing)
    peer = FakePeer()
    order: list[Any] = []
    peer.on_send = lambda m: order.append(("sent", m["type"]))
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        for item in ("inf", "inf", "boom"):
            await peer.send_json(item)
        code, reason = await peer.expect_close()
    assert (code, reason) == (CloseCode.INTERNAL_ERROR, "internal error")
    assert "secret" not in json.dumps(peer.sent)
    unregistered = [e[1] for e in endpoint.events if e[0] == "unregister"]
    assert sorted(unregistered) == ["1", "2", "3"]
    assert endpoint.events[-1] == ("disconnect", CloseCode.INTERNAL_ERROR)
    errors = [r for r in caplog.records if r.name == "wsrooms" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None


async def test_close_frame_follows_every_unregister() -> None:
    """The close frame of a failed task is sent only after every sibling unregistered."""
    seen_at_close: list[int] = []

    class Failing(Recorder):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            if data == "boom":
                raise RuntimeError("x")
            await anyio.sleep_forever()

    endpoint = make(Failing)
    peer = FakePeer()

    def on_send(message: Message) -> None:
        if message["type"] == "websocket.close":
            seen_at_close.append(sum(1 for e in endpoint.events if e[0] == "unregister"))

    peer.on_send = on_send
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json("forever")
        await peer.send_json("forever")
        await anyio.wait_all_tasks_blocked()
        await peer.send_json("boom")
        await peer.expect_close()
    assert seen_at_close == [3]


async def test_infinite_tasks_cancelled_on_client_close_and_unregistered() -> None:
    """On client close every infinite task is cancelled, unregistered, then on_disconnect."""

    class Announcing(Forever):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            await websocket.send_json(f"started {task_id}")
            await super()._background_handler(task_id, websocket, data)

    endpoint = make(Announcing)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        for _ in range(3):
            await peer.send_json("go")
        for _ in range(3):
            await peer.next_json()
        await peer.disconnect(4001)
    kinds = [e[0] for e in endpoint.events]
    assert kinds.count("unregister") == 3
    assert endpoint.events[-1] == ("disconnect", 4001)
    assert all(e[2] is None for e in endpoint.events if e[0] == "unregister")


async def test_finite_periodic_task_streams_in_order() -> None:
    """A finite periodic task sends its messages in order, then unregisters its result."""

    class Periodic(Recorder):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            for i in range(data["count"]):
                await self.send_message({"tick": i})
                await anyio.lowlevel.checkpoint()
            return "finished"

    endpoint = make(Periodic)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json({"count": 20})
        assert [await peer.next_json() for _ in range(20)] == [{"tick": i} for i in range(20)]
        await peer.disconnect()
    assert ("unregister", "1", "finished") in endpoint.events


@pytest.mark.parametrize(
    ("encoding", "frame", "code", "reason"),
    [
        ("json", ("text", "{not json"), CloseCode.INVALID_DATA, "invalid JSON"),
        ("json", ("bytes", b"\xff\xfe"), CloseCode.INVALID_DATA, "invalid JSON"),
        ("text", ("bytes", b"abc"), CloseCode.UNSUPPORTED_DATA, "text frames expected"),
        ("bytes", ("text", "abc"), CloseCode.UNSUPPORTED_DATA, "binary frames expected"),
    ],
)
async def test_bad_frames_close_with_their_code(
    encoding: str, frame: tuple[str, Any], code: int, reason: str
) -> None:
    """Malformed JSON closes with 1007; a frame of the wrong kind with 1003."""
    endpoint = make(Recorder, encoding=encoding)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        kind, payload = frame
        if kind == "text":
            await peer.send_text(payload)
        else:
            await peer.send_bytes(payload)
        assert await peer.expect_close() == (code, reason)
    assert endpoint.events == [("disconnect", code)]


@pytest.mark.parametrize("kind", ["text", "bytes"])
async def test_message_over_max_size_closes_1009(kind: str) -> None:
    """A message over max_message_size closes with 1009 before any handler runs."""
    endpoint = make(Recorder, encoding="text" if kind == "text" else "bytes", max_message_size=10)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        if kind == "text":
            await peer.send_text("x" * 11)
        else:
            await peer.send_bytes(b"x" * 11)
        code, _ = await peer.expect_close()
    assert code == CloseCode.MESSAGE_TOO_BIG
    assert not [e for e in endpoint.events if e[0] == "register"]


async def test_binary_json_frames_are_accepted() -> None:
    """With encoding "json", a binary frame holding UTF-8 JSON is decoded like text."""

    class Echo(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.send_message(data)

    peer = FakePeer()
    async with serving(Echo, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_bytes(json.dumps({"é": 1}).encode())
        assert await peer.next_json() == {"é": 1}
        await peer.disconnect()


async def test_raw_encoding_passes_the_asgi_message() -> None:
    """With encoding None the handler gets the raw ASGI message, text or bytes."""
    got: list[Any] = []

    class Raw(BaseWSEndpoint):
        encoding = None

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            got.append(data)
            await self.send_message("ok")

    peer = FakePeer()
    async with serving(Raw, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_text("t")
        await peer.next()
        await peer.send_bytes(b"b")
        await peer.next()
        await peer.disconnect()
    assert [m.get("text") or m.get("bytes") for m in got] == ["t", b"b"]


async def test_flood_is_bounded_by_max_tasks_without_drops() -> None:
    """At max_tasks the receive loop stops reading; when tasks end every message is handled."""
    release = anyio.Event()
    running = peak = 0
    handled: list[int] = []

    class Slow(BaseWSEndpoint):
        max_tasks = 4

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            handled.append(data)
            running -= 1

    peer = FakePeer()
    async with serving(Slow, peer):
        await peer.connect()
        await peer.expect_accept()
        for i in range(50):
            await peer.send_json(i)
        await anyio.wait_all_tasks_blocked()
        # Four tasks run; the rest wait unread in the transport (backpressure).
        assert running == 4
        assert peer.queued_to_app() == 46
        release.set()
        await anyio.wait_all_tasks_blocked()
        await peer.disconnect()
    assert peak == 4
    assert sorted(handled) == list(range(50))


async def test_register_error_runs_hook_and_unregister() -> None:
    """A register hook that raises: the exception hook runs, then unregister with None."""
    hooked: list[str] = []

    class BadRegister(Recorder):
        async def _register_background_task(
            self, task_id: str, websocket: WebSocket, data: Any
        ) -> None:
            raise KeyError("register")

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            raise AssertionError("handler must not run")  # pragma: no cover

        async def _handle_background_task_exception(
            self, task_id: str, websocket: WebSocket, exc: Exception
        ) -> None:
            hooked.append(type(exc).__name__)
            await websocket.send_json("handled")

    endpoint = make(BadRegister)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
        assert await peer.next_json() == "handled"
        await peer.disconnect()
    assert hooked == ["KeyError"]
    assert ("unregister", "1", None) in endpoint.events


async def test_handled_error_keeps_connection_running() -> None:
    """An exception hook that returns normally keeps the connection and other tasks alive."""

    class Tolerant(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            if data == "bad":
                raise ValueError("bad")
            await websocket.send_json(data)

        async def _handle_background_task_exception(
            self, task_id: str, websocket: WebSocket, exc: Exception
        ) -> None:
            await websocket.send_json({"error": str(exc)})

    peer = FakePeer()
    async with serving(Tolerant, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json("bad")
        assert await peer.next_json() == {"error": "bad"}
        await peer.send_json("good")
        assert await peer.next_json() == "good"
        await peer.disconnect()


async def test_unregister_past_exit_max_delay_is_logged_and_error_still_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unregister slower than exit_max_delay is cut and logged; the 1011 close stands."""

    class SlowUnregister(Recorder):
        exit_max_delay = 0.05

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            raise RuntimeError("handler failed")

        async def _unregister_background_task(
            self, task_id: str, websocket: WebSocket, task_result: Any
        ) -> None:
            await anyio.sleep_forever()

    endpoint = make(SlowUnregister)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
        assert await peer.expect_close() == (CloseCode.INTERNAL_ERROR, "internal error")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("exit_max_delay" in r.getMessage() for r in warnings)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("RuntimeError" in r.getMessage() for r in errors)
    assert endpoint.events[-1] == ("disconnect", CloseCode.INTERNAL_ERROR)


async def test_client_vanishing_cancels_tasks_and_runs_on_disconnect() -> None:
    """A client that vanishes (1006, no close frame): tasks cancelled, on_disconnect(1006)."""

    endpoint = make(Forever)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
        await anyio.wait_all_tasks_blocked()
        await peer.disconnect(CloseCode.ABNORMAL_CLOSURE)
    assert endpoint.events[-2:] == [("unregister", "1", None), ("disconnect", 1006)]
    assert not [m for m in peer.sent if m["type"] == "websocket.close"]


@pytest.mark.parametrize(
    ("exc", "code", "reason", "level"),
    [
        (InvalidMessage("field 'x' is required"), 1007, "field 'x' is required", logging.INFO),
        (JoinRefused("vip"), 1008, "join refused", logging.INFO),
        (LookupError("private"), 1011, "internal error", logging.ERROR),
        (NotImplementedError(), 1011, "internal error", logging.ERROR),
    ],
)
async def test_exception_close_codes(
    exc: Exception, code: int, reason: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Each error maps to its close code and reason, logged at its level."""
    caplog.set_level(logging.DEBUG, "wsrooms")

    class Raising(Recorder):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            raise exc

    endpoint = make(Raising)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
        assert await peer.expect_close() == (code, reason)
    records = [r for r in caplog.records if "closing with" in r.getMessage()]
    assert [r.levelno for r in records] == [level]


async def test_default_handler_raises_not_implemented_as_1011() -> None:
    """A subclass that does not override the handler gets 1011 on its first message."""
    peer = FakePeer()
    async with serving(BaseWSEndpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
        assert await peer.expect_close() == (1011, "internal error")


async def test_idle_timeout_closes_1000() -> None:
    """No inbound message for idle_timeout seconds closes with 1000 "idle timeout"."""
    endpoint = make(Recorder, idle_timeout=0.05)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        assert await peer.expect_close() == (1000, "idle timeout")
    assert endpoint.events == [("disconnect", 1000)]


async def test_idle_timer_restarts_on_each_message() -> None:
    """Messages arriving within idle_timeout keep the connection open."""

    class Echo(Recorder):
        idle_timeout = 5.0

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            await self.send_message(data)

    endpoint = make(Echo)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        for i in range(3):
            await peer.send_json(i)
            assert await peer.next_json() == i
        await peer.disconnect()
    assert endpoint.events[-1] == ("disconnect", 1000)


async def test_refusal_in_on_connect_closes_before_accept(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in on_connect before accept answers the handshake with a close (HTTP 403)."""

    class Refusing(Recorder):
        async def on_connect(self, websocket: WebSocket) -> None:
            raise JoinRefused("room")

    endpoint = make(Refusing)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        message = await peer.next()
    assert message["type"] == "websocket.close"
    assert endpoint.events == []  # no on_disconnect for a connection never accepted
    assert [r.levelno for r in caplog.records if r.name == "wsrooms"] == [logging.INFO]


async def test_unexpected_on_connect_error_is_logged_and_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in on_connect is logged with its traceback and refuses the handshake."""

    class Broken(Recorder):
        async def on_connect(self, websocket: WebSocket) -> None:
            raise ZeroDivisionError

    peer = FakePeer()
    async with serving(make(Broken), peer):
        await peer.connect()
        assert (await peer.next())["type"] == "websocket.close"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert errors[0].exc_info is not None


async def test_on_connect_without_accept_refuses() -> None:
    """on_connect that neither accepts nor closes refuses the handshake."""

    class Silent(Recorder):
        async def on_connect(self, websocket: WebSocket) -> None:
            pass

    peer = FakePeer()
    async with serving(make(Silent), peer):
        await peer.connect()
        assert (await peer.next())["type"] == "websocket.close"


async def test_error_after_accept_in_on_connect_closes_and_disconnects() -> None:
    """An exception in on_connect after accept closes with its code and runs on_disconnect."""

    class Late(Recorder):
        async def on_connect(self, websocket: WebSocket) -> None:
            await self.accept(websocket)
            raise InvalidMessage("bad token")

    endpoint = make(Late)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        assert await peer.expect_close() == (1007, "bad token")
    assert endpoint.events == [("disconnect", 1007)]


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(("b", "a"), "b"), (("x", "a"), "a"), (("x",), None)],
)
async def test_subprotocol_negotiation(offered: tuple[str, ...], chosen: str | None) -> None:
    """The first offered subprotocol the endpoint speaks is chosen; none in common refuses."""
    endpoint = make(Recorder, subprotocols=("a", "b"))
    peer = FakePeer(subprotocols=offered)
    async with serving(endpoint, peer):
        await peer.connect()
        message = await peer.next()
        if chosen is None:
            assert message["type"] == "websocket.close"
        else:
            assert message == {"type": "websocket.accept", "subprotocol": chosen, "headers": []}
            await peer.disconnect()


async def test_send_message_frame_types() -> None:
    """send_message: str as text, bytes as binary, anything else JSON text via json_dumps."""

    class Sender(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.send_message("text")
            await self.send_message(b"\x00bin")
            await self.send_message({"k": [1, 2]})

    peer = FakePeer()
    async with serving(Sender, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(0)
        assert (await peer.next()) == {"type": "websocket.send", "text": "text"}
        assert (await peer.next()) == {"type": "websocket.send", "bytes": b"\x00bin"}
        assert (await peer.next()) == {"type": "websocket.send", "text": '{"k":[1,2]}'}
        await peer.disconnect()


async def test_json_codec_is_pluggable_and_bytes_dumps_go_as_text() -> None:
    """json_dumps may return UTF-8 bytes (orjson-style); JSON still goes as a text frame."""

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, sort_keys=True).encode()

    def loads(data: str | bytes) -> Any:
        return {"decoded": json.loads(data)}

    class Codec(BaseWSEndpoint):
        json_dumps = staticmethod(dumps)
        json_loads = staticmethod(loads)

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.send_message(data)

    peer = FakePeer()
    async with serving(Codec, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json({"b": 1})
        assert await peer.next() == {
            "type": "websocket.send",
            "text": '{"decoded": {"b": 1}}',
        }
        await peer.disconnect()


async def test_server_cancellation_closes_1001_and_runs_on_disconnect() -> None:
    """When the server cancels the app (shutdown), wsrooms closes with 1001 and cleans up."""

    endpoint = make(Forever)
    peer = FakePeer()
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await endpoint(peer.scope, peer.receive, peer.send)

        tg.start_soon(run)
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    peer.close()
    assert peer.sent[-1] == {
        "type": "websocket.close",
        "code": 1001,
        "reason": "server shutting down",
    }
    assert endpoint.events[-2:] == [("unregister", "1", None), ("disconnect", 1001)]


async def test_send_after_client_left_ends_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """A send that finds the client gone ends the connection without an error log."""

    class Gone(Recorder):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            await self.send_message("x")

    endpoint = make(Gone)
    peer = FakePeer(fail_on="websocket.send")
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
    assert endpoint.events[-1] == ("disconnect", 1006)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_close_from_handler_uses_servers_code() -> None:
    """self.close() from a handler closes with that code; on_disconnect gets it."""

    class Closer(Recorder):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
            await self.close(4000, "bye")
            return "closed"

    endpoint = make(Closer)
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
        assert await peer.expect_close() == (4000, "bye")
    assert endpoint.events[-1] == ("disconnect", 4000)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"encoding": "xml"}, "encoding"),
        ({"max_tasks": 0}, "max_tasks"),
        ({"max_message_size": -1}, "max_message_size"),
        ({"exit_max_delay": 0}, "exit_max_delay"),
        ({"idle_timeout": -1}, "idle_timeout"),
        ({"subprotocols": "chat"}, "subprotocols"),
    ],
)
def test_invalid_options_fail_at_class_creation(attrs: dict[str, Any], message: str) -> None:
    """An option that cannot work is a ValueError when the class is made, naming it."""
    with pytest.raises(ValueError, match=message):
        type("Bad", (BaseWSEndpoint,), attrs)


def test_http_scope_is_rejected() -> None:
    """The endpoint class serves WebSocket scopes only."""

    async def nothing() -> dict[str, Any]:  # pragma: no cover
        return {}

    async def sink(message: Any) -> None:  # pragma: no cover
        pass

    with pytest.raises(TypeError, match="WebSocket"):
        BaseWSEndpoint({"type": "http"}, nothing, sink)
