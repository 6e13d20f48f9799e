"""The testing guide: a refused handshake raises InvalidStatus with the HTTP status."""

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import BaseWSEndpoint
from wsrooms.testing import InvalidStatus, serve

pytestmark = pytest.mark.anyio


class MembersOnly(BaseWSEndpoint):
    async def on_connect(self, websocket: WebSocket) -> None:
        if websocket.query_params.get("token") != "secret":
            await websocket.close()  # before accept: HTTP 403
            return
        await self.accept(websocket)


async def test_a_wrong_token_is_refused() -> None:
    app = Starlette(routes=[WebSocketRoute("/members", MembersOnly)])
    async with serve(app) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with server.connect("/members?token=nope"):
                pass
        assert refused.value.status_code == 403
        async with server.connect("/members?token=secret"):
            pass  # accepted
