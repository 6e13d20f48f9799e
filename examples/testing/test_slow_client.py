"""The testing guide: a client that stops reading, and a client that vanishes."""

# --8<-- [start:relay]
import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import RoomEndpoint
from wsrooms.testing import serve

pytestmark = pytest.mark.anyio


class Relay(RoomEndpoint):
    """Everything a member sends goes to the other members of room "r"."""

    encoding = "text"
    send_queue_size = 16  # small, so that a stuck member overflows fast
    codes: dict[str, int] = {}
    ended: anyio.Event

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        await self.join("r")

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: str) -> None:
        await self.broadcast("r", data, exclude_self=True)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.codes[websocket.query_params["who"]] = close_code
        self.ended.set()


app = Starlette(routes=[WebSocketRoute("/ws", Relay)])


async def test_a_member_that_reads_nothing_is_dropped_with_1008() -> None:
    Relay.codes, Relay.ended = {}, anyio.Event()
    async with serve(app) as server:
        # A small receive buffer, and never a recv(): the server's sends back up.
        async with (
            server.connect("/ws?who=stuck", receive_buffer=4096) as stuck,
            server.connect("/ws?who=publisher") as publisher,
        ):
            with anyio.fail_after(30):
                # 4 KB messages fill the kernel buffers, then the outbox overflows.
                while len(Relay.hub.members("r")) == 2:
                    await publisher.send("x" * 4000)
                # The stuck member has left the room; now drop its TCP connection too
                # (hypercorn on trio cannot interrupt a write to it before that).
                await stuck.abort()
                await Relay.ended.wait()
    assert Relay.codes["stuck"] == 1008
    # --8<-- [end:relay]


# --8<-- [start:vanish]
async def test_a_client_that_vanishes_ends_its_connection() -> None:
    Relay.codes, Relay.ended = {}, anyio.Event()
    async with serve(app) as server:
        async with server.connect("/ws?who=gone") as ws:
            await ws.abort()  # no close frame: the TCP connection is reset
            with anyio.fail_after(10):
                await Relay.ended.wait()
    # uvicorn reports a vanished client as 1005, hypercorn as 1006.
    assert Relay.codes["gone"] in (1005, 1006)
    # --8<-- [end:vanish]
