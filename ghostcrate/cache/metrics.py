"""The cache's counters, registered on the registry the appliance serves at /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class CacheMetrics:
    hits: Counter
    misses: Counter
    tier_errors: Counter
    tier_available: Gauge
    evicted: Counter
    stored_bytes: Gauge
    max_bytes: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> CacheMetrics:
        """Counters on `registry` (a private one when None, for tools and tests)."""
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            hits=Counter(
                "ghostcrate_cache_hits",
                "Cache reads answered by a tier (memory: the hot set of each worker; disk; s3)",
                ["tier"],
                registry=registry,
            ),
            misses=Counter(
                "ghostcrate_cache_misses",
                "Cache reads a tier could not answer",
                ["tier"],
                registry=registry,
            ),
            tier_errors=Counter(
                "ghostcrate_cache_tier_errors",
                "Failed operations on a tier, by operation",
                ["tier", "op"],
                registry=registry,
            ),
            tier_available=Gauge(
                "ghostcrate_cache_tier_available",
                "1 while a tier is in use, 0 while it is skipped after failures",
                ["tier"],
                registry=registry,
                multiprocess_mode="livemin",
            ),
            evicted=Counter(
                "ghostcrate_cache_evicted_bytes",
                "Bytes evicted from a tier to keep it under its limit",
                ["tier"],
                registry=registry,
            ),
            stored_bytes=Gauge(
                "ghostcrate_cache_stored_bytes",
                "Bytes held by a tier (the largest of the workers' views)",
                ["tier"],
                registry=registry,
                multiprocess_mode="livemax",
            ),
            max_bytes=Gauge(
                "ghostcrate_cache_max_bytes",
                "The bound a tier is kept under ([cache] disk_max_bytes for the disk tier)",
                ["tier"],
                registry=registry,
                multiprocess_mode="livemax",
            ),
        )
