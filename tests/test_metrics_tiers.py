"""/metrics counts the memory tier (the hot set) like the others, without `_created` series."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import MirrorClient
from tests.support.crates import index_path
from tests.support.metrics import client_metric as metric

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
