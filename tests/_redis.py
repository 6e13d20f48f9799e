"""A real redis-server for the tests: started on a free loopback port, stopped by its PID.

`RedisServer` can be frozen (SIGSTOP / SIGCONT), killed and started again on the same
port, as an outage in production would. `redis_command` sends one command on a fresh
connection of its own (coredis, no retries), for the assertions: `PUBSUB CHANNELS`,
`PUBSUB NUMSUB`, `CLIENT LIST`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import coredis
from coredis.retry import NoRetryPolicy

__all__ = [
    "RedisServer",
    "admin",
    "channels",
    "numsub",
    "publish_raw",
    "running_redis",
    "wait_until",
    "wsrooms_clients",
]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Poll a condition that has no event until it holds (fails after `within` s)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - Redis-side state has no event to wait on
            await anyio.sleep(0.01)


class RedisServer:
    """One redis-server process on 127.0.0.1, restartable on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        argv += ["--loglevel", "warning"]
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def start(self) -> None:
        """Start redis-server and return once it answers on its port."""
        assert self.process is None, "already running"
        self.process = self._spawn()
        with anyio.fail_after(10):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", self.port)
                except OSError:
                    await anyio.sleep(0.005)
                    continue
                async with stream:
                    await stream.send(b"PING\r\n")
                    if (await stream.receive()).startswith(b"+PONG"):
                        return

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.frozen = False

    async def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to the clients."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.frozen:
            self.thaw()
        os.kill(process.pid, signal.SIGKILL)
        await anyio.to_thread.run_sync(process.wait)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if self.frozen:
            self.thaw()
        os.kill(process.pid, signal.SIGTERM)
        try:
            with anyio.fail_after(5):
                await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
        except TimeoutError:
            os.kill(process.pid, signal.SIGKILL)
            await anyio.to_thread.run_sync(process.wait)


@asynccontextmanager
async def running_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop()


@asynccontextmanager
async def admin(port: int) -> AsyncIterator[coredis.Redis[str]]:
    """A client of the test's own (no retries, short bounds) for assertions on Redis."""
    client: coredis.Redis[str] = coredis.Redis(
        "127.0.0.1",
        port,
        decode_responses=True,
        retry_policy=NoRetryPolicy(),
        connect_timeout=2,
        stream_timeout=2,
    )
    with anyio.fail_after(5):
        async with client:
            yield client


async def channels(port: int) -> set[str]:
    """`PUBSUB CHANNELS`: the channels with at least one subscriber."""
    async with admin(port) as client:
        return set(await client.pubsub_channels())


async def numsub(port: int, *names: str) -> dict[str, int]:
    """`PUBSUB NUMSUB`: subscribers per channel."""
    async with admin(port) as client:
        return dict(await client.pubsub_numsub(*names))


async def wsrooms_clients(port: int) -> list[dict[str, Any]]:
    """`CLIENT LIST`, only the connections a RedisBackend made (named `wsrooms:…`)."""
    async with admin(port) as client:
        return [
            dict(info)
            for info in await client.client_list()
            if str(info.get("name", "")).startswith("wsrooms:")
        ]


async def publish_raw(port: int, channel: str, data: bytes) -> int:
    """PUBLISH bytes as they are (for malformed envelopes)."""
    async with admin(port) as client:
        return await client.publish(channel, data)
