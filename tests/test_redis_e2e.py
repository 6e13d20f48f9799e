"""Hubs on Redis, end to end: real servers, real WebSocket clients, a real redis-server.

One event loop runs one kind of worker, so the asyncio-and-trio test serves one worker in
the test process (uvicorn on asyncio, hypercorn on trio: the test's own loop) and the
other as a server process of its own (tests/_redis_app.py), stopped by its PID.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests._redis import numsub, running_redis, wait_until
from tests._redis_app import make_app
from wsrooms import Hub
from wsrooms.testing import Server, ServerName, WebSocketClient, connect, serve

pytestmark = pytest.mark.anyio

logger = logging.getLogger("tests.redis")

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


@asynccontextmanager
async def server_process(kind: str, redis_url: str, log: Path) -> AsyncIterator[str]:
    """tests._redis_app served by another process; yields its ws:// base URL.

    The test binds the listening socket and hands it over, so a client that connects
    before the server is ready waits in the socket's backlog instead of being refused.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    fd = sock.fileno()
    if kind == "uvicorn":
        argv = [str(BIN / "uvicorn"), "tests._redis_app:app", "--fd", str(fd)]
    else:
        argv = [str(BIN / "hypercorn"), "-k", "trio", "tests._redis_app:app"]
        argv += ["--bind", f"fd://{fd}"]
    env = {**os.environ, "WSROOMS_REDIS_URL": redis_url}
    with sock, log.open("wb") as output:
        process = await anyio.open_process(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            pass_fds=(fd,),
        )
        try:
            yield f"ws://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    os.kill(process.pid, signal.SIGTERM)
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    os.kill(process.pid, signal.SIGKILL)
                    await process.wait()
                await process.aclose()


async def subscribers(port: int, room: str) -> int:
    return (await numsub(port, f"wsrooms:room:{room}"))[f"wsrooms:room:{room}"]


async def until_subscribed(port: int, room: str, processes: int) -> None:
    """Poll Redis (a join's subscription is carried out after the join returns)."""
    with anyio.fail_after(10):
        while await subscribers(port, room) != processes:  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def receive(client: WebSocketClient, count: int, within: float = 10.0) -> list[str]:
    with anyio.fail_after(within):
        return [str(await client.recv()) for _ in range(count)]


async def send_many(client: WebSocketClient, prefix: str, count: int) -> None:
    for index in range(count):
        await client.send(f"{prefix}{index}")


@pytest.mark.timeout(90)
async def test_an_asyncio_worker_and_a_trio_worker_share_a_room(
    anyio_backend_name: str, tmp_path: Path
) -> None:
    """A uvicorn (asyncio) worker and a hypercorn-trio worker on one Redis: the messages
    of a client on either reach the room's members on both, each sender's in order, and
    nothing reaches another room."""
    # This loop's server in the test process, the other loop's in a server process.
    here: ServerName = "hypercorn" if anyio_backend_name == "trio" else "uvicorn"
    there = "uvicorn" if anyio_backend_name == "trio" else "hypercorn-trio"
    per_sender = 40
    async with running_redis() as redis:
        app, hub = make_app(redis.url)
        async with AsyncExitStack() as stack:
            local = await stack.enter_async_context(serve(app, server=here, lifespan=True))
            remote = await stack.enter_async_context(
                server_process(there, redis.url, tmp_path / "server.log")
            )
            a1 = await stack.enter_async_context(local.connect("/ws/red"))
            a2 = await stack.enter_async_context(local.connect("/ws/red"))
            a3 = await stack.enter_async_context(local.connect("/ws/blue"))
            b1 = await stack.enter_async_context(connect(f"{remote}/ws/red"))
            b2 = await stack.enter_async_context(connect(f"{remote}/ws/red"))
            b3 = await stack.enter_async_context(connect(f"{remote}/ws/blue"))
            await until_subscribed(redis.port, "red", 2)
            await until_subscribed(redis.port, "blue", 2)

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_many, a1, "a", per_sender)
                tg.start_soon(send_many, b1, "b", per_sender)
            for member in (a1, a2, b1, b2):
                got = await receive(member, 2 * per_sender)
                assert [m for m in got if m[0] == "a"] == [f"a{i}" for i in range(per_sender)]
                assert [m for m in got if m[0] == "b"] == [f"b{i}" for i in range(per_sender)]
            # Nothing of "red" reached "blue": the first thing there is blue's own.
            await b3.send("blue-marker")
            assert await receive(a3, 1) == ["blue-marker"]
            assert await receive(b3, 1) == ["blue-marker"]

            stats = hub.statistics()
            assert stats.backend_connected
            assert stats.backend_outages == 0
            assert stats.publish_failures == 0
            assert stats.backend_lost == 0
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "Traceback" not in log, log


@asynccontextmanager
async def two_workers(redis_url: str) -> AsyncIterator[tuple[Server, Hub, Server, Hub]]:
    """Two hubs on one Redis in this process (each is a process as far as Redis knows),
    each served by its own server on the running loop."""
    app1, hub1 = make_app(redis_url)
    app2, hub2 = make_app(redis_url)
    async with serve(app1, lifespan=True) as one, serve(app2, lifespan=True) as two:
        yield one, hub1, two, hub2


async def delivered(
    sender: WebSocketClient, receivers: list[WebSocketClient], *, within: float = 15.0
) -> float:
    """Send probes until every receiver got one; the seconds it took."""
    started = time.monotonic()
    attempt = 0
    with anyio.fail_after(within):
        for receiver in receivers:
            while True:
                attempt += 1
                await sender.send(f"probe{attempt}")
                with anyio.move_on_after(0.1):
                    message = str(await receiver.recv())
                    if message.startswith("probe"):
                        break
    return time.monotonic() - started


async def drain(client: WebSocketClient) -> None:
    """Read whatever is queued for `client` (probes that arrived late)."""
    while True:
        with anyio.move_on_after(0.2) as scope:
            await client.recv()
        if scope.cancelled_caught:
            return


@pytest.mark.timeout(90)
async def test_outages_keep_local_rooms_working_and_show_in_statistics() -> None:
    """Redis frozen, then killed and restarted: joins, leaves, disconnects and broadcasts
    inside a worker go on (a new room too); cross-process delivery resumes by itself;
    `hub.statistics()` counts the outage and the failed publishes."""
    async with running_redis() as redis:
        async with AsyncExitStack() as stack:
            one, hub1, two, hub2 = await stack.enter_async_context(two_workers(redis.url))
            x = await stack.enter_async_context(one.connect("/ws/r"))
            y = await stack.enter_async_context(two.connect("/ws/r"))
            await until_subscribed(redis.port, "r", 2)
            await x.send("hello")
            assert await receive(y, 1) == ["hello"]
            assert await receive(x, 1) == ["hello"]

            # Frozen: everything local keeps working, promptly.
            redis.freeze()
            try:
                with anyio.fail_after(3):
                    async with one.connect("/ws/new") as n1, one.connect("/ws/new") as n2:
                        await n1.send("local")
                        assert await receive(n2, 1, within=3) == ["local"]
                    async with one.connect("/ws/r") as x2:
                        await x.send("still")
                        assert await receive(x2, 1, within=3) == ["still"]
            finally:
                redis.thaw()
            took = await delivered(x, [y])
            await drain(x)
            await drain(y)

            # Killed: the outage is seen, local delivery goes on, then it is over.
            await redis.kill()
            await wait_until(lambda: hub1.statistics().backend_outages >= 1, within=10)
            await wait_until(lambda: not hub2.statistics().backend_connected, within=10)
            async with one.connect("/ws/r") as x3:
                await x.send("while down")
                assert await receive(x3, 1) == ["while down"]
            await redis.start()
            back = await delivered(x, [y])
            await wait_until(lambda: hub1.statistics().backend_connected, within=10)
            stats = hub1.statistics()
            assert stats.backend_outages >= 1
            assert stats.publish_failures >= 1  # "while down" did not reach worker two
            assert stats.backend_lost == 0
            await until_subscribed(redis.port, "r", 2)
            await until_subscribed(redis.port, "new", 0)
    logger.info("hub level: delivery back %.2fs after SIGCONT, %.2fs after restart", took, back)
