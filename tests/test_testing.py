"""Tests for `wsrooms.testing`: real servers on a free loopback port and the anyio client.

Every test runs on asyncio and on trio, against uvicorn (asyncio only) and hypercorn,
with tiny plain-ASGI apps from `tests/_asgi_apps.py`. No test sleeps to synchronise:
events and the servers' own signals do, and `anyio.fail_after` bounds every wait.

The `test_quirk_*` tests pin what docs/topics/servers.md says each server does on its
own, so that a server release that changes one of those fails here first.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.types import Receive, Scope, Send

from tests import _asgi_apps as apps
from wsrooms import testing
from wsrooms.testing import (
    ConnectionClosed,
    InvalidStatus,
    ServerName,
    WebSocketClient,
    connect,
    serve,
)

pytestmark = pytest.mark.anyio

# The servers' answers to a client that vanishes (docs/topics/servers.md).
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


async def test_leaving_with_unread_messages_is_prompt(server_name: ServerName) -> None:
    """A client that stopped reading still closes at once: it reads on while it closes.

    (websockets' trio client alone would wait for its close timeout, then never leave
    its nursery.)"""
    app = apps.Flood(count=64, size=65536)
    async with serve(app, server=server_name) as server:
        with anyio.fail_after(2):
            async with server.connect(receive_buffer=16384, close_timeout=5) as ws:
                assert len(await ws.recv()) == app.size
            assert ws.close_code == 1000


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


def test_all_is_the_public_surface() -> None:
    """`wsrooms.testing.__all__` names exactly its public names, each documented."""
    assert set(testing.__all__) == {
        "ConnectionClosed",
        "HandshakeError",
        "InvalidStatus",
        "Server",
        "ServerName",
        "WebSocketClient",
        "connect",
        "serve",
    }
    assert {n for n in dir(testing) if not n.startswith("_")} == set(testing.__all__)
    for name in testing.__all__:
        if name != "ServerName":  # a Literal alias: documented in the reference page
            assert getattr(testing, name).__doc__, f"{name} has no docstring"


# What the servers do on their own (docs/topics/servers.md) ------------------------------
#
# The close codes a client's close and a vanished client are reported with, and the 403
# for a refused handshake, are pinned by test_client_close_reaches_the_server,
# test_abort_is_a_disconnect_without_close_frame and
# test_refused_handshake_raises_invalid_status_403 above.


async def test_quirk_shutdown_with_connections_open(
    server_name: ServerName, anyio_backend_name: str
) -> None:
    """On shutdown uvicorn closes with 1012 at once and tells the app. hypercorn waits its
    graceful timeout, then ends the connection: on trio it cancels the app, telling it
    nothing, and the client sees the TCP connection drop (1006); on asyncio the client
    sees 1011 with Python 3.11 (the app is told nothing) and 1006 with later Pythons (the
    app is told 1006)."""
    app = apps.Recorder()
    timeout = 1.0
    async with serve(app, server=server_name, shutdown_timeout=timeout) as server:
        async with server.connect() as ws:
            assert await ws.recv() == "accepted"
            began = anyio.current_time()
            with anyio.fail_after(timeout + 3):
                await server.shutdown()
                await ws.wait_closed()
            waited = anyio.current_time() - began
            if server_name == "uvicorn":
                assert ws.close_code == 1012
                assert app.codes == [1012]
                assert waited < timeout
            else:
                if anyio_backend_name == "trio":
                    assert (ws.close_code, app.codes) == (1006, [])
                elif sys.version_info < (3, 12):
                    assert (ws.close_code, app.codes) == (1011, [])
                else:
                    assert (ws.close_code, app.codes) == (1006, [1006])
                assert waited >= timeout
        await server.shutdown()  # a second call is harmless


async def test_quirk_shutdown_waits_for_a_client_that_reads_nothing(
    server_name: ServerName, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn stops after its graceful timeout with a client that reads nothing, logging the
    cancellation as "Exception in ASGI application"; hypercorn waits for that client for
    ever, so `Server.shutdown()` aborts it."""
    app = apps.Flood(count=256, size=65536)
    async with (
        serve(app, server=server_name, shutdown_timeout=0.5) as server,
        server.connect(receive_buffer=16384) as ws,
    ):
        with anyio.fail_after(5):
            await server.shutdown()
        with anyio.fail_after(5):
            closed = await read_until_closed(ws)
        assert closed.code == 1006
    aborted = [r for r in caplog.records if "aborting 1 client(s)" in r.getMessage()]
    assert len(aborted) == (1 if server_name == "hypercorn" else 0)
    cancelled = [
        r
        for r in caplog.records
        if r.name == "uvicorn.error"
        and r.getMessage().startswith("Exception in ASGI application")
        and r.exc_info is not None
        and isinstance(r.exc_info[1], anyio.get_cancelled_exc_class())
    ]
    assert len(cancelled) == (1 if server_name == "uvicorn" else 0)


class StuckWriter:
    """Accept, send 64 KiB messages until a send blocks, let the test cancel that send,
    then try to send a close frame (within 0.5 s) and record what happened."""

    def __init__(self) -> None:
        self.sending = anyio.Event()
        self.send_ended = anyio.Event()
        self.sent = 0
        self.scope = anyio.CancelScope()
        self.close_sent: bool | None = None
        self.done = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        try:
            with self.scope:
                self.sending.set()
                # hypercorn's send after a disconnect returns without a checkpoint: check.
                while not self.scope.cancel_called:
                    await send({"type": "websocket.send", "bytes": b"x" * 65536})
                    self.sent += 1
            self.send_ended.set()
            self.close_sent = False
            with anyio.move_on_after(0.5):
                await send({"type": "websocket.close", "code": 1000})
                self.close_sent = True
        finally:
            self.send_ended.set()
            self.done.set()


async def test_quirk_a_write_to_a_client_that_reads_nothing(
    server_name: ServerName, anyio_backend_name: str
) -> None:
    """A send to a client that reads nothing blocks on every server. uvicorn and hypercorn
    on asyncio let it be cancelled, but then a close frame blocks too; hypercorn on trio
    shields the write: it ends only when the client goes."""
    app = StuckWriter()
    async with (
        serve(app, server=server_name) as server,
        server.connect(receive_buffer=16384) as ws,
    ):
        with anyio.fail_after(10):
            await app.sending.wait()
            sent = -1
            while sent != app.sent:  # every task blocked twice with no progress: stuck
                sent = app.sent
                await anyio.wait_all_tasks_blocked()
        app.scope.cancel()
        if server_name == "hypercorn" and anyio_backend_name == "trio":
            with anyio.move_on_after(0.5):
                await app.send_ended.wait()
            assert not app.send_ended.is_set()
            await ws.abort()
            with anyio.fail_after(5):
                await app.done.wait()
        else:
            with anyio.fail_after(5):
                await app.done.wait()
            assert app.close_sent is False
            assert app.sent == sent
            await ws.abort()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_quirk_hypercorn_asyncio_reports_cancelled_connections_on_python_3_11(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Python 3.11, hypercorn on asyncio makes asyncio report every connection it cancels
    after its graceful timeout as an error ("Exception in callback
    StreamReaderProtocol.connection_made"); Python 3.12 does not. serve() drops exactly
    that report."""
    import asyncio

    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: reports.append(context))

    async def shut_down_with_a_connection_open() -> None:
        app = apps.Recorder()
        async with serve(app, server="hypercorn", shutdown_timeout=0.2) as server:
            async with server.connect() as ws:
                assert await ws.recv() == "accepted"
                with anyio.fail_after(5):
                    await server.shutdown()

    try:
        await shut_down_with_a_connection_open()
        assert reports == []  # serve() drops it
        monkeypatch.setattr(
            "wsrooms.testing._server._quiet_cancelled_stream_callbacks", contextlib.nullcontext
        )
        await shut_down_with_a_connection_open()
    finally:
        loop.set_exception_handler(previous)
    reported = [
        c
        for c in reports
        if isinstance(c.get("exception"), asyncio.CancelledError)
        and "StreamReaderProtocol.connection_made" in str(c.get("message"))
    ]
    assert len(reported) == (1 if sys.version_info < (3, 12) else 0)
    assert len(reports) == len(reported)


def test_quirk_server_defaults() -> None:
    """The defaults docs/topics/servers.md quotes: uvicorn speaks `websockets-sansio` by
    default, pings every 20 s (20 s timeout) and takes messages up to 16 MiB; hypercorn
    waits 3 s on shutdown, does not ping and takes messages up to 16 MiB."""
    import uvicorn
    from hypercorn.config import Config as HypercornConfig
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    config = uvicorn.Config(apps.echo)
    config.load()
    assert config.ws_protocol_class is WebSocketsSansIOProtocol
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (20.0, 20.0)
    assert config.ws_max_size == 16 * 2**20
    hypercorn_config = HypercornConfig()
    assert hypercorn_config.graceful_timeout == 3.0
    assert hypercorn_config.websocket_ping_interval is None
    assert hypercorn_config.websocket_max_message_size == 16 * 2**20
