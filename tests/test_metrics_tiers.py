"""/metrics counts the memory tier (the hot set) like the others, without `_created` series."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ghostcrate.appliance.replies import DOWNLOAD_ROUTE, INDEX_ROUTE
from tests.conftest import MirrorClient
from tests.support.crates import index_path
from tests.support.h2client import H2Client
from tests.support.metrics import client_metric as metric
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


async def test_answers_from_the_hot_set_are_memory_hits(make_mirror: MakeMirror) -> None:
    client: MirrorClient = await make_mirror()
    for _ in range(3):  # a miss, then two hits
        assert (await client.get(f"/index/{index_path('abc')}")).status == 200
    for _ in range(2):
        assert (await client.get("/api/v1/crates/abc/0.2.0/download")).status == 200
    assert await metric(client, "ghostcrate_cache_hits_total", tier="memory") == 3
    assert await metric(client, "ghostcrate_cache_misses_total", tier="memory") == 2


async def test_no_created_series(make_mirror: MakeMirror) -> None:
    client: MirrorClient = await make_mirror()
    assert (await client.get("/index/config.json")).status == 200
    exposition = await (await client.get("/metrics")).text()
    assert "ghostcrate_http_requests_total" in exposition
    assert "_created" not in exposition


async def test_the_readme_table_lists_every_metric(make_mirror: MakeMirror) -> None:
    client: MirrorClient = await make_mirror()
    assert (await client.get("/index/config.json")).status == 200
    exposition = await (await client.get("/metrics")).text()
    exported = {
        family.name
        for family in text_string_to_metric_families(exposition)
        if family.name.startswith("ghostcrate_")
    }
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("| metric | labels |") :].split("\n\n", 1)[0]
    listed = {name.removesuffix("_total") for name in re.findall(r"`(ghostcrate_\w+)`", table)}
    assert exported == listed


@pytest.mark.parametrize("front", ["http/1.1", "h2c", "aiohttp"])
async def test_requests_are_counted_by_outcome(
    make_mirror: MakeMirror, upstream: FakeUpstream, front: str
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=0.3, stale_after=0.1)
    # A Range header sends a request to aiohttp instead of the lanes.
    extra = {"Range": "bytes=0-"} if front == "aiohttp" else {}
    index = f"/index/{index_path('abc')}"
    h2, _ = await H2Client.upgrade(client.host, client.port, "/index/config.json")

    async def ask(path: str) -> int:
        if front == "h2c":
            return (await h2.get(path)).status
        return (await client.get(path, headers=extra)).status

    assert await ask(index) == 200  # miss
    assert await ask(index) == 200  # hit
    crate = "/api/v1/crates/abc/0.2.0/download"
    assert await ask(crate) in (200, 206)  # miss (aiohttp answers the Range)
    assert await ask(crate) in (200, 206)  # hit
    await asyncio.sleep(0.35)
    upstream.set_status(503)  # the index file has expired, and the upstream fails
    assert await ask(index) == 200  # stale
    assert await ask("/index/ne/ve/never-cached") == 502  # error
    counts = {
        (route, outcome): await metric(
            client, "ghostcrate_requests_total", route=route, outcome=outcome
        )
        for route in (INDEX_ROUTE, DOWNLOAD_ROUTE)
        for outcome in ("hit", "miss", "stale", "error")
    }
    assert counts == {
        (INDEX_ROUTE, "hit"): 1,
        (INDEX_ROUTE, "miss"): 1,
        (INDEX_ROUTE, "stale"): 1,
        (INDEX_ROUTE, "error"): 1,
        (DOWNLOAD_ROUTE, "hit"): 1,
        (DOWNLOAD_ROUTE, "miss"): 1,
        (DOWNLOAD_ROUTE, "stale"): 0,
        (DOWNLOAD_ROUTE, "error"): 0,
    }
    await h2.close()
