"""The public surface is exactly what `wsrooms.__all__` names (anyio/httpx practice)."""

from __future__ import annotations

import wsrooms

PUBLIC = {
    "BaseRoom",
    "BaseWSEndpoint",
    "CloseCode",
    "ConnectionStatistics",
    "ConnectionTaskGroup",
    "ConnectionsManager",
    "Hub",
    "HubNotRunning",
    "HubStatistics",
    "InvalidMessage",
    "InvalidRoomName",
    "JoinRefused",
    "Room",
    "RoomConnect",
    "RoomEndpoint",
    "WsroomsError",
}


def test_all_is_the_public_surface() -> None:
    """__all__ lists every public name, each defined, each documented."""
    assert set(wsrooms.__all__) == PUBLIC
    public_attrs = {n for n in dir(wsrooms) if not n.startswith("_")}
    # Submodules that are public in their own right are not re-exported names.
    assert public_attrs - {"backends", "testing"} == PUBLIC
    for name in wsrooms.__all__:
        obj = getattr(wsrooms, name)
        assert obj.__module__.startswith("wsrooms")
        assert obj.__doc__, f"{name} has no docstring"


def test_close_codes_match_websockets_names() -> None:
    """CloseCode members carry the names and values the websockets library uses."""
    from websockets.frames import CloseCode as WebsocketsCloseCode

    for member in wsrooms.CloseCode:
        assert WebsocketsCloseCode[member.name].value == member.value


def test_exception_hierarchy() -> None:
    """Every wsrooms exception derives from WsroomsError; HubNotRunning is a RuntimeError;
    InvalidRoomName is an InvalidMessage and a ValueError, with a fixed reason."""
    assert issubclass(wsrooms.InvalidMessage, wsrooms.WsroomsError)
    assert issubclass(wsrooms.InvalidRoomName, wsrooms.InvalidMessage)
    assert issubclass(wsrooms.InvalidRoomName, ValueError)
    invalid = wsrooms.InvalidRoomName("a room name must not be empty")
    assert invalid.reason == "invalid room name"
    assert str(invalid) == "a room name must not be empty"
    assert issubclass(wsrooms.JoinRefused, wsrooms.WsroomsError)
    assert issubclass(wsrooms.HubNotRunning, RuntimeError)
    assert wsrooms.InvalidMessage("why").reason == "why"
    assert wsrooms.JoinRefused("r").room == "r"
