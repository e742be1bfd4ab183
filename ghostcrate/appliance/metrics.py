"""The appliance's own metrics (HTTP side); the mirror's live in `ghostcrate.proxy.metrics`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from ghostcrate.cache import CacheMetrics
from ghostcrate.proxy import ProxyMetrics

#: Set by the supervisor for its workers; prometheus_client then keeps values in files there.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition(registry: CollectorRegistry) -> bytes:
    """The /metrics body: this process's registry, or the sum over all workers."""
    shared_dir = os.environ.get(MULTIPROCESS_ENV)
    if shared_dir is None or not Path(shared_dir).is_dir():
        return generate_latest(registry)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, shared_dir)  # type: ignore[no-untyped-call]
    return generate_latest(combined)


@dataclass(frozen=True)
class AppMetrics:
    proxy: ProxyMetrics
    cache: CacheMetrics
    requests: Counter
    latency: Histogram
    file_bytes: Counter
    fast_lane: Counter
    # Labelled children by label values: `.labels()` costs a few percent of a hot request.
    _children: dict[tuple[str, int], tuple[Counter, Histogram]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AppMetrics:
        return cls(
            proxy=ProxyMetrics.create(registry),
            cache=CacheMetrics.create(registry),
            requests=Counter(
                "ghostcrate_http_requests",
                "HTTP requests answered, by route and status",
                ["route", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "ghostcrate_http_request_seconds",
                "Time to answer an HTTP request, by route",
                ["route"],
                registry=registry,
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10),
            ),
            file_bytes=Counter(
                "ghostcrate_file_bytes_sent",
                "Bytes of cached crates sent, by method (sendfile: zero-copy from disk; "
                "memory: held in memory; copy: through Python)",
                ["method"],
                registry=registry,
            ),
            fast_lane=Counter(
                "ghostcrate_fast_lane_requests",
                "Requests met by the fast lane: answered from the hot set (hit), after asking "
                "the mirror (fill), or handed to aiohttp with their connection (handover)",
                ["result"],
                registry=registry,
            ),
        )
