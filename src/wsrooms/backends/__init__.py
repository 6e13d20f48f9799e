"""Backends carry broadcasts between hubs in different processes.

A `Hub` always delivers to its own local members itself; a backend only carries each
broadcast to the other processes that share the hub's name, and hands what they publish
back to the hub. The in-memory backend is the default: one process, nothing to carry.
"""

from ._base import Backend as Backend
from ._base import Deliver as Deliver
from ._base import StateChanged as StateChanged
from .memory import MemoryBackend as MemoryBackend

__all__ = ["Backend", "Deliver", "MemoryBackend", "StateChanged"]
