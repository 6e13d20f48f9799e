"""The snapshots that `hub.statistics()` and a connection's `statistics()` return.

Frozen, with plain `int` and `bool` fields, as anyio's streams and locks report theirs:
what users, dashboards and tests read instead of private attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionStatistics", "HubStatistics"]


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of one connection (`self.statistics()`).

    Attributes:
        tasks: Handler tasks running now.
        queued: Outgoing messages waiting in the connection's outbox (room endpoints).
        dropped: Messages dropped for this connection by a `drop_*` slow-consumer policy.
        sent: Frames written to the socket through wsrooms so far.
        messages: Messages received and handed to a task so far.
    """

    tasks: int
    queued: int
    dropped: int
    sent: int
    messages: int


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """A snapshot of a hub (`hub.statistics()`).

    Attributes:
        connections: Local connections now.
        rooms: Rooms with local members now.
        published: Broadcasts made through this hub in this process.
        dropped: Messages dropped by the slow-consumer policies of this hub's connections,
            since the hub was created.
        slow_consumer_disconnects: Connections closed as slow consumers.
        backend_connected: Whether the backend's link to other processes is up (always
            true in memory).
        backend_outages: Outages of that link begun so far.
        publish_failures: Broadcasts whose cross-process copy was lost (the backend
            failed or timed out, or the publisher's queue was full); local members had
            theirs.
        publish_queued: Broadcasts waiting for the publisher now.
        backend_lost: Messages from other processes the backend lost on the way in.
    """

    connections: int
    rooms: int
    published: int
    dropped: int
    slow_consumer_disconnects: int
    backend_connected: bool
    backend_outages: int
    publish_failures: int
    publish_queued: int
    backend_lost: int
