"""The chat example across processes: `examples.chat:app` with `WSROOMS_REDIS_URL` set,
served by `uvicorn --workers 2` and by `hypercorn -k trio --workers 2`, on the test's own
redis-server.

The two workers of one server share its listening socket, so the kernel, not the test,
decides which worker takes a connection. The test tells the workers apart through the
chat's own protocol instead: a client's own "join" event says how many members its room
has *in that worker* (`hub.members` is local), and the clients are opened one at a time
(each waits for its own join), so the counts are exact. The first client of a room says
1; the next one that says 1 again is on the other worker. Redis then confirms it:
`PUBSUB NUMSUB wsrooms:room:{room}` is 2 only when both workers have a local member.

The test function is an anyio test like every other (conftest: asyncio and trio); the
servers are processes of their own, so only the clients run on the test's loop: both
client loops against both servers are four runs of 2 to 4 s each, mostly spawning the
workers and shutting them down.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from tests._redis import numsub, running_redis
from wsrooms.testing import WebSocketClient, connect

pytestmark = pytest.mark.anyio

logger = logging.getLogger("tests.chat_workers")

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent  # the executables of the venv running the tests

#: At most this many clients per room to find members on both workers (the kernel hands
#: a connection to either worker: 2 to 6 clients were enough in 50 runs, 4 at a time on
#: two cores among them).
MAX_CLIENTS = 40
#: Messages per sender (plus a last one that says it is the end).
PER_SENDER = 5


def argv(server: str, fd: int) -> list[str]:
    if server == "uvicorn":
        return [str(BIN / "uvicorn"), "examples.chat:app", "--workers", "2", "--fd", str(fd)]
    return [
        *(str(BIN / "hypercorn"), "-k", "trio", "--workers", "2"),
        *("--bind", f"fd://{fd}", "examples.chat:app"),
    ]


@asynccontextmanager
async def chat_server(
    server: str, redis_url: str, log: Path
) -> AsyncIterator[tuple[str, anyio.abc.Process]]:
    """The chat example served by two worker processes; yields its ws:// base URL and
    the server's (parent) process.

    The test binds the listening socket and hands it over, so a client that connects
    before a worker is ready waits in the backlog instead of being refused. The server
    runs in a process group of its own and is stopped as Ctrl-C would stop it (SIGINT
    to the group: both servers then shut every worker down through its lifespan),
    within a bound, then SIGKILL to the whole group.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    fd = sock.fileno()
    env = {**os.environ, "WSROOMS_REDIS_URL": redis_url}
    with sock, log.open("wb") as output:
        process = await anyio.open_process(
            argv(server, fd),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            pass_fds=(fd,),
            start_new_session=True,
        )
        try:
            yield f"ws://127.0.0.1:{sock.getsockname()[1]}", process
        except BaseException:
            written = await anyio.Path(log).read_text(errors="replace")
            logger.error("%s log:\n%s", server, written)  # noqa: TRY400 - the log, not a traceback
            raise
        finally:
            stopping = time.monotonic()
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    with suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGINT)
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    with suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()
                await process.aclose()
            logger.info("%s stopped in %.2fs", server, time.monotonic() - stopping)


async def subscribers(port: int, channel: str) -> int:
    return (await numsub(port, channel))[channel]


async def until_subscribed(
    port: int, channel: str, processes: int, within: float, server: anyio.abc.Process
) -> None:
    """Poll Redis (a subscription is carried out after the join that needs it); fail at
    once if the server has exited."""
    with anyio.fail_after(within):
        while await subscribers(port, channel) < processes:
            assert server.returncode is None, f"the server exited with {server.returncode}"
            await anyio.sleep(0.02)


class Member:
    """A chat client and the events it has read so far.

    It reads only when the test waits for something: what it has not read yet waits in
    its worker's outbox (1024 deep; a client here gets a few dozen events at most).
    """

    def __init__(self, name: str, client: WebSocketClient) -> None:
        self.name = name
        self.client = client
        self.events: list[dict[str, Any]] = []

    async def wait_for(
        self, condition: Callable[[list[dict[str, Any]]], bool], within: float = 10.0
    ) -> None:
        """Read events until `condition(self.events)` holds."""
        try:
            with anyio.fail_after(within):
                while not condition(self.events):
                    event = json.loads(await self.client.recv())
                    assert isinstance(event, dict), event
                    self.events.append(event)
        except TimeoutError:
            raise AssertionError(f"{self.name} waited {within}s; it has {self.events}") from None

    async def own_join(self) -> dict[str, Any]:
        """This client's own join event (it is then a member of its room)."""

        def mine(event: dict[str, Any]) -> bool:
            return event.get("event") == "join" and event.get("name") == self.name

        await self.wait_for(lambda events: any(mine(e) for e in events))
        return next(e for e in self.events if mine(e))

    def said(self, sender: str) -> list[str]:
        return said(self.events, sender)


def said(events: list[dict[str, Any]], sender: str) -> list[str]:
    """The texts of `sender` among `events`, in order."""
    return [e["text"] for e in events if e.get("event") == "message" and e["name"] == sender]


async def on_both_workers(
    base: str, room: str, clients: AsyncExitStack
) -> tuple[list[Member], Member, Member]:
    """Open clients in `room`, one at a time, until it has members on both workers.

    Returns the members, one on each worker (the first, and the first whose own join
    counted 1 again).
    """
    members: list[Member] = []
    for index in range(MAX_CLIENTS):
        name = f"{room}{index}"
        # Bounded by `open_timeout` (not a cancel scope: on trio, websockets' client holds
        # a nursery open for the life of the connection).
        url = f"{base}/ws/{room}?name={name}"
        client = await clients.enter_async_context(connect(url, open_timeout=10))
        member = Member(name, client)
        members.append(member)
        if (await member.own_join())["members"] == 1 and len(members) > 1:
            return members, members[0], member
    raise AssertionError(f"{MAX_CLIENTS} clients in {room!r}, all on one worker")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", ["uvicorn", "hypercorn-trio"])
async def test_the_chat_spans_two_workers(server: str, tmp_path: Path) -> None:
    """A message sent by a client reaches every member of its room on both workers, each
    sender's messages in order, exactly once; nothing reaches another room."""
    log = tmp_path / "server.log"
    async with running_redis() as redis, chat_server(server, redis.url, log) as (base, process):
        # Both workers have started their hubs: each subscribes to the broadcast-to-all
        # channel when it starts (spawning and importing takes a second or two).
        started = time.monotonic()
        await until_subscribed(redis.port, "wsrooms:all", 2, 30, process)
        logger.info("both workers up in %.2fs", time.monotonic() - started)
        async with AsyncExitStack() as clients:
            room_a, x, y = await on_both_workers(base, "a", clients)
            await until_subscribed(redis.port, "wsrooms:room:a", 2, 10, process)
            # "b" needs no spreading: "a" has members on both workers, so wherever the
            # members of "b" land, they share a hub with members of "a". (Which worker a
            # connection lands on is the kernel's choice; hypercorn-trio can give one
            # worker 40 in a row.)
            room_b = []
            for index in range(2):
                url = f"{base}/ws/b?name=b{index}"
                client = await clients.enter_async_context(connect(url, open_timeout=10))
                room_b.append(Member(f"b{index}", client))
                await room_b[-1].own_join()
            b2 = room_b[-1]
            await until_subscribed(redis.port, "wsrooms:room:b", 1, 10, process)
            logger.info("clients: %d in a, %d in b", len(room_a), len(room_b))

            # x and y (one on each worker) send at the same time.
            texts = {
                s.name: [f"{s.name}-{i}" for i in range(PER_SENDER)] + [f"{s.name}-end"]
                for s in (x, y)
            }

            async def say(sender: Member) -> None:
                for text in texts[sender.name]:
                    await sender.client.send_json({"text": text})

            with anyio.fail_after(10):
                async with anyio.create_task_group() as senders:
                    senders.start_soon(say, x)
                    senders.start_soon(say, y)
            # Every member of "a", on either worker, gets both senders' messages.
            for member in room_a:
                await member.wait_for(
                    lambda events: all(said(events, s)[-1:] == [f"{s}-end"] for s in texts)
                )
            # Then x and y, which have both seen everything, send once more: a copy of any
            # earlier message (an echo of a worker's own publish, a double delivery) comes
            # through Redis before the other worker's "sync", which was published after.
            for member in (x, y):
                texts[member.name].append(f"{member.name}-sync")
                await member.client.send_json({"text": f"{member.name}-sync"})
            for member in room_a:
                await member.wait_for(
                    lambda events: all(said(events, s)[-1:] == [f"{s}-sync"] for s in texts)
                )
                # All of them, each sender's in order, each once.
                for sender, expected in texts.items():
                    assert member.said(sender) == expected, (member.name, member.events)

            # Every message of "a" has reached both workers' hubs by now. A marker sent
            # in "b" is the first message its members get: nothing of "a" came before.
            await b2.client.send_json({"text": "b-marker"})
            for member in room_b:
                await member.wait_for(lambda events: bool(said(events, b2.name)))
                messages = [e for e in member.events if e.get("event") == "message"]
                assert messages == [{"event": "message", "name": b2.name, "text": "b-marker"}]
                assert all(e["name"].startswith("b") for e in member.events), member.events
            for member in room_a:
                assert all(e["name"].startswith("a") for e in member.events), member.events
    output = await anyio.Path(log).read_text(errors="replace")
    assert "Traceback" not in output, output
