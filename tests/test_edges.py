"""Error paths: hooks that fail, peers that misbehave, connections used after they end."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
from starlette.types import Message
from starlette.websockets import WebSocket

from tests._fake import FakePeer, serving
from wsrooms import BaseWSEndpoint, CloseCode, Hub, InvalidMessage, Room, RoomEndpoint

pytestmark = pytest.mark.anyio


async def open_peer(app: Any, stack: Any, peer: FakePeer | None = None) -> FakePeer:
    peer = peer or FakePeer()
    await stack.enter_async_context(serving(app, peer))
    await peer.connect()
    await peer.expect_accept()
    return peer


async def test_long_reason_is_cut_to_a_close_frame() -> None:
    """A reason longer than a close frame can carry is cut to 123 UTF-8 bytes."""

    class Verbose(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            raise InvalidMessage("é" * 100)

    peer = FakePeer()
    async with serving(Verbose, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
        code, reason = await peer.expect_close()
    assert code == 1007
    assert len(reason.encode()) <= 123
    assert reason == "é" * 61


def test_plain_function_codec_is_not_bound_as_a_method() -> None:
    """`json_dumps = some_function` in a class body stays a plain callable."""

    def dumps(obj: Any) -> str:
        return json.dumps(obj)

    Codec: type[BaseWSEndpoint] = type("Codec", (BaseWSEndpoint,), {"json_dumps": dumps})
    assert Codec.json_dumps([1]) == "[1]"


async def test_unexpected_asgi_message_closes_1011(caplog: pytest.LogCaptureFixture) -> None:
    """A server sending an ASGI event out of order is logged and closes with 1011."""
    endpoint = type("E", (BaseWSEndpoint,), {})
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.connect()  # a second websocket.connect: not valid here
        assert await peer.expect_close() == (1011, "internal error")
    assert any("receive loop" in r.getMessage() for r in caplog.records)


async def test_bytes_encoding_passes_bytes() -> None:
    """encoding "bytes" hands binary frames over as bytes."""

    class Binary(BaseWSEndpoint):
        encoding = "bytes"

        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.send_message(data[::-1])

    peer = FakePeer()
    async with serving(Binary, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_bytes(b"abc")
        assert await peer.next() == {"type": "websocket.send", "bytes": b"cba"}
        await peer.disconnect()


class Hooks(BaseWSEndpoint):
    """Every teardown hook misbehaves in its own way."""

    events: list[Any] = []

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        if data == "raise":
            raise ValueError("handler")
        await self.send_message("ok")

    async def _handle_background_task_exception(
        self, task_id: str, websocket: WebSocket, exc: Exception
    ) -> None:
        raise RuntimeError("the hook itself failed")

    async def _unregister_background_task(
        self, task_id: str, websocket: WebSocket, task_result: Any
    ) -> None:
        raise KeyError("unregister failed")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.events.append(close_code)
        raise LookupError("on_disconnect failed")


async def test_failing_hooks_are_logged_and_teardown_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing exception hook closes 1011; failing unregister/on_disconnect are logged."""
    endpoint: type[Hooks] = type("H", (Hooks,), {"events": []})
    peer = FakePeer()
    async with serving(endpoint, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json("raise")
        assert await peer.expect_close() == (1011, "internal error")
    assert endpoint.events == [1011]
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("_handle_background_task_exception" in m for m in messages)
    assert any("unregister of task" in m for m in messages)
    assert any("on_disconnect of" in m for m in messages)


async def test_slow_on_disconnect_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """on_disconnect running past exit_max_delay is cut and logged at WARNING."""

    class Slow(BaseWSEndpoint):
        exit_max_delay = 0.05

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            await anyio.sleep_forever()

    peer = FakePeer()
    async with serving(Slow, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.disconnect()
    assert any(
        r.levelno == logging.WARNING and "on_disconnect" in r.getMessage() for r in caplog.records
    )


async def test_close_frame_send_failure_is_absorbed() -> None:
    """If the close frame cannot be sent (socket gone), teardown still completes."""
    codes: list[int] = []

    class Closer(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            await self.close(4001)

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)

    peer = FakePeer(fail_on="websocket.close")
    async with serving(Closer, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
    assert codes == [4001]


async def test_accept_then_close_in_on_connect_runs_on_disconnect() -> None:
    """A connection accepted and then closed in on_connect still gets on_disconnect."""
    codes: list[int] = []

    class Bouncer(BaseWSEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await self.accept(websocket)
            await websocket.close(4003)

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)

    peer = FakePeer()
    async with serving(Bouncer, peer):
        await peer.connect()
        await peer.expect_accept()
        assert await peer.expect_close() == (4003, "")
    assert codes == [1000]


async def test_refusal_then_raise_in_on_connect() -> None:
    """on_connect that closes before accept and then raises: refused, no on_disconnect."""
    codes: list[int] = []

    class Odd(BaseWSEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await websocket.close()
            raise RuntimeError("after refusing")

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)  # pragma: no cover

    peer = FakePeer()
    async with serving(Odd, peer):
        await peer.connect()
        assert (await peer.next())["type"] == "websocket.close"
    assert codes == []


async def test_oserror_racing_the_end_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """An OSError from a handler after the connection ended is not reported as a bug."""
    release = anyio.Event()

    class Racing(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            if data == "close":
                await self.close(1000)
                return
            with anyio.CancelScope(shield=True):
                await release.wait()
            raise OSError("socket already gone")

    peer = FakePeer()
    async with serving(Racing, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json("wait")
        await anyio.wait_all_tasks_blocked()
        await peer.send_json("close")
        await anyio.wait_all_tasks_blocked()
        release.set()
        assert await peer.expect_close() == (1000, "")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class Member(RoomEndpoint):
    hub = Hub()
    encoding = "text"
    send_queue_size = 2
    slow_consumer = "drop_newest"
    slow_consumer_timeout = 0.05
    left: list[str] = []
    flooded: anyio.Event

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        await self.join("m")
        await self.join("m")  # already a member: nothing happens

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> None:
        if data == "flood":
            for i in range(5):
                await self.send_message(str(i))
            self.flooded.set()
        elif data == "close":
            await self.close(1000)
            await self.join("late")

    async def on_leave(self, room: str) -> None:
        self.left.append(room)
        raise RuntimeError("on_leave failed")


async def test_send_message_drops_are_counted_on_the_hub() -> None:
    """send_message under drop_newest counts what it drops on the connection and the hub."""
    from contextlib import AsyncExitStack

    before = Member.hub.dropped

    class StuckSend(FakePeer):
        async def send(self, message: Message) -> None:
            if message["type"] == "websocket.send":
                await anyio.sleep_forever()
            await super().send(message)

    async with AsyncExitStack() as stack:
        peer = await open_peer(Member, stack, StuckSend())
        (conn,) = Member.hub.members("m")
        assert isinstance(conn, Member)
        Member.flooded = anyio.Event()
        await peer.send_text("flood")
        with anyio.fail_after(5):
            await Member.flooded.wait()
        # Five sends and a queue of two: the third waits for room, while the writer takes
        # the first and blocks in the socket; with no progress for slow_consumer_timeout
        # the member is a slow consumer, so the last two are dropped.
        expected = 2
        assert conn.dropped == expected
        assert conn.statistics().dropped == expected
        assert Member.hub.dropped - before == expected
        await peer.disconnect()


async def test_join_while_closing_and_failing_on_leave(caplog: pytest.LogCaptureFixture) -> None:
    """join after close() raises; a failing on_leave is logged and teardown completes."""
    from contextlib import AsyncExitStack

    Member.left = []
    async with AsyncExitStack() as stack:
        peer = await open_peer(Member, stack)
        await peer.send_text("close")
        assert await peer.expect_close() == (1000, "")
    assert Member.left == ["m"]
    assert Member.hub.rooms() == frozenset()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("on_leave('m')" in m for m in messages)


async def test_slow_on_leave_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """on_leave hooks running past exit_max_delay are cut and logged."""

    class SlowLeave(RoomEndpoint):
        exit_max_delay = 0.05

        async def on_connect(self, websocket: WebSocket) -> None:
            await super().on_connect(websocket)
            await self.join("s")

        async def on_leave(self, room: str) -> None:
            await anyio.sleep_forever()

    peer = FakePeer()
    async with serving(SlowLeave, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.disconnect()
    assert any("cleanup of" in r.getMessage() for r in caplog.records)
    assert SlowLeave.hub.rooms() == frozenset()


async def test_room_extras() -> None:
    """room.websockets, BaseRoom.push, a listen-only API 1 room and codec options."""
    from wsrooms import BaseRoom

    def dumps(obj: Any) -> str:
        return "custom:" + json.dumps(obj)

    room = Room(json_dumps=dumps)
    view = BaseRoom(room)
    peer = FakePeer()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()  # accepted by the caller: connect() takes it from there
        await room.connect(websocket)

    async with serving(app, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_text('{"ignored": "no receive handler"}')
        await anyio.wait_all_tasks_blocked()
        assert len(room.websockets) == 1
        await view.push({"a": 1})  # a BaseRoom encodes with the default codec
        assert await peer.next_text() == '{"a":1}'
        room.push({"b": 2})
        assert await peer.next_text() == 'custom:{"b": 2}'
        await peer.disconnect()
    assert room.connections == frozenset()


async def test_api2_refused_handshake_skips_the_connection() -> None:
    """API 2: a refused handshake (no common subprotocol) ends the block quietly."""
    picky = Room(subprotocols=("v1",))
    results: list[str] = []
    peer = FakePeer(subprotocols=("v2",))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        async with picky.connect(websocket):
            await websocket.receive_text()  # refused: the socket never opened
        results.append("block ended")

    async with serving(app, peer):
        await peer.connect()
        assert (await peer.next())["type"] == "websocket.close"
    assert results == ["block ended"]
    assert picky.connections == frozenset()


async def test_api2_disconnect_raised_in_the_block_is_absorbed() -> None:
    """API 2: WebSocketDisconnect raised in the block is absorbed; listen() then returns."""
    room = Room()
    codes: list[int] = []
    results: list[str] = []

    @room.on_disconnect
    async def bye(room: Room, websocket: WebSocket) -> None:
        codes.append(1)

    peer = FakePeer()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        async with room.connect(websocket):
            await websocket.receive_text()
            await websocket.receive_text()  # the client leaves: WebSocketDisconnect
        await room.listen(websocket)  # the client has left: returns at once
        results.append("after the block")

    async with serving(app, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_text("one")
        await peer.disconnect(4004)
    assert results == ["after the block"]
    assert codes == [1]
    assert room.connections == frozenset()


async def test_api2_listen_reads_until_the_client_leaves() -> None:
    """API 2: listen() discards what a listen-only client sends until it leaves."""
    room = Room()
    peer = FakePeer()
    listened = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        async with room.connect(websocket):
            await room.listen(websocket)
            listened.set()

    async with serving(app, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_text("discarded")
        room.push("to the listener")
        assert await peer.next_text() == "to the listener"
        await peer.disconnect()
    assert listened.is_set()


async def test_api2_block_cancelled_when_the_connection_ends() -> None:
    """API 2: a slow-consumer disconnect cancels the caller's block; nothing escapes."""
    room = Room(send_queue_size=1, slow_consumer_timeout=0.05)

    class StuckSend(FakePeer):
        async def send(self, message: Message) -> None:
            if message["type"] == "websocket.send":
                await anyio.sleep_forever()
            await super().send(message)

    peer = StuckSend()
    reached_end = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached_end
        websocket = WebSocket(scope, receive, send)
        async with room.connect(websocket):
            for i in range(10):
                await room.push(str(i))  # waits for room, then finds a slow consumer
            await anyio.sleep_forever()
        reached_end = True

    async with serving(app, peer):
        await peer.connect()
        await peer.expect_accept()
    assert reached_end
    assert room.connections == frozenset()


async def test_api2_on_connection_error_ends_the_block(caplog: pytest.LogCaptureFixture) -> None:
    """API 2: an on_connection handler that fails closes with 1011 and cancels the block."""
    room = Room()

    @room.on_connection
    async def hello(room: Room, websocket: WebSocket) -> None:
        raise ValueError("bad hello")

    peer = FakePeer()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        websocket = WebSocket(scope, receive, send)
        async with room.connect(websocket):
            await anyio.sleep_forever()

    async with serving(app, peer):
        await peer.connect()
        await peer.expect_accept()
        assert await peer.expect_close() == (CloseCode.INTERNAL_ERROR, "internal error")
    assert room.connections == frozenset()


async def test_user_started_task_errors_close_1011(caplog: pytest.LogCaptureFixture) -> None:
    """A task started with self.task_group.start_soon that fails closes 1011, not escapes."""
    codes: list[int] = []

    class Spawner(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            assert self.task_group is not None
            if data == "start":
                value = await self.task_group.start(self.ready)
                await self.send_message(value)
            else:
                self.task_group.start_soon(self.explode, data)

        async def ready(self, *, task_status: Any) -> None:
            task_status.started("ready")
            await anyio.sleep_forever()

        async def explode(self, what: str) -> None:
            raise ValueError(what)

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)

    peer = FakePeer()
    async with serving(Spawner, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json("start")
        assert await peer.next_text() == "ready"
        await peer.send_json("secret")
        assert await peer.expect_close() == (1011, "internal error")
    assert codes == [1011]
    assert "secret" not in str(peer.sent)
    assert any("task explode" in r.getMessage() for r in caplog.records)


async def test_user_started_task_finding_the_client_gone_is_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user-started task whose send finds the client gone ends the connection quietly."""
    codes: list[int] = []

    class Pusher(BaseWSEndpoint):
        async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
            assert self.task_group is not None
            self.task_group.start_soon(self.push)

        async def push(self) -> None:
            await self.send_message("x")

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            codes.append(close_code)

    peer = FakePeer(fail_on="websocket.send")
    async with serving(Pusher, peer):
        await peer.connect()
        await peer.expect_accept()
        await peer.send_json(1)
    assert codes == [1006]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_base_exception_in_api2_block_propagates() -> None:
    """A BaseException (not an Exception) leaves an API 2 block unchanged, after cleanup."""

    class Stop(BaseException):
        pass

    room = Room()
    peer = FakePeer()
    websocket = WebSocket(peer.scope, peer.receive, peer.send)
    await peer.connect()
    try:
        with pytest.raises(Stop):
            async with room.connect(websocket):
                raise Stop
        assert room.connections == frozenset()
        assert peer.sent[-1] == {
            "type": "websocket.close",
            "code": 1001,
            "reason": "server shutting down",
        }
    finally:
        peer.close()
