"""Close codes and the exceptions wsrooms raises or understands.

The hierarchy::

    Exception
    └── WsroomsError                 base of every wsrooms exception
        ├── InvalidMessage           user code rejects a message   -> close 1007
        │   └── InvalidRoomName      a room name breaks a rule     -> close 1007 (403 before accept)
        │                            (also a ValueError)
        ├── JoinRefused              can_join() said no            -> close 1008 (403 before accept)
        └── HubNotRunning            a hub that needs `async with hub:` is used outside it
                                     (also a RuntimeError)

`CloseCode` names the WebSocket close codes as the `websockets` library does.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "CloseCode",
    "HubNotRunning",
    "InvalidMessage",
    "InvalidRoomName",
    "JoinRefused",
    "WsroomsError",
]


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455 section 7.4), with the member names of `websockets`."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


class WsroomsError(Exception):
    """Base class of every exception defined by wsrooms."""


class InvalidMessage(WsroomsError):
    """Raise from a handler to reject a client's message.

    The default exception hook closes the connection with 1007 (`INVALID_DATA`) and
    sends `reason` to the client: raising this exception is the code's choice to say it.

    Args:
        reason: A short text for the client (at most 123 UTF-8 bytes fit in a close frame;
            a longer one is cut).
    """

    def __init__(self, reason: str = "invalid message") -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidRoomName(InvalidMessage, ValueError):
    """A room name that is not a non-empty `str` of at most 256 characters without
    control characters.

    Raised by every operation that takes a room name (`join`, `leave`, `broadcast`,
    `members`, ...). A room name taken from a client therefore closes that client with
    1007 (`INVALID_DATA`) and the fixed reason "invalid room name", or answers the
    handshake with HTTP 403 when raised before accept; never 1011. `str(exc)` says
    which rule was broken, for the developer, and is never sent to the client.

    Args:
        detail: Which rule the name broke (the name itself only escaped and cut).

    Attributes:
        reason: Always "invalid room name".
    """

    def __init__(self, detail: str) -> None:
        super().__init__("invalid room name")
        self.args = (detail,)


class JoinRefused(WsroomsError):
    """A connection was not allowed to join a room (`can_join` returned false).

    Uncaught, it closes the connection with 1008 (`POLICY_VIOLATION`, reason
    "join refused"), or answers the handshake with HTTP 403 when raised before accept.
    """

    def __init__(self, room: str) -> None:
        super().__init__(f"joining room {room!r} was refused")
        self.room = room


class HubNotRunning(WsroomsError, RuntimeError):
    """A hub whose backend needs a running hub was used outside `async with hub:`.

    Start the hub in the application's lifespan::

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with hub:
                yield
    """
