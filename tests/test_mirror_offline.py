"""Offline mode, and the online "only cached crates" policy, in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.conftest import MirrorClient
from tests.support.crates import CrateSpec, index_path
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


def versions(body: bytes) -> list[str]:
    return [json.loads(line)["vers"] for line in body.splitlines()]


async def test_offline_never_contacts_the_upstream_and_offers_only_cached_versions(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    online: MirrorClient = await make_mirror()
    assert (await online.get("/api/v1/crates/multi/1.0.0/download")).status == 200
    await online.close()
    upstream.reset_counts()

    offline: MirrorClient = await make_mirror(offline=True)
    index = await offline.get(f"/index/{index_path('multi')}")
    assert index.status == 200
    assert versions(await index.read()) == ["1.0.0"]  # 1.1.0 and 1.2.0 exist upstream only
    assert "Last-Modified" not in index.headers
    again = await offline.get(
        f"/index/{index_path('multi')}", headers={"If-None-Match": index.headers["ETag"]}
    )
    assert again.status == 304
    nothing_cached = await offline.get(f"/index/{index_path('featly')}")
    assert nothing_cached.status == 404
    uncached = await offline.get("/api/v1/crates/multi/1.1.0/download")
    assert uncached.status == 404
    assert "serves only cached crates" in (await uncached.json())["errors"][0]["detail"]
    assert (await offline.get("/api/v1/crates/multi/1.0.0/download")).status == 200
    assert upstream.requests == []


async def test_only_cached_online_follows_the_upstream_but_offers_only_cached_crates(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    warm: MirrorClient = await make_mirror()
    assert (await warm.get("/api/v1/crates/multi/1.0.0/download")).status == 200

    approved: MirrorClient = await make_mirror(only_cached=True, index_ttl=0)
    path = f"/index/{index_path('multi')}"
    first = await approved.get(path)
    assert versions(await first.read()) == ["1.0.0"]
    assert (await approved.get("/api/v1/crates/multi/1.1.0/download")).status == 404
    assert upstream.download_count("multi", "1.1.0") == 0

    # Another crate enters the cache (warmed by another process on the same data_dir):
    assert (await warm.get("/api/v1/crates/multi/1.1.0/download")).status == 200
    second = await approved.get(path, headers={"If-None-Match": first.headers["ETag"]})
    assert second.status == 200  # the view changed, so the old ETag no longer matches
    assert versions(await second.read()) == ["1.0.0", "1.1.0"]

    # The index itself still follows the upstream: a yank shows up in the offered view.
    upstream.yank("multi", "1.0.0")
    third = await approved.get(path)
    assert b'"yanked":true' in (await third.read()).splitlines()[0]
    upstream.publish(CrateSpec("multi", "1.9.0"))
    assert "1.9.0" not in versions(await (await approved.get(path)).read())
