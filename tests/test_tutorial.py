"""The tutorial, followed as a reader would: each step's chat.py, its test file, its commands.

Each step's file (examples/tutorial/chat_step*.py, and examples/chat.py for the last) is
copied next to chat.html as chat.py in a fresh folder, then served and talked to; the
tutorial's test_chat.py runs there with pytest; and the final chat.py runs under the
commands the tutorial gives (`uvicorn chat:app`, `hypercorn -k trio chat:app`,
`hypercorn chat:app`), on a socket this test binds, until SIGINT stops it.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import anyio.abc
import pytest

from wsrooms.testing import connect, serve

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TUTORIAL = EXAMPLES / "tutorial"
BIN = Path(sys.executable).parent


def readers_folder(tmp_path: Path, step: str) -> Path:
    """A folder as the reader has it after `step`: chat.py and chat.html side by side."""
    source = EXAMPLES / "chat.py" if step == "final" else TUTORIAL / f"chat_{step}.py"
    shutil.copyfile(source, tmp_path / "chat.py")
    shutil.copyfile(EXAMPLES / "chat.html", tmp_path / "chat.html")
    shutil.copyfile(TUTORIAL / "test_chat.py", tmp_path / "test_chat.py")
    return tmp_path


def load_chat(folder: Path, step: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tutorial_chat_{step}", folder / "chat.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def recv_json(ws: object) -> object:
    with anyio.fail_after(10):
        return await ws.recv_json()  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_step1_a_room_per_url(tmp_path: Path) -> None:
    """Step 1: both members of /ws/lobby get what one says, as it was sent."""
    chat = load_chat(readers_folder(tmp_path, "step1"), "step1")
    async with (
        serve(chat.app) as server,
        connect(server.ws_url("/ws/lobby")) as one,
        connect(server.ws_url("/ws/lobby")) as two,
        connect(server.ws_url("/ws/garden")) as garden,
    ):
        while len(chat.Chat.hub.members("lobby")) < 2:  # both joined: no sleep, a check
            await anyio.lowlevel.checkpoint()
        await one.send_json({"text": "hello"})
        assert await recv_json(one) == {"text": "hello"}
        assert await recv_json(two) == {"text": "hello"}
        await garden.send_json({"text": "own"})
        assert await recv_json(garden) == {"text": "own"}  # and nothing of the lobby


@pytest.mark.anyio
@pytest.mark.parametrize("step", ["step2", "step3", "step4", "step5", "final"])
async def test_a_message_of_the_wrong_shape_closes_with_1007(tmp_path: Path, step: str) -> None:
    """Steps 2 on: sending 42 closes with 1007 and the reason the handler chose."""
    chat = load_chat(readers_folder(tmp_path, step), step)
    async with serve(chat.app, lifespan=True) as server:
        async with connect(server.ws_url("/ws/lobby?name=ann")) as ws:
            if step not in ("step2",):
                assert (await recv_json(ws))["event"] == "join"  # type: ignore[index]
            await ws.send_json(42)
            with anyio.fail_after(10):
                await ws.wait_closed()
            assert (ws.close_code, ws.close_reason) == (1007, 'send {"text": "..."}')


@pytest.mark.anyio
@pytest.mark.parametrize("step", ["step3", "step4", "step5", "final"])
async def test_joins_and_leaves_are_announced(tmp_path: Path, step: str) -> None:
    """Steps 3 on: members hear who joins and who leaves, with the count."""
    chat = load_chat(readers_folder(tmp_path, step), step)
    async with serve(chat.app, lifespan=True) as server:
        async with connect(server.ws_url("/ws/red?name=ann")) as ann:
            assert await recv_json(ann) == {"event": "join", "name": "ann", "members": 1}
            async with connect(server.ws_url("/ws/red?name=bob")) as bob:
                assert await recv_json(ann) == {"event": "join", "name": "bob", "members": 2}
                assert await recv_json(bob) == {"event": "join", "name": "bob", "members": 2}
            assert await recv_json(ann) == {"event": "leave", "name": "bob", "members": 1}


@pytest.mark.anyio
@pytest.mark.parametrize("step", ["step4", "step5", "final"])
async def test_a_long_message_closes_with_1009(tmp_path: Path, step: str) -> None:
    """Steps 4 on: a message over 4096 characters closes with 1009."""
    chat = load_chat(readers_folder(tmp_path, step), step)
    async with serve(chat.app, lifespan=True) as server:
        async with connect(server.ws_url("/ws/lobby")) as ws:
            await recv_json(ws)
            await ws.send_json({"text": "x" * 4096})
            with anyio.fail_after(10):
                await ws.wait_closed()
            assert ws.close_code == 1009


@pytest.mark.anyio
@pytest.mark.parametrize("step", ["step5", "final"])
async def test_the_page_is_served(tmp_path: Path, step: str) -> None:
    """Steps 5 on: / serves chat.html."""
    chat = load_chat(readers_folder(tmp_path, step), step)
    async with serve(chat.app, lifespan=True) as server:
        stream = await anyio.connect_tcp(server.host, server.port)
        async with stream:
            await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = b""
            with anyio.fail_after(10):
                try:
                    while True:
                        body += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
    assert body.startswith(b"HTTP/1.1 200")
    assert (EXAMPLES / "chat.html").read_bytes() in body


def test_the_readers_test_file_passes(tmp_path: Path) -> None:
    """The tutorial's test_chat.py passes next to the final chat.py, on asyncio and trio."""
    folder = readers_folder(tmp_path, "final")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_chat.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A loopback socket bound to a free port, for a server started with its descriptor."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.set_inheritable(True)
    with sock:
        yield sock


COMMANDS = {
    # What the tutorial's "Run it" says, with the socket this test bound instead of :8000;
    # and the close code the clients get when the server is stopped (Ctrl+C).
    "uvicorn": (["uvicorn", "chat:app", "--fd", "{fd}"], 1012),
    "hypercorn-trio": (["hypercorn", "-k", "trio", "chat:app", "--bind", "fd://{fd}"], 1001),
    "hypercorn-asyncio": (["hypercorn", "chat:app", "--bind", "fd://{fd}"], 1001),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_final_file_runs_under_the_tutorials_commands(
    tmp_path: Path, listening_socket: socket.socket, command: str
) -> None:
    """The final chat.py under each command of "Run it": two members talk; on Ctrl+C the
    clients get 1012 from uvicorn and 1001 (from wsrooms) from hypercorn."""
    # The server runs in a process of its own: one client event loop is enough.
    anyio.run(run_and_stop, tmp_path, listening_socket, command)


async def run_and_stop(tmp_path: Path, listening_socket: socket.socket, command: str) -> None:
    folder = readers_folder(tmp_path, "final")
    argv, shutdown_code = COMMANDS[command]
    fd = listening_socket.fileno()
    argv = [str(BIN / argv[0]), *(a.format(fd=fd) for a in argv[1:])]
    url = f"ws://127.0.0.1:{listening_socket.getsockname()[1]}"
    with (tmp_path / "server.log").open("wb") as log:
        process = await anyio.open_process(
            argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(fd,)
        )
    async with process:
        try:
            # The socket listens already: a client waits in the backlog until the server
            # runs, so there is nothing to poll for.
            with anyio.fail_after(30):
                await talk_then_stop(url, process, shutdown_code)
            with anyio.fail_after(20):
                returncode = await process.wait()
            assert returncode == 0, (tmp_path / "server.log").read_text()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def talk_then_stop(url: str, process: anyio.abc.Process, shutdown_code: int) -> None:
    async with connect(f"{url}/ws/red?name=ann") as ann:
        assert (await recv_json(ann))["name"] == "ann"  # type: ignore[index]
        async with connect(f"{url}/ws/red?name=bob") as bob:
            assert (await recv_json(bob))["name"] == "bob"  # type: ignore[index]
            await bob.send_json({"text": "hi"})
            assert await recv_json(ann) == {"event": "join", "name": "bob", "members": 2}
            assert await recv_json(ann) == {"event": "message", "name": "bob", "text": "hi"}
            process.send_signal(signal.SIGINT)  # Ctrl+C
            await ann.wait_closed()
            await bob.wait_closed()
            assert ann.close_code == bob.close_code == shutdown_code
