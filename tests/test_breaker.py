"""The upstream circuit breaker: fail fast while unreachable, not because of bad content."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from ghostcrate.proxy.breaker import CircuitBreaker, UpstreamUnavailable
from tests.conftest import MirrorClient
from tests.support.crates import CrateSpec, index_path
from tests.support.metrics import client_metric as metric
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


FAILED_FOR_B = (
    r"^b was not fetched: the upstream is unreachable, and it is asked again after "
    r"\d\d:\d\d:\d\d UTC \(in 6 s\)\. It failed 3 times in a row; the last, at "
    r"\d\d:\d\d:\d\d UTC \(4 s ago\): refused$"
)


def test_opens_after_consecutive_failures_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=10, clock=clock)
    for _ in range(2):
        breaker.admit("a")
        assert not breaker.failed("refused")
    breaker.admit("a")
    assert breaker.failed("refused")
    clock.now = 4
    with pytest.raises(UpstreamUnavailable, match=FAILED_FOR_B):
        breaker.admit("b")
    clock.now = 10
    breaker.admit("c")  # the probe
    with pytest.raises(UpstreamUnavailable, match=r"b was not fetched: .* asking it now"):
        breaker.admit("b")  # only one probe at a time
    assert breaker.failed("still refused")  # a failed probe re-opens at once
    with pytest.raises(UpstreamUnavailable, match=r"4 times in a row; .* still refused$"):
        breaker.admit("b")
    clock.now = 20
    breaker.admit("c")
    breaker.succeeded()
    assert not breaker.open
    breaker.admit("b")


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


OPENED_BY_SYN = re.compile(
    r"the upstream is unreachable, and it is asked again after (\S+) UTC \(in (\d+) s\)\. "
    r"It failed 2 times in a row; the last, at (\S+) UTC \((\d+) s ago\): "
    r"the upstream answered 503 for index file 3/s/syn$"
)


def seconds_of_day(clock_time: str) -> int:
    hours, minutes, seconds = map(int, clock_time.split(":"))
    return hours * 3600 + minutes * 60 + seconds


async def test_a_refused_request_names_what_it_asked_for_and_the_failure(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    """Asked for ra/nd/rand, a user was told only about 3/s/syn (issue 13, item 10)."""
    upstream.publish(CrateSpec("syn", "2.0.0"))
    upstream.publish(CrateSpec("rand", "0.8.5"))
    client: MirrorClient = await make_mirror(breaker_failures=2, breaker_cooldown=60)
    # config.json and multi's index file are cached; multi 1.1.0 and anything of rand are not.
    assert (await client.get("/api/v1/crates/multi/1.0.0/download")).status == 200
    upstream.set_status(503, scope="index", crate="syn")
    for _ in range(2):
        assert (await client.get("/index/3/s/syn")).status == 502
    failed_at = seconds_of_day(time.strftime("%H:%M:%S", time.gmtime()))

    asked = {
        "/index/ra/nd/rand": "index file ra/nd/rand was not fetched: ",
        "/api/v1/crates/multi/1.1.0/download": "crate multi 1.1.0 was not fetched: ",
        "/api/v1/crates/rand/0.8.5/download": (
            "crate rand 0.8.5 was not fetched: it needs index file ra/nd/rand, "
            "which is not cached; "
        ),
    }
    for path, refused in asked.items():
        response = await client.get(path)
        detail: str = (await response.json())["errors"][0]["detail"]
        assert response.status == 502
        assert detail.startswith(refused), detail
        opened = OPENED_BY_SYN.fullmatch(detail.removeprefix(refused))
        assert opened is not None, detail
        probe, last = seconds_of_day(opened[1]), seconds_of_day(opened[3])
        assert (probe - last) % 86400 == 60
        assert min((failed_at - last) % 86400, (last - failed_at) % 86400) <= 1
        assert abs(int(opened[2]) + int(opened[4]) - 60) <= 1
    assert upstream.index_count("rand") == 0
    assert upstream.download_count("multi", "1.1.0") == 0


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
