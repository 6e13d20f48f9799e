"""A client that vanishes while every task is blocked in a send is noticed on every server.

The client pipelines requests whose replies it never reads, until the server's sends
block and its receive loop stops reading at `max_tasks`; then it resets its TCP
connection. hypercorn cannot report it then (the failed send waits to queue the
disconnect behind the unread requests), so wsrooms notices by the sends making no
progress for `send_timeout`; uvicorn reports it by itself.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from examples.actions import Actions
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests import _servers
from wsrooms import CloseCode
from wsrooms.testing import ServerName, connect, serve

pytestmark = pytest.mark.anyio

# Run on uvicorn, hypercorn (asyncio) and hypercorn (trio).
backend_and_server = _servers.backend_and_server
anyio_backend = _servers.anyio_backend
server_name = _servers.server_name


class Watched(Actions):
    """The shipped request/response example, with a short send_timeout and a record."""

    send_timeout = 2.0
    connections: list[Watched] = []
    ended: dict[str, Any] = {}

    async def on_connect(self, websocket: WebSocket) -> None:
        self.connections.append(self)
        await super().on_connect(websocket)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.ended.update(code=close_code, tasks=self.statistics().tasks, at=anyio.current_time())
        self.ended["event"].set()


async def test_a_client_vanishing_with_every_task_blocked_is_noticed(
    server_name: ServerName,
) -> None:
    """on_disconnect runs within send_timeout (plus its 1 s check) and no task is left."""
    Watched.connections = []
    Watched.ended = {"event": anyio.Event()}
    app = Starlette(routes=[WebSocketRoute("/actions", Watched)])
    request = {"action": "concat", "args": ["x" * 60_000, "y"]}  # 60 kB replies
    async with (
        serve(app, server=server_name) as server,
        connect(server.ws_url("/actions"), receive_buffer=4096) as client,
    ):

        async def pipeline() -> None:
            for i in range(2_000):  # bounded: the client's own send blocks long before
                await client.send_json({"id": i, **request})

        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline)
            await anyio.wait_all_tasks_blocked()
            (conn,) = Watched.connections
            assert conn.statistics().tasks == Watched.max_tasks  # all blocked in sends
            tg.cancel_scope.cancel()
        vanished = anyio.current_time()
        await client.abort()  # a TCP reset: no close frame
        with anyio.fail_after(Watched.send_timeout + 5):
            await Watched.ended["event"].wait()
    assert Watched.ended["at"] - vanished <= Watched.send_timeout + 2
    assert Watched.ended["tasks"] == 0  # every task ended (and unregistered) first
    if server_name == "hypercorn":
        assert Watched.ended["code"] == CloseCode.ABNORMAL_CLOSURE
    else:  # uvicorn reports the reset itself: 1006, or 1005 when no send was in flight
        assert Watched.ended["code"] in (CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE)
