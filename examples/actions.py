"""Use case 2: short request/response actions, each in its own task.

`{"id": 1, "action": "add", "args": [1, 2]}` is answered with `{"id": 1, "result": 3}`.
Requests run concurrently, so replies carry the request's id. A bad request closes the
connection with 1007 and a reason the client can read.

Run it from the root of the wsrooms repository, on asyncio or on trio::

    uvicorn examples.actions:app
    hypercorn -k trio examples.actions:app

and talk to it with `python -m websockets ws://127.0.0.1:8000/actions`; then type
`{"id": 1, "action": "add", "args": [1, 2]}`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import BaseWSEndpoint, InvalidMessage

ACTIONS: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "mul": operator.mul,
    "concat": operator.concat,
}


class Actions(BaseWSEndpoint):
    max_tasks = 16

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> Any:
        try:
            action = ACTIONS[data["action"]]
            left, right = data["args"]
        except (KeyError, TypeError, ValueError):
            raise InvalidMessage("expected {id, action, args: [a, b]}") from None
        result = action(left, right)
        await self.send_message({"id": data.get("id"), "result": result})
        return result


app = Starlette(routes=[WebSocketRoute("/actions", Actions)])
