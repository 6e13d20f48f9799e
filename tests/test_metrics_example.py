"""The metrics recipe: hub statistics exported to Prometheus and as OpenTelemetry metrics."""

from __future__ import annotations

import httpx
import pytest
from examples import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from wsrooms.testing import connect, serve

pytestmark = pytest.mark.anyio


def scraped(text: str) -> dict[str, float]:
    """The samples of a Prometheus text exposition, by name."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_hub_statistics_reach_prometheus_and_opentelemetry() -> None:
    """Two members of one room and one broadcast show in both exporters' readings."""
    reader = InMemoryMetricReader()
    metrics.instrument(metrics.hub, MeterProvider(metric_readers=[reader]).get_meter("test"))
    before = metrics.hub.statistics().published
    async with (
        serve(metrics.app) as server,
        connect(server.ws_url("/ws/lobby")) as a,
        connect(server.ws_url("/ws/lobby")) as b,
    ):
        await a.send_json({"hi": 1})
        assert await a.recv_json() == {"hi": 1}
        assert await b.recv_json() == {"hi": 1}
        url = f"http://{server.host}:{server.port}/metrics"
        async with httpx.AsyncClient() as http:
            response = await http.get(url)
        samples = scraped(response.text)
        assert samples["wsrooms_connections"] == 2
        assert samples["wsrooms_rooms"] == 1
        assert samples["wsrooms_published_total"] == before + 1
        assert samples["wsrooms_dropped_total"] == 0
        assert samples["wsrooms_backend_connected"] == 1
        data = reader.get_metrics_data()
        assert data is not None
        points = {
            metric.name: getattr(metric.data.data_points[0], "value", None)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        assert points["wsrooms.connections"] == 2
        assert points["wsrooms.published"] == before + 1
