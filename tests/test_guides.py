"""The examples of the how-to guides, on real servers: Security, Sending from outside a
connection. Each test checks what its guide says the example does."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from examples import outside, security

from wsrooms.testing import InvalidStatus, Server, serve

pytestmark = pytest.mark.anyio

ORIGIN = {"Origin": "http://127.0.0.1:8000"}


async def recv_json(ws: Any) -> Any:
    with anyio.fail_after(10):
        return await ws.recv_json()


async def refused(server: Server, path: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as refusal:
        async with server.connect(path, **kwargs):
            pass  # pragma: no cover
    return refusal.value.status_code


async def test_cookie_authentication() -> None:
    """A session cookie names the user; without a known one the handshake gets 403."""
    async with serve(security.app) as server:
        headers = {**ORIGIN, "Cookie": "session=s-ann"}
        async with server.connect("/cookie", headers=headers) as ws:
            await ws.send_json({"hi": 1})
            assert await recv_json(ws) == {"from": "ann", "data": {"hi": 1}}
        assert await refused(server, "/cookie", headers=ORIGIN) == 403
        assert await refused(server, "/cookie", headers={**ORIGIN, "Cookie": "session=x"}) == 403


async def test_a_foreign_origin_is_refused_even_with_the_cookie() -> None:
    """allowed_origins: a page on another site cannot use the user's cookie (403)."""
    async with serve(security.app) as server:
        evil = {"Origin": "https://evil.example", "Cookie": "session=s-ann"}
        assert await refused(server, "/cookie", headers=evil) == 403
        async with server.connect("/cookie", headers={"Cookie": "session=s-ann"}):
            pass  # no Origin header: not a browser, allowed


async def test_header_authentication() -> None:
    """An Authorization: Bearer header names the user; a wrong token gets 403."""
    async with serve(security.app) as server:
        async with server.connect("/header", headers={"Authorization": "Bearer t-bob"}) as ws:
            await ws.send_json("hello")
            assert await recv_json(ws) == {"from": "bob", "data": "hello"}
        assert await refused(server, "/header", headers={"Authorization": "Bearer nope"}) == 403
        assert await refused(server, "/header") == 403


async def test_token_subprotocol_authentication() -> None:
    """A token offered as a second subprotocol names the user; the server answers chat.v1."""
    async with serve(security.app) as server:
        offer = ["chat.v1", "token.t-cat"]
        async with server.connect("/subprotocol", subprotocols=offer) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send_json(1)
            assert await recv_json(ws) == {"from": "cat", "data": 1}
        assert await refused(server, "/subprotocol", subprotocols=["chat.v1"]) == 403
        assert await refused(server, "/subprotocol", subprotocols=["chat.v1", "token.x"]) == 403


async def test_fastapi_depends_with_websocket_exception() -> None:
    """A FastAPI dependency that raises WebSocketException refuses with 403 before accept."""
    async with serve(security.app) as server:
        async with server.connect("/members?token=t-bob") as ws:
            assert await recv_json(ws) == {"joined": "bob"}
            await ws.send_json({"x": 1})
            assert await recv_json(ws) == {"from": "bob", "data": {"x": 1}}
        assert await refused(server, "/members?token=nope") == 403
        assert await refused(server, "/members") == 403


async def test_broadcast_from_http_routes_and_to_one_user() -> None:
    """POST /news reaches every socket; POST /users/ann reaches ann's sockets only."""
    async with (
        serve(outside.app, lifespan=True) as server,
        server.connect("/ws?user=ann") as ann_tab1,
        server.connect("/ws?user=ann") as ann_tab2,
        server.connect("/ws?user=bob") as bob,
        httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}") as http,
    ):
        answer = await http.post("/users/ann", json={"text": "hi ann"})
        assert answer.json() == {"sockets": 2}
        for tab in (ann_tab1, ann_tab2):
            assert await recv_json(tab) == {"to": "ann", "text": "hi ann"}
        answer = await http.post("/news", json={"text": "hello"})
        assert answer.json() == {"sockets": 3}
        # bob's first message is the news: the message to ann never reached him.
        for ws in (ann_tab1, ann_tab2, bob):
            assert await recv_json(ws) == {"news": "hello"}


async def test_log_out_closes_every_socket_of_the_user() -> None:
    """POST /users/ann/logout closes ann's sockets with 4001 and leaves bob's open."""
    async with (
        serve(outside.app, lifespan=True) as server,
        server.connect("/ws?user=ann") as ann,
        server.connect("/ws?user=bob") as bob,
        httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}") as http,
    ):
        answer = await http.post("/users/ann/logout")
        assert answer.json() == {"closed": 1}
        with anyio.fail_after(10):
            await ann.wait_closed()
        assert (ann.close_code, ann.close_reason) == (4001, "logged out")
        await http.post("/users/bob", json={"text": "still here"})
        assert await recv_json(bob) == {"to": "bob", "text": "still here"}


async def test_a_background_job_broadcasts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ticker started in the lifespan posts to `news` until the app stops."""
    monkeypatch.setattr(outside, "TICK_SECONDS", 0.01)
    async with serve(outside.app, lifespan=True) as server:
        async with server.connect("/ws?user=cat") as ws:
            first = await recv_json(ws)
            assert await recv_json(ws) == {"tick": first["tick"] + 1}
    assert outside.hub.connections == frozenset()
