"""Read one sample from a Prometheus text exposition."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families


def sample_value(exposition: str, name: str, **labels: str) -> float:
    """The value of the sample `name{labels}`, or 0 if it is not there."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def client_metric(client: TestClient[Any, Any], name: str, **labels: str) -> float:
    """The value of one sample on an in-process application's /metrics."""
    response = await client.get("/metrics")
    return sample_value(await response.text(), name, **labels)
