"""The mirror on its tiers: hot index files from memory, a disk tier kept under its limit."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ghostcrate.appliance.keys import CACHE
from tests.conftest import MirrorClient, stored_index_file
from tests.support.crates import index_path
from tests.support.metrics import client_metric as metric
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


async def test_hot_index_files_are_served_from_memory(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    path = f"/index/{index_path('featly')}"
    for _ in range(5):
        response = await client.get(path)
        assert await response.read() == upstream.registry.index_file("featly")
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="hit") == 4
    assert await metric(client, "ghostcrate_cache_hits_total", tier="disk") == 0
    assert upstream.index_count("featly") == 1


async def test_without_memory_the_disk_answers(
    make_mirror: MakeMirror, upstream: FakeUpstream, tmp_path: Path
) -> None:
    client: MirrorClient = await make_mirror(cache={"memory_bytes": 0})
    path = f"/index/{index_path('featly')}"
    assert (await client.get(path)).status == 200
    await stored_index_file(tmp_path / "data", "featly")  # answered before it is stored
    for _ in range(2):
        assert (await client.get(path)).status == 200
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="hit") == 0
    assert await metric(client, "ghostcrate_cache_hits_total", tier="disk") == 2
    assert upstream.index_count("featly") == 1


async def test_the_disk_limit_is_enforced_while_serving(
    make_mirror: MakeMirror, upstream: FakeUpstream, tmp_path: Path
) -> None:
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    limit = len(big.data) + 10_000  # the big crate and a few small files
    client: MirrorClient = await make_mirror(cache={"disk_max_bytes": limit})
    crates = [c for c in upstream.registry if c.name != "bigdata"]
    for crate in [*crates[:5], big, *crates[5:]]:
        response = await client.get(f"/api/v1/crates/{crate.name}/{crate.version}/download")
        assert response.status == 200
        assert hashlib.sha256(await response.read()).hexdigest() == crate.cksum
    await client.app[CACHE].disk.close()  # let a running eviction finish
    on_disk = sum(p.stat().st_size for p in (tmp_path / "data" / "cache").rglob("*") if p.is_file())
    assert on_disk <= limit
    assert await metric(client, "ghostcrate_cache_evicted_bytes_total", tier="disk") > 0
    # An evicted crate is simply fetched again, verified as before.
    again = await client.get("/api/v1/crates/bigdata/0.1.0/download")
    assert await again.read() == big.data
