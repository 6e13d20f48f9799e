"""The interface between a `Hub` and whatever carries its broadcasts across processes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from anyio.abc import TaskGroup
from starlette.types import Message

__all__ = ["Backend", "Deliver", "StateChanged"]

#: Called by a backend, synchronously, for every message another process published:
#: `deliver(room, event)`, with `room=None` for a broadcast to every connection.
Deliver = Callable[[str | None, Message], None]

#: Called by a backend, synchronously, when its link to the other processes goes down
#: (`False`) or comes back (`True`): once per change, never once per message.
StateChanged = Callable[[bool], None]


class Backend(ABC):
    """Carries broadcasts between processes.

    A hub always delivers to its own local members itself; its backend only carries each
    broadcast to the other processes that share the hub's name, and hands what they
    publish back through `deliver`.

    How the hub calls a backend:

    - `start` once, inside the hub's `async with`, with a task group for the backend's
      own long-lived tasks. It must return promptly, also when the transport is down: a
      backend connects (and reconnects) in the background, so a lifespan never hangs.
    - `subscribe` / `unsubscribe` as a room gains its first or loses its last local member.
      They declare what the process wants: a backend whose transport is down records the
      wish and carries it out when it reconnects. The hub never calls them under its lock,
      bounds each call with its `backend_timeout`, and never has two calls for one room
      in flight at once.
    - `publish_many` from the hub's one publisher task, with every broadcast queued since
      its last call, in order. A failure raises; the hub logs and counts it, local members
      have their copy already.
    - `stop` once, when the hub's `async with` ends, bounded by `backend_timeout`; the
      task group is cancelled afterwards.
    """

    local_only: bool = False
    """True when the backend carries nothing (one process): the hub then skips it on the
    broadcast path entirely, and needs no `async with hub:`."""

    @abstractmethod
    async def start(
        self, deliver: Deliver, task_group: TaskGroup, state_changed: StateChanged
    ) -> None:
        """Start the backend's tasks in `task_group` and return without waiting for the
        transport; report link changes through `state_changed`."""

    @abstractmethod
    async def stop(self) -> None:
        """Disconnect."""

    @abstractmethod
    async def subscribe(self, room: str) -> None:
        """Receive what other processes publish to `room` (idempotent)."""

    @abstractmethod
    async def unsubscribe(self, room: str) -> None:
        """Stop receiving `room` (idempotent)."""

    @abstractmethod
    async def publish(self, room: str | None, event: Message) -> None:
        """Send `event` to the other processes' members of `room` (`None`: everyone)."""

    async def publish_many(self, items: Sequence[tuple[str | None, Message]]) -> None:
        """Send several events in order (default: one `publish` each).

        A backend that can pipeline overrides this; the hub's publisher calls it with
        every event queued since its last call.
        """
        for room, event in items:
            await self.publish(room, event)

    @property
    def connected(self) -> bool:
        """Whether the link to the other processes is up now."""
        return True

    @property
    def lost(self) -> int:
        """Messages from other processes lost on the way in (buffer full, malformed)."""
        return 0
