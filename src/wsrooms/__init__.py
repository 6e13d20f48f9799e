"""WebSocket endpoints and rooms for Starlette and FastAPI, on asyncio and trio.

One anyio task group per connection, one background task per received message, and rooms
that share messages inside one process or, through a backend, across many.
"""

from ._endpoint import BaseWSEndpoint as BaseWSEndpoint
from ._endpoint import ConnectionTaskGroup as ConnectionTaskGroup
from ._exceptions import CloseCode as CloseCode
from ._exceptions import HubNotRunning as HubNotRunning
from ._exceptions import InvalidMessage as InvalidMessage
from ._exceptions import InvalidRoomName as InvalidRoomName
from ._exceptions import JoinRefused as JoinRefused
from ._exceptions import WsroomsError as WsroomsError
from ._hub import Hub as Hub
from ._room import BaseRoom as BaseRoom
from ._room import ConnectionsManager as ConnectionsManager
from ._room import Room as Room
from ._room import RoomConnect as RoomConnect
from ._room_endpoint import RoomEndpoint as RoomEndpoint
from ._stats import ConnectionStatistics as ConnectionStatistics
from ._stats import HubStatistics as HubStatistics

__version__ = "0.1.0"

__all__ = [
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
]
