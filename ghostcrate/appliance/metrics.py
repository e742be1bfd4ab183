"""The appliance's own metrics (HTTP side); the mirror's live in `ghostcrate.proxy.metrics`."""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from ghostcrate.cache import CacheMetrics
from ghostcrate.private.metrics import RegistryMetrics
from ghostcrate.proxy import ProxyMetrics

#: Set by the supervisor for its workers; prometheus_client then keeps values in files there.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10)
#: Fast-lane results answered from the hot set (the memory tier), and those that missed it.
MEMORY_HITS = ("hit", "updating")
MEMORY_MISSES = ("fill",)

# A `_created` series per counter doubles what a dashboard has to wade through for a
# start time that `process_start_time_seconds` already gives.
disable_created_metrics()  # type: ignore[no-untyped-call]


def exposition(registry: CollectorRegistry) -> bytes:
    """The /metrics body: this process's registry, or the sum over all workers."""
    shared_dir = os.environ.get(MULTIPROCESS_ENV)
    if shared_dir is None or not Path(shared_dir).is_dir():
        return generate_latest(registry)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined, shared_dir)  # type: ignore[no-untyped-call]
    return generate_latest(combined)


class _Pending:
    __slots__ = ("buckets", "count", "total")

    def __init__(self, buckets: int) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * buckets


class RequestBatches:
    """HTTP request counts and latencies, added up in the process and handed over in batches.

    With several workers prometheus_client keeps every value in a memory-mapped
    file, so each `inc` or `observe` takes a lock and packs floats: four of them
    per request were a tenth of a worker's time on small cache hits. Here a
    request costs a few integer additions; `flush` (every second, and before
    each /metrics answer) applies the sums. A histogram child has no public
    "observe n times", so `flush` adds to its `_sum` and `_buckets` values, as
    `Histogram.observe` does (a test checks the result against `observe`).
    """

    def __init__(
        self,
        requests: Counter,
        latency: Histogram,
        fast_lane: Counter,
        cache: CacheMetrics,
        outcomes: Counter,
    ) -> None:
        self._requests = requests
        self._latency = latency
        self._fast_lane = fast_lane
        self._cache = cache
        self._outcomes = outcomes
        self._outcomes_pending: dict[tuple[str, str], int] = {}
        self._bounds = [*LATENCY_BUCKETS, math.inf]
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._fast_lane_pending: dict[str, int] = {}

    def observe(self, route: str, status: int, seconds: float, outcome: str | None) -> None:
        """One answered request; `outcome` (None: not a mirror route) as `Reply.outcome`,
        or `error` for a status of 500 or more."""
        if outcome is not None:
            key = (route, "error" if status >= 500 else outcome)
            self._outcomes_pending[key] = self._outcomes_pending.get(key, 0) + 1
        pending = self._pending.get((route, status))
        if pending is None:
            pending = self._pending[(route, status)] = _Pending(len(self._bounds))
        pending.count += 1
        pending.total += seconds
        pending.buckets[bisect.bisect_left(self._bounds, seconds)] += 1

    def fast_lane_result(self, result: str, count: int = 1) -> None:
        self._fast_lane_pending[result] = self._fast_lane_pending.get(result, 0) + count

    def flush(self) -> None:
        for (route, status), pending in self._pending.items():
            if not pending.count:
                continue
            self._requests.labels(route, str(status)).inc(pending.count)
            child = self._latency.labels(route)
            child._sum.inc(pending.total)  # private: see the class docstring
            for index, count in enumerate(pending.buckets):
                if count:
                    child._buckets[index].inc(count)
                    pending.buckets[index] = 0
            pending.count = 0
            pending.total = 0.0
        for (route, outcome), count in self._outcomes_pending.items():
            self._outcomes.labels(route, outcome).inc(count)
        self._outcomes_pending.clear()
        results = self._fast_lane_pending
        for result, count in results.items():
            if count:
                self._fast_lane.labels(result).inc(count)
        # The hot set is the memory tier: its hits and misses are the cache's too.
        if hits := sum(results.get(result, 0) for result in MEMORY_HITS):
            self._cache.hits.labels("memory").inc(hits)
        if misses := sum(results.get(result, 0) for result in MEMORY_MISSES):
            self._cache.misses.labels("memory").inc(misses)
        results.clear()


@dataclass(frozen=True)
class AppMetrics:
    proxy: ProxyMetrics
    cache: CacheMetrics
    registry: RegistryMetrics
    requests: Counter
    latency: Histogram
    file_bytes: Counter
    fast_lane: Counter
    outcomes: Counter
    rate_limited: Counter
    batches: RequestBatches

    def observe_request(self, route: str, status: int, seconds: float, outcome: str | None) -> None:
        self.batches.observe(route, status, seconds, outcome)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AppMetrics:
        requests = Counter(
            "ghostcrate_http_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=registry,
        )
        latency = Histogram(
            "ghostcrate_http_request_seconds",
            "Time to answer an HTTP request, by route",
            ["route"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        fast_lane = Counter(
            "ghostcrate_fast_lane_requests",
            "Requests met by the fast lane: answered from the hot set (hit), from an expired "
            "entry while another request renews it (updating), after asking the mirror "
            "(fill), or handed to aiohttp with their connection (handover); renewed_ahead "
            "counts hits that also started renewing their entry before it expires, error "
            "requests that failed (answered 400 or 500, or, half answered, cut off)",
            ["result"],
            registry=registry,
        )
        cache = CacheMetrics.create(registry)
        outcomes = Counter(
            "ghostcrate_requests",
            "Requests for the sparse index and crates, by route and outcome: hit (from the "
            "cache), miss (the upstream was asked), stale (an expired copy the upstream did not "
            "renew in time), error (a bad request, or a failure: every status of 500 or more)",
            ["route", "outcome"],
            registry=registry,
        )
        return cls(
            proxy=ProxyMetrics.create(registry),
            cache=cache,
            registry=RegistryMetrics.create(registry),
            requests=requests,
            latency=latency,
            file_bytes=Counter(
                "ghostcrate_file_bytes_sent",
                "Bytes of cached crates sent, by method (sendfile: zero-copy from disk; "
                "memory: held in memory; copy: through Python)",
                ["method"],
                registry=registry,
            ),
            fast_lane=fast_lane,
            outcomes=outcomes,
            rate_limited=Counter(
                "ghostcrate_rate_limited",
                "API requests refused with 429 by a [limits] rate, by route class (publish, "
                "login, search, api) and kind (per_address, per_token, per_user)",
                ["route_class", "kind"],
                registry=registry,
            ),
            batches=RequestBatches(requests, latency, fast_lane, cache, outcomes),
        )
