"""The testing guide: Starlette's TestClient on both loops (needs httpx2)."""

from collections.abc import Callable

from starlette.testclient import TestClient

from examples.actions import app


def test_actions_answer(test_client_factory: Callable[..., TestClient]) -> None:
    with test_client_factory(app) as client, client.websocket_connect("/actions") as ws:
        ws.send_json({"id": 1, "action": "add", "args": [1, 2]})
        assert ws.receive_json() == {"id": 1, "result": 3}
