"""The private registry's metrics, registered on the registry the appliance serves at /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Registry database latency buckets, in seconds: a read is well under a millisecond, a
#: write waits for its turn and an fsync.
DATABASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


@dataclass(frozen=True)
class RegistryMetrics:
    publishes: Counter
    yanks: Counter
    auth_failures: Counter
    database_seconds: Histogram
    webhook_attempts: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RegistryMetrics:
        return cls(
            publishes=Counter(
                "ghostcrate_registry_publishes",
                "Publishes by result: published, refused (a 4xx: bad crate, name taken, no "
                "right), error (anything else)",
                ["result"],
                registry=registry,
            ),
            yanks=Counter(
                "ghostcrate_registry_yanks",
                "Versions yanked and unyanked, by action",
                ["action"],
                registry=registry,
            ),
            auth_failures=Counter(
                "ghostcrate_auth_failures",
                "Requests [auth] refused: unauthenticated (401: no, or a bad, token), "
                "forbidden (403), hidden (a private crate answered 404 to a reader who may "
                "not see it)",
                ["reason"],
                registry=registry,
            ),
            database_seconds=Histogram(
                "ghostcrate_registry_database_seconds",
                "Registry database latency: a read query, or a write transaction from "
                "asking for the write lock to its commit",
                ["op"],
                registry=registry,
                buckets=DATABASE_BUCKETS,
            ),
            webhook_attempts=Counter(
                "ghostcrate_webhook_attempts",
                "Webhook delivery attempts by outcome: delivered, retry (failed, tried again "
                "later), dead (failed for the last time)",
                ["outcome"],
                registry=registry,
            ),
        )

    def observe_database(self, op: str, seconds: float) -> None:
        self.database_seconds.labels(op).observe(seconds)
