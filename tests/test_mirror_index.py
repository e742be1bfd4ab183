"""The mirror's sparse index, in-process against the fake upstream over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MirrorClient, stored_index_file
from tests.support.crates import CrateSpec, index_path
from tests.support.metrics import client_metric as metric
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


async def test_config_json_advertises_this_server(make_mirror: MakeMirror) -> None:
    client: MirrorClient = await make_mirror(server={"public_url": "https://mirror.corp/"})
    response = await client.get("/index/config.json")
    assert response.status == 200
    config = json.loads(await response.read())
    assert config == {"dl": "https://mirror.corp/api/v1/crates", "api": "https://mirror.corp"}


@pytest.mark.parametrize("name", ["z", "ab", "abc", "MixedCase", "dash-name", "featly"])
async def test_index_files_are_the_upstreams_bytes(
    make_mirror: MakeMirror, upstream: FakeUpstream, name: str
) -> None:
    client: MirrorClient = await make_mirror()
    response = await client.get(f"/index/{index_path(name)}")
    assert response.status == 200
    assert await response.read() == upstream.registry.index_file(name)
    assert response.headers["ETag"].startswith('"')
    assert "Last-Modified" in response.headers


async def test_clients_get_304_on_their_own_conditional_requests(make_mirror: MakeMirror) -> None:
    client: MirrorClient = await make_mirror()
    path = f"/index/{index_path('featly')}"
    first = await client.get(path)
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert (await client.get(path, headers={"If-None-Match": etag})).status == 304
    assert (await client.get(path, headers={"If-None-Match": f"W/{etag}"})).status == 304
    assert (await client.get(path, headers={"If-None-Match": '"other"'})).status == 200
    assert (await client.get(path, headers={"If-Modified-Since": last_modified})).status == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await client.get(path, headers={"If-Modified-Since": old})).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "Mi/xe/MixedCase",  # not lowercased
        "3/b/abc",  # wrong prefix
        "ab/cd/abc",
        "1/toolong",
        "fe/at/featly/extra",
        "fe/at/..%2F..%2Fetc",
        "-a/bc/-abc",
        "config.jso",
    ],
)
async def test_bad_index_paths_are_404_without_asking_upstream(
    make_mirror: MakeMirror, upstream: FakeUpstream, path: str
) -> None:
    client: MirrorClient = await make_mirror()
    response = await client.get(f"/index/{path}")
    assert response.status == 404
    assert "errors" in await response.json()
    assert upstream.requests == []


@pytest.mark.parametrize("status", [404, 410, 451])
async def test_missing_crates_are_404_and_remembered(
    make_mirror: MakeMirror, upstream: FakeUpstream, status: int
) -> None:
    upstream.set_missing_status(status)  # type: ignore[arg-type]
    client: MirrorClient = await make_mirror(negative_ttl=0.5)
    path = f"/index/{index_path('nosuchcrate')}"
    assert (await client.get(path)).status == 404
    assert (await client.get(path)).status == 404
    assert upstream.index_count("nosuchcrate") == 1
    await asyncio.sleep(0.6)
    assert (await client.get(path)).status == 404
    assert upstream.index_count("nosuchcrate") == 2


async def test_a_negative_answer_ends_when_the_crate_appears(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(negative_ttl=0.3)
    path = f"/index/{index_path('latecomer')}"
    assert (await client.get(path)).status == 404
    upstream.publish(CrateSpec("latecomer", "1.0.0"))
    assert (await client.get(path)).status == 404  # still remembered
    await asyncio.sleep(0.4)
    response = await client.get(path)
    assert response.status == 200
    assert b'"latecomer"' in await response.read()


async def test_fresh_files_are_served_without_asking_upstream(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=60)
    for _ in range(5):
        assert (await client.get(f"/index/{index_path('multi')}")).status == 200
    assert upstream.index_count("multi") == 1
    # Two misses: the file, and the upstream's config.json fetched alongside it (in the
    # background: on a loaded machine it may still be on its way).
    deadline = asyncio.get_running_loop().time() + 5
    misses = await metric(client, "ghostcrate_index_lookups_total", result="miss")
    while misses < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        misses = await metric(client, "ghostcrate_index_lookups_total", result="miss")
    assert misses == 2
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="hit") == 4


async def test_the_upstream_config_is_fetched_with_the_first_index_file_not_the_first_download(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    assert (await client.get(f"/index/{index_path('multi')}")).status == 200
    for _ in range(100):  # fetched in the background
        if upstream.config_count() == 1:
            break
        await asyncio.sleep(0.02)
    assert upstream.config_count() == 1
    assert (await client.get(f"/index/{index_path('abc')}")).status == 200
    response = await client.get("/api/v1/crates/multi/1.0.0/download")
    assert response.status == 200
    assert upstream.config_count() == 1  # the download did not wait for it


async def test_a_cached_file_a_crash_left_short_is_fetched_again(
    make_mirror: MakeMirror, upstream: FakeUpstream, tmp_path: Path
) -> None:
    client: MirrorClient = await make_mirror(cache={"memory_bytes": 0})
    path = f"/index/{index_path('multi')}"
    expected = upstream.registry.index_file("multi")
    assert await (await client.get(path)).read() == expected
    stored = await stored_index_file(tmp_path / "data", "multi")
    stored.write_bytes(stored.read_bytes()[:-20])  # written without a flush, then a crash
    assert await (await client.get(path)).read() == expected
    assert upstream.index_count("multi") == 2


async def test_stale_files_are_revalidated_conditionally(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=0.2)
    path = f"/index/{index_path('multi')}"
    first = await client.get(path)
    await asyncio.sleep(0.3)
    second = await client.get(path)
    assert await second.read() == await first.read()
    assert second.headers["ETag"] == first.headers["ETag"]
    revalidation = [r for r in upstream.requests if r.kind == "index"][-1]
    assert "If-None-Match" in revalidation.headers
    assert revalidation.status == 304
    assert await metric(client, "ghostcrate_index_lookups_total", result="revalidated") == 1


async def test_new_upstream_versions_appear_after_the_ttl(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=0.3)
    path = f"/index/{index_path('multi')}"
    before = await client.get(path)
    upstream.publish(CrateSpec("multi", "1.3.0"))
    within_ttl = await client.get(path)
    assert b'"1.3.0"' not in await within_ttl.read()
    await asyncio.sleep(0.4)
    after = await client.get(path)
    assert b'"1.3.0"' in await after.read()
    assert after.headers["ETag"] != before.headers["ETag"]
    # A client holding the old ETag now gets the new file, not a 304.
    again = await client.get(path, headers={"If-None-Match": before.headers["ETag"]})
    assert again.status == 200


@pytest.mark.parametrize("fault", ["status", "drop", "latency", "truncate", "corrupt"])
async def test_stale_beats_down(
    make_mirror: MakeMirror, upstream: FakeUpstream, fault: str
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=0.1, read_timeout=0.5)
    path = f"/index/{index_path('abc')}"
    fresh = await (await client.get(path)).read()
    await asyncio.sleep(0.2)
    if fault == "status":
        upstream.set_status(503, scope="index")
    elif fault == "drop":
        upstream.set_drop(scope="index")
    elif fault == "latency":
        upstream.set_latency(2.0, scope="index")
    else:
        upstream.publish(CrateSpec("abc", "0.3.0"))  # a changed file, so the body is sent
        getattr(upstream, f"set_{fault}")(scope="index")
    response = await client.get(path)
    assert response.status == 200
    assert await response.read() == fresh
    assert await metric(client, "ghostcrate_stale_index_served_total") == 1


async def test_stale_beats_a_stopped_upstream(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=0)
    path = f"/index/{index_path('abc')}"
    fresh = await (await client.get(path)).read()
    upstream.stop()
    response = await client.get(path)
    assert response.status == 200
    assert await response.read() == fresh


async def test_a_miss_with_the_upstream_failing_says_what_failed(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    upstream.set_status(503, scope="index")
    response = await client.get(f"/index/{index_path('abc')}")
    assert response.status == 502
    detail = (await response.json())["errors"][0]["detail"]
    assert "answered 503" in detail
    assert "3/a/abc" in detail
    upstream.clear_faults()
    assert (await client.get(f"/index/{index_path('abc')}")).status == 200


async def test_concurrent_misses_share_one_upstream_request(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    upstream.set_latency(0.3, scope="index")
    path = f"/index/{index_path('featly')}"
    responses = await asyncio.gather(*(client.get(path) for _ in range(40)))
    bodies = {await r.read() for r in responses}
    assert {r.status for r in responses} == {200}
    assert bodies == {upstream.registry.index_file("featly")}
    assert upstream.index_count("featly") == 1


@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
async def test_a_damaged_index_file_is_refused_and_not_cached(
    make_mirror: MakeMirror, upstream: FakeUpstream, tmp_path: Path, fault: str
) -> None:
    client: MirrorClient = await make_mirror()
    getattr(upstream, f"set_{fault}")(scope="index", crate="featly")
    response = await client.get(f"/index/{index_path('featly')}")
    assert response.status == 502
    detail = (await response.json())["errors"][0]["detail"]
    expected = {
        "truncate": "the connection closed before the whole body arrived",
        "corrupt": "the upstream sent a damaged index file for featly",
    }[fault]
    assert expected in detail
    assert not (tmp_path / "data" / "cache" / "index" / index_path("featly")).exists()
    upstream.clear_faults()
    healed = await client.get(f"/index/{index_path('featly')}")
    assert await healed.read() == upstream.registry.index_file("featly")


async def test_a_damaged_upstream_config_json_fails_downloads_clearly(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    upstream.set_status(200, scope="config", body=b"<html>captive portal</html>")
    response = await client.get("/api/v1/crates/z/0.1.0/download")
    assert response.status == 502
    assert "config.json has no download URL" in (await response.json())["errors"][0]["detail"]
    upstream.clear_faults()
    assert (await client.get("/api/v1/crates/z/0.1.0/download")).status == 200
