"""The in-memory backend: rooms live in one process, so there is nothing to carry."""

from __future__ import annotations

from anyio.abc import TaskGroup
from starlette.types import Message

from ._base import Backend, Deliver, StateChanged

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """The default backend of `Hub()`: local delivery only."""

    local_only = True

    async def start(
        self, deliver: Deliver, task_group: TaskGroup, state_changed: StateChanged
    ) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def subscribe(self, room: str) -> None:
        pass

    async def unsubscribe(self, room: str) -> None:
        pass

    async def publish(self, room: str | None, event: Message) -> None:
        pass
