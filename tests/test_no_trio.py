"""trio is optional: wsrooms imports and serves on asyncio without it (tox env no-trio)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from wsrooms import RoomEndpoint


def test_import_does_not_need_trio_or_servers() -> None:
    """`import wsrooms` imports neither trio nor a server nor a WebSocket client library."""
    code = (
        "import sys, wsrooms; "
        "print(sorted(m for m in ('trio', 'uvicorn', 'hypercorn', 'websockets', 'coredis') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class Echo(RoomEndpoint):
    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        await self.join("echo")

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.broadcast("echo", data)


def test_rooms_serve_on_asyncio() -> None:
    """A room endpoint serves on asyncio through Starlette's TestClient."""
    app = Starlette(routes=[WebSocketRoute("/ws", Echo)])
    with TestClient(app, backend="asyncio") as client, client.websocket_connect("/ws") as ws:
        ws.send_json({"x": 1})
        assert ws.receive_json() == {"x": 1}
