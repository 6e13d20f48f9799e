"""Export a hub's statistics: to Prometheus, and as OpenTelemetry metrics.

Run it with `uvicorn examples.metrics:app` (needs `pip install prometheus-client
opentelemetry-sdk`), open a few WebSockets on `ws://127.0.0.1:8000/ws/lobby`, then read
`http://127.0.0.1:8000/metrics`.

Both exporters read `hub.statistics()` when they are scraped or collected: one frozen
snapshot, so the figures of one scrape are consistent, and counting costs the hub
nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsrooms import Hub, RoomEndpoint

hub = Hub()


class Chat(RoomEndpoint):
    hub = hub

    async def on_connect(self, websocket: WebSocket) -> None:
        await self.join(websocket.path_params["room"])
        await super().on_connect(websocket)

    async def _background_handler(self, task_id: str, websocket: WebSocket, data: object) -> None:
        await self.broadcast(websocket.path_params["room"], data)


# --8<-- [start:prometheus]
class HubCollector(Collector):
    """Prometheus metrics from one snapshot of the hub per scrape."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.hub.statistics()
        yield GaugeMetricFamily("wsrooms_connections", "Local connections", stats.connections)
        yield GaugeMetricFamily("wsrooms_rooms", "Rooms with local members", stats.rooms)
        yield GaugeMetricFamily(
            "wsrooms_backend_connected", "Backend link up", int(stats.backend_connected)
        )
        yield CounterMetricFamily("wsrooms_published", "Broadcasts made", stats.published)
        yield CounterMetricFamily("wsrooms_dropped", "Messages dropped", stats.dropped)
        yield CounterMetricFamily(
            "wsrooms_slow_consumer_disconnects",
            "Connections closed as slow consumers",
            stats.slow_consumer_disconnects,
        )
        yield CounterMetricFamily(
            "wsrooms_backend_outages", "Backend outages begun", stats.backend_outages
        )
        yield CounterMetricFamily(
            "wsrooms_publish_failures", "Cross-process copies lost", stats.publish_failures
        )


registry = CollectorRegistry()
registry.register(HubCollector(hub))


async def metrics(request: Request) -> Response:
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


# --8<-- [end:prometheus]


# --8<-- [start:opentelemetry]
def instrument(hub: Hub, meter: Meter) -> None:
    """OpenTelemetry observable instruments, read from the hub when metrics are collected."""

    def gauge(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(int(getattr(hub.statistics(), field)))

        return observe

    meter.create_observable_gauge("wsrooms.connections", [gauge("connections")])
    meter.create_observable_gauge("wsrooms.rooms", [gauge("rooms")])
    meter.create_observable_counter("wsrooms.published", [gauge("published")])
    meter.create_observable_counter("wsrooms.dropped", [gauge("dropped")])
    meter.create_observable_counter(
        "wsrooms.slow_consumer_disconnects", [gauge("slow_consumer_disconnects")]
    )
    meter.create_observable_counter("wsrooms.publish_failures", [gauge("publish_failures")])


# --8<-- [end:opentelemetry]

app = Starlette(
    routes=[Route("/metrics", metrics), WebSocketRoute("/ws/{room}", Chat)],
)
