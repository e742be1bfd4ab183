"""The mirror's counters, registered on the registry the appliance serves at /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class ProxyMetrics:
    index_results: Counter
    crate_results: Counter
    upstream_requests: Counter
    stale_served: Counter
    checksum_mismatches: Counter
    breaker_open: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ProxyMetrics:
        return cls(
            index_results=Counter(
                "ghostcrate_index_lookups",
                "Mirror index lookups by result "
                "(hit, miss, revalidated, updated, stale, not_found)",
                ["result"],
                registry=registry,
            ),
            crate_results=Counter(
                "ghostcrate_crate_lookups",
                "Mirror .crate lookups by result (hit, miss)",
                ["result"],
                registry=registry,
            ),
            upstream_requests=Counter(
                "ghostcrate_upstream_requests",
                "Requests to the upstream by kind and outcome",
                ["kind", "outcome"],
                registry=registry,
            ),
            stale_served=Counter(
                "ghostcrate_stale_index_served",
                "Index files served stale because the upstream failed, or had not "
                "answered within stale_after",
                registry=registry,
            ),
            checksum_mismatches=Counter(
                "ghostcrate_checksum_mismatches",
                "Crates refused because their sha256 differed from the index entry",
                registry=registry,
            ),
            breaker_open=Gauge(
                "ghostcrate_upstream_breaker_open",
                "1 while the upstream is failing fast after consecutive failures",
                registry=registry,
                multiprocess_mode="livemax",
            ),
        )
