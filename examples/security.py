"""Check the Origin, and authenticate a WebSocket four ways: cookie, header, subprotocol,
FastAPI dependency.

- `/cookie`: a browser sends its cookies with the handshake; `allowed_origins` makes sure
  the page that opened the socket is yours (cross-site WebSocket hijacking).
- `/header`: an `Authorization: Bearer ...` header, for clients that are not browsers.
- `/subprotocol`: a browser passes a token as a second subprotocol,
  `new WebSocket(url, ["chat.v1", "token.TOKEN"])`; the server answers `chat.v1`.
- `/members`: a FastAPI route whose `Depends` raises `WebSocketException`.

Every refusal happens before the accept, so the client gets HTTP 403 at the handshake.

Run it from the root of the wsrooms repository (FastAPI needed: `pip install fastapi`)::

    uvicorn examples.security:app
    hypercorn -k trio examples.security:app

then `python -m websockets -H "Authorization: Bearer t-bob" ws://127.0.0.1:8000/header`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketException, status

from wsrooms import Hub, Room, RoomEndpoint

# Stand-ins for a session store and an API token table.
SESSIONS = {"s-ann": "ann"}  # session cookie -> user
TOKENS = {"t-bob": "bob", "t-cat": "cat"}  # bearer token -> user

hub = Hub()


# --8<-- [start:base]
class Members(RoomEndpoint):
    """Whoever `authenticate` names joins the room `members`; others get HTTP 403."""

    hub = hub
    allowed_origins = ("https://chat.example.com", "http://127.0.0.1:8000")

    def authenticate(self, websocket: WebSocket) -> str | None:
        raise NotImplementedError

    async def on_connect(self, websocket: WebSocket) -> None:
        self.user = self.authenticate(websocket)
        if self.user is None:
            await websocket.close()  # before accept: HTTP 403
            return
        await super().on_connect(websocket)
        await self.join("members")

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: Any) -> None:
        await self.broadcast("members", {"from": self.user, "data": data})
        # --8<-- [end:base]


# --8<-- [start:cookie]
class CookieMembers(Members):
    def authenticate(self, websocket: WebSocket) -> str | None:
        return SESSIONS.get(websocket.cookies.get("session", ""))
        # --8<-- [end:cookie]


# --8<-- [start:header]
class HeaderMembers(Members):
    def authenticate(self, websocket: WebSocket) -> str | None:
        scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
        return TOKENS.get(token) if scheme.lower() == "bearer" else None
        # --8<-- [end:header]


# --8<-- [start:subprotocol]
class SubprotocolMembers(Members):
    subprotocols = ("chat.v1",)  # the one the server answers with; never the token

    def authenticate(self, websocket: WebSocket) -> str | None:
        for offered in websocket.scope.get("subprotocols", ()):
            if offered.startswith("token."):
                return TOKENS.get(offered.removeprefix("token."))
        return None
        # --8<-- [end:subprotocol]


app = FastAPI()
app.router.add_websocket_route("/cookie", CookieMembers)  # type: ignore[arg-type]
app.router.add_websocket_route("/header", HeaderMembers)  # type: ignore[arg-type]
app.router.add_websocket_route("/subprotocol", SubprotocolMembers)  # type: ignore[arg-type]

# --8<-- [start:depends]
members = Room(name="members", hub=hub)


async def current_user(token: Annotated[str, Query()] = "") -> str:
    user = TOKENS.get(token)
    if user is None:
        # Before the accept: FastAPI closes the socket, and the client gets HTTP 403.
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="log in")
    return user


@members.on_connection
async def joined(room: Room, websocket: WebSocket, user: str) -> None:
    await room.push({"joined": user})


@members.on_receive("json")
async def relay(room: Room, websocket: WebSocket, message: Any) -> None:
    await room.push({"from": websocket.state.user, "data": message})


@app.websocket("/members")
async def members_socket(websocket: WebSocket, user: Annotated[str, Depends(current_user)]) -> None:
    websocket.state.user = user
    await members.connect(websocket, user)  # `user` reaches on_connection
    # --8<-- [end:depends]
