"""A mutex bound to no event loop.

`anyio.Lock` made outside a running loop binds itself to the first backend that uses it,
so a class-level lock breaks when one process runs asyncio and then trio (as a test session
does). This lock keeps no loop state between uses: a waiter's `anyio.Event` is made on the
loop that waits, and ownership is handed over directly, so waiters are served in order.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType

import anyio
import anyio.lowlevel

__all__ = ["Lock"]


class Lock:
    """A fair async mutex usable on whichever event loop is running."""

    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: deque[anyio.Event] = deque()

    def locked(self) -> bool:
        return self._locked

    async def acquire(self) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not self._locked:
            self._locked = True
            return
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release()  # ownership reached us as we were cancelled: pass it on
            else:
                self._waiters.remove(event)
            raise

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("release of an unlocked Lock")
        if self._waiters:
            self._waiters.popleft().set()  # hand over: stays locked
        else:
            self._locked = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
