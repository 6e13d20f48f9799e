"""The testing guide: serve an application on a real server and talk to it."""

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from examples.actions import Actions
from wsrooms.testing import serve

pytestmark = pytest.mark.anyio

app = Starlette(routes=[WebSocketRoute("/actions", Actions)])


async def test_requests_are_answered_by_id() -> None:
    async with serve(app) as server, server.connect("/actions") as ws:
        await ws.send_json({"id": 1, "action": "add", "args": [1, 2]})
        await ws.send_json({"id": 2, "action": "mul", "args": [3, 4]})
        with anyio.fail_after(5):
            answers = {m["id"]: m["result"] for m in [await ws.recv_json() for _ in range(2)]}
        assert answers == {1: 3, 2: 12}


async def test_a_bad_request_closes_with_1007() -> None:
    async with serve(app) as server, server.connect("/actions") as ws:
        await ws.send_json({"id": 3, "action": "nope"})
        with anyio.fail_after(5):
            await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (1007, "expected {id, action, args: [a, b]}")
