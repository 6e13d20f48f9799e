"""The Room decorator API: the proposal's examples run as written (examples/room_api.py).

Driven through Starlette's TestClient on asyncio and on trio. The example's rooms live at
module level, so every test also checks that they are empty again when its clients leave.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from examples import room_api
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from wsrooms import ConnectionsManager, Room

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def client(test_client_factory: ClientFactory) -> Iterator[TestClient]:
    with test_client_factory(room_api.app) as client:
        yield client
    assert room_api.room.connections == frozenset()
    assert room_api.chat_room.connections == frozenset()


def test_api1_push_reaches_every_member(client: TestClient) -> None:
    """API 1: a message pushed by the receive handler reaches every member, sender too."""
    with client.websocket_connect("/chat") as a, client.websocket_connect("/chat") as b:
        assert len(room_api.room.connections) == 2
        a.send_json({"hello": "world"})
        assert a.receive_json() == {"hello": "world"}
        assert b.receive_json() == {"hello": "world"}


def test_api2_unawaited_push_and_listener(client: TestClient) -> None:
    """API 2: an un-awaited push from the caller's loop reaches API 1 members and listeners."""
    with (
        client.websocket_connect("/chat2") as writer,
        client.websocket_connect("/chat") as member,
        client.websocket_connect("/listen") as listener,
    ):
        assert len(room_api.room.connections) == 3
        writer.send_text("from api 2")
        assert member.receive_text() == "from api 2"
        assert listener.receive_text() == "from api 2"
        assert writer.receive_text() == "from api 2"
        listener.send_text("ignored")  # listen-only: read and discarded
        member.send_json({"m": "after"})
        assert listener.receive_json() == {"m": "after"}


def test_connections_empty_as_members_leave(client: TestClient) -> None:
    """room.connections tracks members and empties as they leave."""
    with client.websocket_connect("/chat") as a:
        with client.websocket_connect("/chat2"):
            assert len(room_api.room.connections) == 2
            assert all(isinstance(c.websocket, WebSocket) for c in room_api.room.connections)
        a.send_json({"sync": 1})  # the second client has gone once this round trip completes
        assert a.receive_json() == {"sync": 1}
        assert len(room_api.room.connections) == 1
    # the fixture checks that the room is empty afterwards


def test_subclass_with_client_id_api1(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """RoomWithClientId, API 1: on_connection gets the client id; handlers can look it up."""
    with client.websocket_connect("/chat/7") as seven, client.websocket_connect("/chat/8") as eight:
        seven.send_json("hi")
        assert eight.receive_json() == {"from": 7, "message": "hi"}
        assert seven.receive_json() == {"from": 7, "message": "hi"}
    assert "7 joined the chat room" in caplog.text
    assert room_api.chat_room._id_to_ws == {}  # on_disconnect cleaned the client ids


def test_subclass_with_client_id_api2(client: TestClient) -> None:
    """RoomWithClientId, API 2: the same subclass works as an async context manager."""
    with (
        client.websocket_connect("/chat_ws2/5") as five,
        client.websocket_connect("/chat/6") as six,
    ):
        five.send_text("hey")
        assert six.receive_json() == {"from": 5, "message": "hey"}


def test_connections_manager_shares_membership(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """ConnectionsManager: a read-write and a listen-only endpoint share the room."""
    with (
        client.websocket_connect("/chat_ws/1") as writer,
        client.websocket_connect("/listening_ws/2") as listener,
    ):
        assert len(room_api.chat_room.connections) == 2
        writer.send_json({"n": 1})
        assert listener.receive_json() == {"n": 1}
        assert writer.receive_json() == {"n": 1}
    assert "2 joined as a listener to the the chat room" not in caplog.text
    assert "2 joined as a listener to the chat room" in caplog.text


def test_endpoint_class_on_fastapi_shares_the_hub(client: TestClient) -> None:
    """A RoomEndpoint mounted with add_websocket_route shares the room's hub."""
    with (
        client.websocket_connect("/chat/3") as member,
        client.websocket_connect("/announce") as announcer,
    ):
        announcer.send_json("maintenance at noon")
        assert member.receive_json() == {"announcement": "maintenance at noon"}


def test_room_options_reach_the_engine(test_client_factory: ClientFactory) -> None:
    """Room(...) options apply to its connections: here max_message_size closes with 1009."""
    from fastapi import FastAPI

    small = Room(max_message_size=8, send_queue_size=4)
    app = FastAPI()

    @small.on_receive("text")
    async def echo(room: Room, websocket: WebSocket, message: str) -> None:
        await room.push(message)

    @app.websocket("/small")
    async def route(websocket: WebSocket) -> None:
        await small.connect(websocket)

    with test_client_factory(app) as client, client.websocket_connect("/small") as ws:
        ws.send_text("short")
        assert ws.receive_text() == "short"
        ws.send_text("much too long")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1009
    assert small.connections == frozenset()


def test_on_disconnect_gets_connect_args(test_client_factory: ClientFactory) -> None:
    """Extra connect() arguments reach on_connection and on_disconnect."""
    from fastapi import FastAPI

    seen: list[tuple[str, Any]] = []
    room = Room(name="args")
    app = FastAPI()

    @room.on_connection
    async def hello(room: Room, websocket: WebSocket, user: str, level: int) -> None:
        seen.append(("connect", (user, level)))

    @room.on_disconnect
    async def bye(room: Room, websocket: WebSocket, user: str, level: int) -> None:
        seen.append(("disconnect", (user, level)))

    @app.websocket("/u/{user}")
    async def route(websocket: WebSocket, user: str) -> None:
        await room.connect(websocket, user, 3)

    with test_client_factory(app) as client, client.websocket_connect("/u/ann"):
        pass
    assert seen == [("connect", ("ann", 3)), ("disconnect", ("ann", 3))]


def test_room_constructor_rules() -> None:
    """Unknown options, bad modes and conflicting base rooms are clear errors."""
    with pytest.raises(TypeError, match="unknown Room option"):
        Room(max_taks=3)
    with pytest.raises(ValueError, match="send_queue_size"):
        Room(send_queue_size=0)
    base = Room(name="base")
    with pytest.raises(ValueError, match="shares its name and hub"):
        Room(base, name="other")
    with pytest.raises(ValueError, match="on_receive mode"):
        base.on_receive("xml")
    with pytest.raises(ValueError, match="control"):
        Room(name="bad\n")
    built = Room(base)
    assert (built.hub, built.name) == (base.hub, base.name)
    manager = ConnectionsManager(base)
    assert manager.hub is base.hub
    assert manager.room is base
    assert "base" in repr(base)


def test_bare_on_receive_decorator_defaults_to_json(test_client_factory: ClientFactory) -> None:
    """@room.on_receive without parentheses registers a JSON handler."""
    from fastapi import FastAPI

    room = Room()
    app = FastAPI()

    @room.on_receive
    async def handler(room: Room, websocket: WebSocket, message: Any) -> None:
        await room.push({"got": message})

    @app.websocket("/r")
    async def route(websocket: WebSocket) -> None:
        await room.connect(websocket)

    with test_client_factory(app) as client, client.websocket_connect("/r") as ws:
        ws.send_json([1, 2])
        assert ws.receive_json() == {"got": [1, 2]}


def test_error_in_api2_block_closes_1011(
    test_client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error in an API 2 block is logged and closes with 1011, not raised."""
    from fastapi import FastAPI

    room = Room()
    app = FastAPI()

    @app.websocket("/r")
    async def route(websocket: WebSocket) -> None:
        async with room.connect(websocket):
            await websocket.receive_text()
            raise KeyError("oops")

    with test_client_factory(app) as client, client.websocket_connect("/r") as ws:
        ws.send_text("go")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1011
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    assert room.connections == frozenset()


def test_leaving_api2_block_closes_normally(test_client_factory: ClientFactory) -> None:
    """Leaving the API 2 block while the client is still there closes with 1000."""
    from fastapi import FastAPI

    room = Room()
    app = FastAPI()

    @app.websocket("/r")
    async def route(websocket: WebSocket) -> None:
        async with room.connect(websocket):
            message = await websocket.receive_text()
            room.push(f"last: {message}")

    with test_client_factory(app) as client, client.websocket_connect("/r") as ws:
        ws.send_text("bye")
        assert ws.receive_text() == "last: bye"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1000
