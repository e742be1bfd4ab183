"""Batched request metrics give the same exposition as observing each request directly."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from ghostcrate.appliance.metrics import AppMetrics


def test_a_flushed_batch_equals_direct_observation() -> None:
    batched_registry, direct_registry = CollectorRegistry(), CollectorRegistry()
    batched = AppMetrics.create(batched_registry)
    direct = AppMetrics.create(direct_registry)
    rng = random.Random(7)
    routes = ["/index/{path}", "/api/v1/crates/{name}/{version}/download"]
    # Bounds themselves included: a value equal to a bucket's bound belongs in that bucket.
    samples = [0.0005, 0.001, 10.0, 11.0, 0.0] + [rng.expovariate(200) for _ in range(500)]
    for seconds in samples:
        route, status = rng.choice(routes), rng.choice([200, 304, 404, 502])
        outcome = rng.choice(["hit", "miss", "stale", None])
        batched.observe_request(route, status, seconds, outcome)
        if outcome is not None:  # a mirror route: counted by outcome, any 5xx as an error
            direct.outcomes.labels(route, "error" if status >= 500 else outcome).inc()
        direct.requests.labels(route, str(status)).inc()
        direct.latency.labels(route).observe(seconds)
        result = rng.choice(["hit", "fill"])
        batched.batches.fast_lane_result(result)
        direct.fast_lane.labels(result).inc()
        tier_count = direct.cache.hits if result == "hit" else direct.cache.misses
        tier_count.labels("memory").inc()
    assert generate_latest(batched_registry) != generate_latest(direct_registry)  # not yet
    batched.batches.flush()
    assert _samples(batched_registry) == _samples(direct_registry)
    batched.batches.flush()  # nothing is added twice
    assert _samples(batched_registry) == _samples(direct_registry)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in registry.collect():
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = round(sample.value, 9)
    return values
