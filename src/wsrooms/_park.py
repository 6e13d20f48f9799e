"""Park a task and wake it from another task, at the cost of each backend's own primitive.

An outbox's writer parks whenever its queue is empty and a broadcast wakes it, so this
runs once per member per broadcast at low load. `anyio.Event` costs an object, a
backend dispatch and a checkpoint per cycle; an asyncio future or trio's
`wait_task_rescheduled` cost one wake-up. Only the parked task awaits; any task (or
plain synchronous code) on the same event loop may wake it.
"""

from __future__ import annotations

from typing import Any

import anyio

__all__ = ["Parker", "make_parker"]


class Parker:
    """One task parks in `park()`; `unpark()` (synchronous) lets it go on."""

    __slots__ = ()

    @property
    def parked(self) -> bool:
        raise NotImplementedError

    async def park(self) -> None:
        raise NotImplementedError

    def unpark(self) -> None:
        raise NotImplementedError


class _AsyncioParker(Parker):
    __slots__ = ("_future", "_loop")

    def __init__(self) -> None:
        import asyncio

        # This module is the one place that may use the backend's own primitive (a plain
        # future on the running loop), chosen because it is the cheapest wake-up there is.
        self._loop = asyncio.get_running_loop()
        self._future: Any = None

    @property
    def parked(self) -> bool:
        return self._future is not None

    async def park(self) -> None:
        future = self._future = self._loop.create_future()
        try:
            await future
        finally:
            self._future = None

    def unpark(self) -> None:
        future = self._future
        if future is not None:
            self._future = None
            if not future.done():
                future.set_result(None)


class _TrioParker(Parker):
    __slots__ = ("_lowlevel", "_task")

    def __init__(self) -> None:
        import trio.lowlevel

        self._lowlevel = trio.lowlevel
        self._task: Any = None

    @property
    def parked(self) -> bool:
        return self._task is not None

    async def park(self) -> None:
        lowlevel = self._lowlevel
        self._task = lowlevel.current_task()

        def abort(raise_cancel: Any) -> Any:
            self._task = None  # cancelled while parked: nothing may reschedule it now
            return lowlevel.Abort.SUCCEEDED

        await lowlevel.wait_task_rescheduled(abort)

    def unpark(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            self._lowlevel.reschedule(task)


def make_parker() -> Parker:
    """A parker for the event loop that is running now."""
    if anyio.get_cancelled_exc_class().__module__.partition(".")[0] == "asyncio":
        return _AsyncioParker()
    return _TrioParker()
