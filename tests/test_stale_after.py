"""`[upstream] stale_after`: a slow upstream never holds back a cached index file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import MirrorClient
from tests.support.crates import CrateSpec, index_path
from tests.support.metrics import client_metric as metric
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]
PATH = f"/index/{index_path('multi')}"


async def timed_body(client: MirrorClient, path: str = PATH) -> tuple[float, bytes]:
    """Seconds until the answer to GET `path` is complete, and its body."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.get(path)
    assert response.status == 200
    body = await response.read()
    return loop.time() - started, body


async def requests_for(upstream: FakeUpstream, name: str, count: int) -> None:
    """Wait until the upstream has answered `count` index requests for `name`."""
    for _ in range(500):
        if upstream.index_count(name) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the upstream got {upstream.index_count(name)} requests for {name}")


@pytest.mark.parametrize("stale_after", [0.0, 0.3])
async def test_a_late_revalidation_serves_the_cached_copy_and_finishes_in_the_background(
    make_mirror: MakeMirror,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    stale_after: float,
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=1, stale_after=stale_after)
    _, before = await timed_body(client)
    await asyncio.sleep(1.05)  # expired
    upstream.publish(CrateSpec("multi", "2.0.0"))
    upstream.set_latency(0.8, scope="index", times=1)

    waited, first = await timed_body(client)
    assert stale_after <= waited < stale_after + 0.25
    waited, second = await timed_body(client)  # while the revalidation goes on
    assert waited < 0.15
    assert first == second == before
    assert await metric(client, "ghostcrate_stale_index_served_total") == 1  # one revalidation
    late = [r for r in caplog.records if "not answered within stale_after" in r.getMessage()]
    assert len(late) == 1

    await requests_for(upstream, "multi", 2)  # one revalidation for both requests
    await asyncio.sleep(0.1)  # and its answer stored
    _, after = await timed_body(client)
    assert b'"2.0.0"' in after
    assert upstream.index_count("multi") == 2  # the background revalidation's answer


async def test_a_file_not_cached_waits_for_the_upstream(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(stale_after=0.1)
    upstream.set_latency(0.6, scope="index")
    waited, body = await timed_body(client)
    assert waited >= 0.6
    assert body == upstream.registry.index_file("multi")


async def test_a_renewal_ahead_of_expiry_waits_for_the_upstream_and_serves_nothing_stale(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=1, stale_after=0.1)
    await timed_body(client)
    await asyncio.sleep(0.92)  # past its renewal point, not expired
    upstream.publish(CrateSpec("multi", "2.0.0"))
    upstream.set_latency(0.5, scope="index", times=1)
    _, ahead = await timed_body(client)  # a hit that starts the renewal
    assert b'"2.0.0"' not in ahead
    await asyncio.sleep(0.25)  # past stale_after, and past the file's expiry
    waited, meanwhile = await timed_body(client)
    assert waited < 0.15  # "updating": the renewal is still on its way
    assert b'"2.0.0"' not in meanwhile
    await requests_for(upstream, "multi", 2)
    await asyncio.sleep(0.1)
    _, renewed = await timed_body(client)
    assert b'"2.0.0"' in renewed
    assert await metric(client, "ghostcrate_stale_index_served_total") == 0
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="renewed_ahead") == 1


async def test_late_revalidations_open_the_breaker_and_do_not_hold_up_shutdown(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(
        index_ttl=0.2, stale_after=0.2, read_timeout=30, breaker_failures=2
    )
    paths = [f"/index/{index_path(name)}" for name in ("multi", "abc")]
    for path in paths:
        await timed_body(client, path)
    await asyncio.sleep(0.25)
    upstream.set_latency(40)
    for path in paths:
        waited, _ = await timed_body(client, path)
        assert waited < 0.45
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 1
    miss = await client.get("/api/v1/crates/z/0.1.0/download")
    assert miss.status == 502
    detail = (await miss.json())["errors"][0]["detail"]
    assert "no answer within 0.2 s ([upstream] stale_after)" in detail

    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.close()  # the two revalidations still wait for the upstream
    assert loop.time() - started < 1


async def test_a_late_answer_still_counts_as_a_success(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=0.2, stale_after=0.2, breaker_failures=1)
    await timed_body(client)
    await asyncio.sleep(0.25)
    # Late by 1 s: room for the check below on a busy machine (0.4 s was not always).
    upstream.set_latency(1.2, scope="index", times=1)
    await timed_body(client)
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 1
    await requests_for(upstream, "multi", 2)
    await asyncio.sleep(0.05)
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 0


async def test_a_late_request_that_then_fails_counts_once(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(
        index_ttl=0.2, stale_after=0.1, read_timeout=0.4, breaker_failures=2
    )
    await timed_body(client)
    await asyncio.sleep(0.25)
    upstream.set_latency(1.0, scope="index")
    await timed_body(client)
    await asyncio.sleep(0.5)  # timed out after being late: still one failure
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 0
    assert await metric(client, "ghostcrate_stale_index_served_total") == 1
    assert (
        await metric(client, "ghostcrate_upstream_requests_total", kind="index", outcome="error")
        == 1
    )


async def test_stale_after_0_counts_nothing_towards_the_breaker(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=0.2, stale_after=0, breaker_failures=1)
    await timed_body(client)
    await asyncio.sleep(0.25)
    upstream.set_latency(0.3, scope="index", times=1)
    await timed_body(client)
    await asyncio.sleep(0.1)
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 0
