"""/metrics counts the memory tier (the hot set) like the others, without `_created` series."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

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
