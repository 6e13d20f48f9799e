"""Tests for `wsrooms.testing`: real servers on a free loopback port and the anyio client.

Every test runs on asyncio and on trio, against uvicorn (asyncio only) and hypercorn,
with tiny plain-ASGI apps from `tests/_asgi_apps.py`. No test sleeps to synchronise:
events and the servers' own signals do, and `anyio.fail_after` bounds every wait.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests import _asgi_apps as apps
from wsrooms.testing import (
    ConnectionClosed,
    InvalidStatus,
    ServerName,
    WebSocketClient,
    connect,
    serve,
)

pytestmark = pytest.mark.anyio

# The servers' answers to a client that vanishes (see the wsrooms.testing docstring).
ABORT_CODES = {"uvicorn": 1005, "hypercorn": 1006}


@pytest.fixture(params=["uvicorn", "hypercorn"])
def server_name(request: pytest.FixtureRequest, anyio_backend_name: str) -> ServerName:
    """Each server that can run on the current event loop."""
    name: ServerName = request.param
    assert not (name == "uvicorn" and anyio_backend_name == "trio")  # deselected in conftest
    return name


async def read_until_closed(ws: WebSocketClient) -> ConnectionClosed:
    """Read and drop messages until the connection closes; return how it closed."""
    while True:
        try:
            await ws.recv()
        except ConnectionClosed as closed:
            return closed


# serve() --------------------------------------------------------------------------------


async def test_serve_listens_on_a_free_loopback_port(server_name: ServerName) -> None:
    """serve() binds a free port on 127.0.0.1 and says where, as URLs too."""
    async with serve(apps.echo, server=server_name) as server:
        assert server.name == server_name
        assert server.host == "127.0.0.1"
        assert 0 < server.port < 65536
        assert server.url == f"ws://127.0.0.1:{server.port}"
        assert server.ws_url("/ws?room=1") == f"ws://127.0.0.1:{server.port}/ws?room=1"
        assert server.ws_url("ws") == f"ws://127.0.0.1:{server.port}/ws"
        assert repr(server) == f"<Server {server_name} {server.url}>"
        async with server.connect("/") as ws:
            await ws.send("ready")
            assert await ws.recv() == "ready"


async def test_default_server_follows_the_event_loop(anyio_backend_name: str) -> None:
    """Without `server=`, serve() runs uvicorn on asyncio and hypercorn on trio."""
    async with serve(apps.echo) as server:
        assert server.name == ("hypercorn" if anyio_backend_name == "trio" else "uvicorn")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_uvicorn_on_trio_is_refused() -> None:
    """Asking for uvicorn on trio fails at once and points to hypercorn."""
    with pytest.raises(ValueError, match="use server='hypercorn' on trio"):
        async with serve(apps.echo, server="uvicorn"):
            pass  # pragma: no cover


async def test_unknown_server_is_refused() -> None:
    """A server name other than uvicorn or hypercorn is a ValueError."""
    with pytest.raises(ValueError, match="'uvicorn' or 'hypercorn'"):
        serve(apps.echo, server="daphne")  # type: ignore[arg-type]


async def test_unknown_server_option_is_refused(server_name: ServerName) -> None:
    """An option the chosen server does not have is a TypeError on entering serve()."""
    with pytest.raises(TypeError, match="invalid"):
        async with serve(apps.echo, server=server_name, no_such_option=1):
            pass  # pragma: no cover


async def test_exception_in_the_block_propagates_unchanged(server_name: ServerName) -> None:
    """An error raised inside serve() comes out as itself, not in an exception group."""
    with pytest.raises(KeyError, match="boom"):
        async with serve(apps.echo, server=server_name) as server:
            raise KeyError("boom")
    with pytest.raises(OSError):
        async with connect(server.url, open_timeout=5):
            pass  # pragma: no cover


async def test_server_option_reaches_the_server(server_name: ServerName) -> None:
    """`ws_max_size` reaches the server: a bigger message is closed with 1009."""
    async with (
        serve(apps.echo, server=server_name, ws_max_size=1024) as server,
        server.connect() as ws,
    ):
        await ws.send(b"x" * 1024)
        assert await ws.recv() == b"x" * 1024
        await ws.send(b"x" * 1025)
        with anyio.fail_after(5):
            await ws.wait_closed()
        assert ws.close_code == 1009


async def test_lifespan_is_off_by_default(server_name: ServerName) -> None:
    """Without `lifespan=True` the app never sees a lifespan scope."""
    app = apps.Lifespan()
    async with serve(app, server=server_name) as server, server.connect() as ws:
        assert await ws.recv() == ""
    assert app.events == []


async def test_lifespan_runs_when_asked(server_name: ServerName) -> None:
    """With `lifespan=True`, startup completes before the block and shutdown after it."""
    app = apps.Lifespan()
    async with serve(app, server=server_name, lifespan=True) as server:
        assert app.events == ["startup"]
        async with server.connect() as ws:
            assert await ws.recv() == "startup"
    assert app.events == ["startup", "shutdown"]


async def test_failed_lifespan_startup_raises(server_name: ServerName) -> None:
    """A lifespan startup failure is a RuntimeError with the app's message, on both servers."""
    app = apps.Lifespan(fail_startup=True)
    with anyio.fail_after(10), pytest.raises(RuntimeError, match="no database"):
        async with serve(app, server=server_name, lifespan=True):
            pass  # pragma: no cover


async def test_lifespan_asked_of_an_app_without_one_raises(server_name: ServerName) -> None:
    """`lifespan=True` with an app that does not speak lifespan fails to start, on both servers."""
    with anyio.fail_after(10), pytest.raises(RuntimeError, match="lifespan startup failed"):
        async with serve(apps.echo, server=server_name, lifespan=True):
            pass  # pragma: no cover


async def test_shutdown_with_a_client_connected_is_prompt(server_name: ServerName) -> None:
    """Shutting down with a client connected ends within the graceful timeout.

    uvicorn closes the WebSocket with 1012 and tells the app so; hypercorn cancels the
    app after the timeout and the TCP connection drops.
    """
    app = apps.Recorder()
    async with serve(app, server=server_name, shutdown_timeout=1) as server:
        async with server.connect() as ws:
            assert await ws.recv() == "accepted"
            with anyio.fail_after(4):
                await server.shutdown()
                await ws.wait_closed()
            if server_name == "uvicorn":
                assert ws.close_code == 1012
                assert app.codes == [1012]
            else:
                assert ws.close_code in (1006, 1011)
        await server.shutdown()  # a second call is harmless


async def test_shutdown_with_a_client_that_reads_nothing_is_bounded(
    server_name: ServerName,
) -> None:
    """A client that reads nothing cannot hold a shutdown past its bound.

    hypercorn cannot interrupt its write to such a client, so serve() aborts the client.
    """
    app = apps.Flood(count=256, size=65536)
    async with (
        serve(app, server=server_name, shutdown_timeout=0.5) as server,
        server.connect(receive_buffer=16384) as ws,
    ):
        with anyio.fail_after(5):
            await server.shutdown()
        with anyio.fail_after(5):
            closed = await read_until_closed(ws)
        assert closed.code in (1006, 1012)
    assert not app.done.is_set()


# connect() -------------------------------------------------------------------------------


async def test_text_and_bytes_round_trip(server_name: ServerName) -> None:
    """Text comes back as str and bytes as bytes, in order."""
    async with serve(apps.echo, server=server_name) as server, server.connect() as ws:
        await ws.send("héllo")
        await ws.send(b"\x00\xff")
        await ws.send(bytearray(b"ba"))
        await ws.send("")
        assert await ws.recv() == "héllo"
        assert await ws.recv() == b"\x00\xff"
        assert await ws.recv() == b"ba"
        assert await ws.recv() == ""


async def test_json_round_trips(server_name: ServerName) -> None:
    """send_json() sends a text frame that recv_json() decodes."""
    async with serve(apps.echo, server=server_name) as server, server.connect() as ws:
        await ws.send_json({"a": [1, 2.5, None, "é"]})
        assert await ws.recv_json() == {"a": [1, 2.5, None, "é"]}


async def test_large_message_round_trips(server_name: ServerName) -> None:
    """A message larger than one socket read arrives whole."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with serve(apps.echo, server=server_name) as server, server.connect() as ws:
        await ws.send(payload)
        assert await ws.recv() == payload


async def test_send_rejects_other_types(server_name: ServerName) -> None:
    """send() takes str or bytes only."""
    async with serve(apps.echo, server=server_name) as server, server.connect() as ws:
        with pytest.raises(TypeError, match="str or bytes"):
            await ws.send(42)  # type: ignore[arg-type]


async def test_path_query_and_headers_reach_the_app(server_name: ServerName) -> None:
    """The URL's path and query string and the extra headers reach the app's scope."""
    async with serve(apps.describe, server=server_name) as server:
        async with server.connect("/room/1?user=ann", headers={"X-Token": "s3cret"}) as ws:
            assert json.loads(await ws.recv()) == ["/room/1", "user=ann", "s3cret"]
        async with server.connect("/", headers=[("x-token", "t")]) as ws:
            assert json.loads(await ws.recv()) == ["/", "", "t"]


async def test_server_close_code_and_reason_are_observed(server_name: ServerName) -> None:
    """After the server closes, the messages it sent come first, then ConnectionClosed."""
    app = apps.CloseWith(4001, "done")
    async with serve(app, server=server_name) as server, server.connect() as ws:
        with anyio.fail_after(5):
            await ws.wait_closed()
        assert ws.closed
        assert (ws.close_code, ws.close_reason) == (4001, "done")
        assert await ws.recv() == "bye"
        with pytest.raises(ConnectionClosed) as caught:
            await ws.recv()
        assert (caught.value.code, caught.value.reason) == (4001, "done")
        assert str(caught.value) == "connection closed: 4001 done"
        with pytest.raises(ConnectionClosed):
            await ws.send("too late")


async def test_client_close_reaches_the_server(server_name: ServerName) -> None:
    """close(code, reason) performs the closing handshake; the app sees a disconnect.

    uvicorn hands the app the client's code; hypercorn always says 1006 when the
    client closes first, whatever the code.
    """
    app = apps.Recorder()
    async with serve(app, server=server_name) as server, server.connect() as ws:
        assert await ws.recv() == "accepted"
        assert (ws.closed, ws.close_code, ws.close_reason) == (False, None, None)
        await ws.send("one")
        await ws.close(4000, "leaving")
        assert ws.closed
        assert ws.close_code == 4000  # the server's echo
        with anyio.fail_after(5):
            await app.disconnected.wait()
        assert app.codes == [4000 if server_name == "uvicorn" else 1006]
        assert app.received == ["one"]
        await ws.close()  # closing again does nothing
        with pytest.raises(ConnectionClosed) as caught:
            await ws.send("too late")
        assert caught.value.code == 4000


async def test_refused_handshake_raises_invalid_status_403(server_name: ServerName) -> None:
    """An app that closes before accepting makes the handshake fail with HTTP 403."""
    async with serve(apps.refuse, server=server_name) as server:
        with pytest.raises(InvalidStatus) as caught:
            async with server.connect():
                pass  # pragma: no cover
    assert caught.value.status_code == 403
    assert "403" in str(caught.value)


async def test_subprotocol_is_negotiated(server_name: ServerName) -> None:
    """The subprotocol the app selects among those offered is reported by the client."""
    app = apps.Subprotocols("chat.v2", "chat.v1")
    async with serve(app, server=server_name) as server:
        async with server.connect(subprotocols=["chat.v3", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert await ws.recv() == "chat.v2"
        async with server.connect() as ws:
            assert ws.subprotocol is None
            assert await ws.recv() == ""


async def test_compression_can_be_offered(server_name: ServerName) -> None:
    """compression="deflate" negotiates permessage-deflate; messages still round-trip."""
    async with serve(apps.echo, server=server_name) as server:
        async with server.connect(compression="deflate") as ws:
            headers = {k.lower(): v for k, v in ws.response_headers}
            assert "permessage-deflate" in headers["sec-websocket-extensions"]
            await ws.send("a" * 10_000)
            assert await ws.recv() == "a" * 10_000
        async with server.connect() as ws:
            assert all(k.lower() != "sec-websocket-extensions" for k, _ in ws.response_headers)


async def test_abort_is_a_disconnect_without_close_frame(server_name: ServerName) -> None:
    """abort() drops the connection; the app sees an abnormal disconnect.

    hypercorn reports 1006; uvicorn's default WebSocket protocol reports 1005.
    """
    app = apps.Recorder()
    async with serve(app, server=server_name) as server, server.connect() as ws:
        assert await ws.recv() == "accepted"
        await ws.abort()
        with anyio.fail_after(5):
            await app.disconnected.wait()
        assert app.codes == [ABORT_CODES[server_name]]
        assert ws.closed
        assert ws.close_code == 1006
        with pytest.raises(ConnectionClosed) as caught:
            await ws.recv()
        assert caught.value.code == 1006


async def test_a_client_that_stops_reading_holds_the_server_back(
    server_name: ServerName,
) -> None:
    """Not calling recv() leaves data in the socket: the server's sends block.

    16 MiB cannot fit in the loopback buffers, so the app cannot finish sending until
    the client reads again; then every message arrives.
    """
    app = apps.Flood(count=256, size=65536)
    async with (
        serve(app, server=server_name) as server,
        server.connect(receive_buffer=65536) as ws,
    ):
        with anyio.move_on_after(0.5):
            await app.done.wait()
        assert not app.done.is_set()
        assert app.sent < app.count
        with anyio.fail_after(20):
            for _ in range(app.count):
                assert len(await ws.recv()) == app.size
            await app.done.wait()


async def test_connection_refused_raises_oserror() -> None:
    """Connecting to a port nobody listens on raises OSError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        async with connect(f"ws://127.0.0.1:{port}/"):
            pass  # pragma: no cover


async def test_open_timeout_bounds_a_silent_server() -> None:
    """A server that accepts TCP but never answers the handshake times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(TimeoutError):
            async with connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2):
                pass  # pragma: no cover


async def test_secure_urls_are_refused() -> None:
    """connect() speaks ws:// only."""
    with pytest.raises(ValueError, match="ws://"):
        connect("wss://127.0.0.1:1/")


def test_importing_testing_does_not_import_the_servers() -> None:
    """`wsrooms.testing` imports uvicorn or hypercorn only when a server is started."""
    code = (
        "import sys, wsrooms.testing; "
        "assert not {'uvicorn', 'hypercorn'} & set(sys.modules), sorted(sys.modules)"
    )
    src = Path(__file__).parents[1] / "src"
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={"PYTHONPATH": str(src)},
        timeout=30,
    )
