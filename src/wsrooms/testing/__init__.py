"""Test helpers: a real ASGI server on a free loopback port and a real WebSocket client.

Both helpers run on the event loop that is already running, inside the caller's task, on
asyncio and on trio alike: no thread, no subprocess, no sleep.

```python
from wsrooms.testing import connect, serve

async def test_echo() -> None:
    async with serve(app) as server, connect(server.ws_url("/ws")) as ws:
        await ws.send_json({"hello": "world"})
        assert await ws.recv_json() == {"echo": {"hello": "world"}}
```

[`serve`][wsrooms.testing.serve] runs uvicorn (asyncio) or hypercorn (asyncio or trio).
[`connect`][wsrooms.testing.connect] is a thin layer over the `websockets` library's own
asyncio and trio clients that reads at most one message ahead of `recv()`, so a test that
stops calling it plays a slow consumer. The servers differ in what they do on shutdown
and which close codes they report: see [Servers](../topics/servers.md) before a test
asserts one.

This package needs `websockets` 17 or later; the server you pick needs `uvicorn` or
`hypercorn` (the `testing` extra installs all three).
"""

from ._client import ConnectionClosed as ConnectionClosed
from ._client import HandshakeError as HandshakeError
from ._client import InvalidStatus as InvalidStatus
from ._client import WebSocketClient as WebSocketClient
from ._client import connect as connect
from ._server import Server as Server
from ._server import ServerName as ServerName
from ._server import serve as serve

__all__ = [
    "ConnectionClosed",
    "HandshakeError",
    "InvalidStatus",
    "Server",
    "ServerName",
    "WebSocketClient",
    "connect",
    "serve",
]
