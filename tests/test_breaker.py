"""The upstream circuit breaker: fail fast while unreachable, not because of bad content."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from ghostcrate.proxy.breaker import CircuitBreaker, UpstreamUnavailable
from tests.conftest import MirrorClient
from tests.support.crates import index_path
from tests.support.metrics import client_metric as metric
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    for _ in range(2):
        breaker.admit()
        assert not breaker.failed("refused")
    breaker.admit()
    assert breaker.failed("refused")
    with pytest.raises(UpstreamUnavailable, match="3 failures in a row, the last: refused"):
        breaker.admit()
    clock.now = 10
    breaker.admit()  # the probe
    with pytest.raises(UpstreamUnavailable):
        breaker.admit()  # only one probe at a time
    assert breaker.failed("still refused")  # a failed probe re-opens at once
    with pytest.raises(UpstreamUnavailable):
        breaker.admit()
    clock.now = 20
    breaker.admit()
    breaker.succeeded()
    assert not breaker.open
    breaker.admit()


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=2, cooldown=10, clock=Clock())
    breaker.failed("x")
    breaker.succeeded()
    assert not breaker.failed("y")
    assert not breaker.open


async def test_an_unreachable_upstream_fails_fast_and_recovers(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(
        read_timeout=0.3, breaker_failures=2, breaker_cooldown=0.5, index_ttl=0
    )
    fresh = await (await client.get(f"/index/{index_path('abc')}")).read()
    upstream.set_latency(5.0)
    for name in ("z", "ab"):  # two timeouts open the breaker
        response = await client.get(f"/api/v1/crates/{name}/0.1.0/download")
        assert response.status == 502
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 1
    asked = len(upstream.requests)

    started = time.monotonic()
    miss = await client.get("/api/v1/crates/multi/1.1.0/download")
    stale = await client.get(f"/index/{index_path('abc')}")
    assert time.monotonic() - started < 0.2  # no timeout waited for
    assert miss.status == 502
    assert "the upstream is unreachable" in (await miss.json())["errors"][0]["detail"]
    assert (stale.status, await stale.read()) == (200, fresh)
    await asyncio.sleep(0.1)
    assert len(upstream.requests) == asked  # the upstream was not asked

    upstream.clear_faults()
    await asyncio.sleep(0.5)
    recovered = await client.get("/api/v1/crates/multi/1.1.0/download")
    assert recovered.status == 200
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 0


async def test_bad_content_does_not_open_the_breaker(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(breaker_failures=2)
    upstream.set_corrupt(scope="download", crate="z")
    upstream.set_truncate(scope="download", crate="ab")
    for _ in range(3):
        corrupt = await client.get("/api/v1/crates/z/0.1.0/download")
        assert "checksum differs" in (await corrupt.json())["errors"][0]["detail"]
        cut = await client.get("/api/v1/crates/ab/0.1.0/download")
        assert "closed before the whole body" in (await cut.json())["errors"][0]["detail"]
    assert (await client.get("/api/v1/crates/multi/1.1.0/download")).status == 200
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 0


async def test_a_proxy_asking_for_credentials_is_a_clear_error_not_an_outage(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(breaker_failures=2)
    upstream.set_status(407, scope="download")  # as a proxy before a plain-HTTP upstream says
    for _ in range(3):
        response = await client.get("/api/v1/crates/z/0.1.0/download")
        detail = (await response.json())["errors"][0]["detail"]
        assert response.status == 502
        assert "refused the credentials (407)" in detail
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 0
