"""The interface between a `Hub` and whatever carries its broadcasts across processes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from anyio.abc import TaskGroup
from starlette.types import Message

__all__ = ["Backend", "Deliver"]

#: Called by a backend, synchronously, for every message another process published:
#: `deliver(room, event)`, with `room=None` for a broadcast to every connection.
Deliver = Callable[[str | None, Message], None]


class Backend(ABC):
    """Carries broadcasts between processes.

    The hub calls `subscribe`/`unsubscribe` under its lock as rooms gain their first or lose
    their last local member, and `publish` after it has delivered to its local members.
    """

    #: True when the backend carries nothing (one process): the hub then skips it entirely
    #: on the broadcast path, and needs no `async with hub:`.
    local_only: bool = False

    @abstractmethod
    async def start(self, deliver: Deliver, task_group: TaskGroup) -> None:
        """Connect, and start the tasks that listen, in `task_group`; return when ready."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect; the hub's task group is cancelled afterwards."""

    @abstractmethod
    async def subscribe(self, room: str) -> None:
        """Receive what other processes publish to `room`."""

    @abstractmethod
    async def unsubscribe(self, room: str) -> None:
        """Stop receiving `room`."""

    @abstractmethod
    async def publish(self, room: str | None, event: Message) -> None:
        """Send `event` to the other processes' members of `room` (`None`: everyone)."""
