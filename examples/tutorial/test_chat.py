"""The tutorial's test_chat.py: the chat on asyncio and on trio, next to chat.py."""

import anyio
import chat
import pytest

from wsrooms.testing import serve


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_members_of_a_room_hear_each_other() -> None:
    async with serve(chat.app, lifespan=True) as server:
        async with server.connect("/ws/red?name=ann") as ann:
            with anyio.fail_after(5):
                assert await ann.recv_json() == {"event": "join", "name": "ann", "members": 1}
            async with server.connect("/ws/red?name=bob") as bob:
                with anyio.fail_after(5):
                    assert await ann.recv_json() == {"event": "join", "name": "bob", "members": 2}
                    assert await bob.recv_json() == {"event": "join", "name": "bob", "members": 2}
                    await ann.send_json({"text": "hello"})
                    said = {"event": "message", "name": "ann", "text": "hello"}
                    assert await ann.recv_json() == said
                    assert await bob.recv_json() == said
            with anyio.fail_after(5):
                assert await ann.recv_json() == {"event": "leave", "name": "bob", "members": 1}


@pytest.mark.anyio
async def test_a_malformed_message_closes_with_1007() -> None:
    async with serve(chat.app, lifespan=True) as server:
        async with server.connect("/ws/lobby") as ws:
            with anyio.fail_after(5):
                await ws.recv_json()  # our own join notice
                await ws.send_json({"no": "text"})
                await ws.wait_closed()
            assert (ws.close_code, ws.close_reason) == (1007, 'send {"text": "..."}')
