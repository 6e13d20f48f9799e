"""Who is in which room: plain synchronous bookkeeping, no I/O, no event loop.

Both directions are dicts of sets, so every lookup and change is O(1) per pair, and a room
that loses its last member is deleted at once (dynamic room names do not leak). Fan-out
iterates a tuple snapshot per room, cached until the room's membership changes.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from ._exceptions import InvalidRoomName
from ._limits import safe

__all__ = ["MAX_ROOM_NAME", "Membership", "check_room"]

C = TypeVar("C", bound=Hashable)

MAX_ROOM_NAME = 256
# How much of a broken name an error message shows.
_SHOWN = 60
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_room(room: object) -> str:
    """Return `room` if it is a valid room name, else raise `InvalidRoomName` saying why.

    A room name is a non-empty `str` of at most 256 characters with no control
    characters (C0, DEL and C1, `\x85` included). The error's text shows the name only
    escaped and cut (`safe`): it may come from a client and end up in a log line.
    """
    if not isinstance(room, str):
        raise InvalidRoomName(
            f"a room name must be a str, not {type(room).__name__}: {safe(room, _SHOWN)}"
        )
    if not room:
        raise InvalidRoomName("a room name must not be empty")
    if len(room) > MAX_ROOM_NAME:
        raise InvalidRoomName(
            f"a room name must be at most {MAX_ROOM_NAME} characters, not {len(room)}:"
            f" {safe(room, _SHOWN)}"
        )
    if _CONTROL.search(room):
        raise InvalidRoomName(
            f"a room name must not contain control characters: {safe(room, _SHOWN)}"
        )
    return room


class Membership(Generic[C]):
    """Local connections and their rooms.

    Every method is synchronous and does no I/O. Queries return snapshots (frozensets).
    """

    __slots__ = ("_conn_rooms", "_room_members", "_snapshots")

    def __init__(self) -> None:
        self._conn_rooms: dict[C, set[str]] = {}
        self._room_members: dict[str, set[C]] = {}
        self._snapshots: dict[str, tuple[C, ...]] = {}

    # changes

    def add(self, conn: C) -> bool:
        """Register a connection; true if it was not known."""
        if conn in self._conn_rooms:
            return False
        self._conn_rooms[conn] = set()
        return True

    def remove(self, conn: C) -> list[str]:
        """Forget a connection and leave every room; returns the rooms it left."""
        rooms = self._conn_rooms.pop(conn, None)
        if not rooms:
            return []
        for room in rooms:
            self._discard(conn, room)
        return list(rooms)

    def join(self, conn: C, room: str) -> bool:
        """Put a connection (added if unknown) in a room; true if it was not in it."""
        rooms = self._conn_rooms.get(conn)
        if rooms is None:
            rooms = self._conn_rooms[conn] = set()
        elif room in rooms:
            return False
        rooms.add(room)
        members = self._room_members.get(room)
        if members is None:
            self._room_members[room] = {conn}
        else:
            members.add(conn)
            self._snapshots.pop(room, None)
        return True

    def leave(self, conn: C, room: str) -> bool:
        """Take a connection out of a room; true if it was in it."""
        rooms = self._conn_rooms.get(conn)
        if rooms is None or room not in rooms:
            return False
        rooms.remove(room)
        self._discard(conn, room)
        return True

    def _discard(self, conn: C, room: str) -> None:
        members = self._room_members[room]
        members.discard(conn)
        self._snapshots.pop(room, None)
        if not members:
            del self._room_members[room]

    # queries

    def fanout(self, room: str) -> tuple[C, ...]:
        """The members of `room` as a tuple to iterate while membership may change."""
        snapshot = self._snapshots.get(room)
        if snapshot is None:
            members = self._room_members.get(room)
            if members is None:
                return ()
            snapshot = self._snapshots[room] = tuple(members)
        return snapshot

    def has_room(self, room: str) -> bool:
        return room in self._room_members

    def members(self, room: str) -> frozenset[C]:
        return frozenset(self._room_members.get(room, ()))

    def rooms_of(self, conn: C) -> frozenset[str]:
        return frozenset(self._conn_rooms.get(conn, ()))

    def rooms(self) -> frozenset[str]:
        return frozenset(self._room_members)

    def connections(self) -> frozenset[C]:
        return frozenset(self._conn_rooms)

    def all_connections(self) -> Iterable[C]:
        """Every connection, as a snapshot to iterate."""
        return tuple(self._conn_rooms)

    def __contains__(self, conn: object) -> bool:
        return conn in self._conn_rooms

    def __len__(self) -> int:
        return len(self._conn_rooms)
