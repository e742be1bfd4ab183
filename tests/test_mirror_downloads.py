"""Mirrored .crate downloads: verified before cached or served, one fetch per miss."""

from __future__ import annotations

import asyncio
import hashlib
import math
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghostcrate.cache.disk import TEMP_PREFIX
from tests.conftest import MirrorClient
from tests.support.crates import CrateSpec, corpus_registry, index_path
from tests.support.metrics import client_metric as metric
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


def download(name: str, version: str) -> str:
    return f"/api/v1/crates/{name}/{version}/download"


async def statuses(client: MirrorClient, path: str, count: int, **headers: str) -> set[int]:
    """The statuses of `count` requests for `path`, sent one after the other."""
    seen = set()
    for _ in range(count):
        async with client.get(path, headers=headers) as response:
            await response.read()
            seen.add(response.status)
    return seen


def cached_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "data" / "cache" / "crates"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize(
    ("name", "version"),
    [("z", "0.1.1"), ("ab", "0.1.0"), ("MixedCase", "1.0.0"), ("multi", "1.2.0")],
)
async def test_downloads_are_byte_identical_and_cached(
    make_mirror: MakeMirror, upstream: FakeUpstream, name: str, version: str
) -> None:
    client: MirrorClient = await make_mirror()
    expected = upstream.registry.crate(name, version)
    assert expected is not None
    first = await client.get(download(name, version))
    assert first.status == 200
    assert await first.read() == expected.data
    second = await client.get(download(name, version))
    assert await second.read() == expected.data
    assert upstream.download_count(name, version) == 1
    assert await metric(client, "ghostcrate_crate_lookups_total", result="miss") == 1
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="hit") == 1


async def test_a_cache_hit_is_sent_with_sendfile_and_never_asks_upstream(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    assert await (await client.get(download("bigdata", "0.1.0"))).read() == big.data
    upstream.stop()
    hit = await client.get(download("bigdata", "0.1.0"))
    assert hit.status == 200
    assert hashlib.sha256(await hit.read()).hexdigest() == big.cksum
    assert await metric(client, "ghostcrate_file_bytes_sent_total", method="sendfile") == 2 * len(
        big.data
    )
    assert await metric(client, "ghostcrate_file_bytes_sent_total", method="copy") == 0


async def test_head_and_range_requests_on_a_cached_crate(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    crate = upstream.registry.crate("abc", "0.2.0")
    assert crate is not None
    await (await client.get(download("abc", "0.2.0"))).read()
    head = await client.head(download("abc", "0.2.0"))
    assert head.status == 200
    assert int(head.headers["Content-Length"]) == len(crate.data)
    part = await client.get(download("abc", "0.2.0"), headers={"Range": "bytes=10-19"})
    assert part.status == 206
    assert await part.read() == crate.data[10:20]


async def test_unknown_crates_and_versions_are_404(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    unknown_version = await client.get(download("multi", "9.9.9"))
    assert unknown_version.status == 404
    assert "no version 9.9.9" in (await unknown_version.json())["errors"][0]["detail"]
    unknown_crate = await client.get(download("nosuchcrate", "1.0.0"))
    assert unknown_crate.status == 404
    assert upstream.download_count("multi") == 0


@pytest.mark.parametrize(
    ("name", "version"),
    [("multi", "1.0"), ("multi", "..%2F..%2Fx"), ("-x", "1.0.0"), ("a" * 65, "1.0.0")],
)
async def test_malformed_names_and_versions_never_reach_upstream(
    make_mirror: MakeMirror, upstream: FakeUpstream, name: str, version: str
) -> None:
    client: MirrorClient = await make_mirror()
    response = await client.get(download(name, version))
    assert response.status == 404
    assert upstream.requests == []


async def test_a_version_published_after_the_index_was_cached_downloads_after_negative_ttl(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=3600, negative_ttl=0.3)
    await (await client.get(download("multi", "1.1.0"))).read()
    fresh = upstream.publish(CrateSpec("multi", "1.4.0"))
    assert await statuses(client, download("multi", "1.4.0"), 2) == {404}  # just confirmed
    await asyncio.sleep(0.3)
    response = await client.get(download("multi", "1.4.0"))
    assert response.status == 200
    assert await response.read() == fresh.data


@pytest.mark.parametrize("headers", [{}, {"Range": "bytes=0-"}], ids=["fast-lane", "aiohttp"])
async def test_a_missing_version_revalidates_the_index_file_once_per_negative_ttl(
    make_mirror: MakeMirror, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    negative_ttl = 0.5
    client: MirrorClient = await make_mirror(negative_ttl=negative_ttl)
    assert await statuses(client, f"/index/{index_path('multi')}", 1) == {200}
    await asyncio.sleep(negative_ttl + 0.05)  # no longer confirmed recently enough for a miss
    started = time.monotonic()
    concurrent = await asyncio.gather(
        *(statuses(client, download("multi", "9.9.9"), 1, **headers) for _ in range(200))
    )
    sequential = await statuses(client, download("multi", "9.9.9"), 200, **headers)
    periods = math.ceil((time.monotonic() - started) / negative_ttl)
    assert set().union(*concurrent, sequential) == {404}
    assert 1 <= upstream.index_count("multi") - 1 <= periods
    assert upstream.download_count("multi") == 0
    # The fast lane answers most from its kept 404; aiohttp asks the mirror each time.
    hits = await metric(client, "ghostcrate_fast_lane_requests_total", result="hit")
    assert (hits > 0) == (not headers)


async def test_a_missing_crate_is_answered_from_memory_for_negative_ttl(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(negative_ttl=30)
    assert await statuses(client, download("nosuchcrate", "1.0.0"), 50) == {404}
    assert upstream.index_count("nosuchcrate") == 1
    assert await metric(client, "ghostcrate_crate_lookups_total", result="miss") == 1


async def test_a_version_in_the_index_file_a_client_read_is_not_a_remembered_404(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    # cargo reads the index file, then downloads what it lists: a 404 kept for
    # `negative_ttl` must not outlive the index file that did not list the version.
    client: MirrorClient = await make_mirror(index_ttl=0.4, negative_ttl=30)
    assert await statuses(client, download("multi", "1.5.0"), 1) == {404}
    fresh = upstream.publish(CrateSpec("multi", "1.5.0"))
    await asyncio.sleep(0.4)
    index = await client.get(f"/index/{index_path('multi')}")
    assert b'"1.5.0"' in await index.read()
    response = await client.get(download("multi", "1.5.0"))
    assert response.status == 200
    assert await response.read() == fresh.data


async def test_a_crate_in_the_index_file_a_client_read_is_not_a_remembered_404(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    # A download's "no such crate" lasts as long as the mirror's memory of it, which
    # began before that download was asked for: not `negative_ttl` from the download.
    client: MirrorClient = await make_mirror(negative_ttl=0.5)
    index = f"/index/{index_path('latecomer')}"
    assert await statuses(client, index, 1) == {404}
    await asyncio.sleep(0.3)
    assert await statuses(client, download("latecomer", "1.0.0"), 1) == {404}
    fresh = upstream.publish(CrateSpec("latecomer", "1.0.0"))
    await asyncio.sleep(0.25)
    assert await statuses(client, index, 1) == {200}
    response = await client.get(download("latecomer", "1.0.0"))
    assert response.status == 200
    assert await response.read() == fresh.data


async def test_download_url_templates_with_markers_are_expanded(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    from ghostcrate.appliance.app import create_app
    from tests.conftest import mirror_settings

    template = "files/{lowerprefix}/{crate}/{crate}-{version}.crate?sum={sha256-checksum}"
    with FakeUpstream(corpus_registry(), dl_template=template) as templated:
        client: MirrorClient = await aiohttp_client(
            create_app(mirror_settings(tmp_path / "data", templated.url))
        )
        response = await client.get(download("MixedCase", "1.0.0"))
        assert response.status == 200
        assert templated.download_count("MixedCase", "1.0.0") == 1
        assert templated.requests[-1].path.startswith("/files/mi/xe/MixedCase/MixedCase-1.0.0")


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("status", "the upstream answered 503 for crate bigdata 0.1.0"),
        ("drop", "fetching crate bigdata 0.1.0 from the upstream failed"),
        ("truncate", "the connection closed before the whole body arrived"),
        ("corrupt", "the upstream sent a crate whose checksum differs from its index entry"),
        ("latency", "read timeout"),
    ],
)
async def test_upstream_faults_give_502_and_cache_nothing(
    make_mirror: MakeMirror, upstream: FakeUpstream, tmp_path: Path, fault: str, message: str
) -> None:
    client: MirrorClient = await make_mirror(read_timeout=0.5)
    await (await client.get("/index/bi/gd/bigdata")).read()  # the index itself is fine
    if fault == "status":
        upstream.set_status(503, scope="download")
    elif fault == "latency":
        upstream.set_latency(2.0, scope="download")
    else:
        getattr(upstream, f"set_{fault}")(scope="download")

    response = await client.get(download("bigdata", "0.1.0"))
    assert response.status == 502
    assert message in (await response.json())["errors"][0]["detail"]
    assert cached_files(tmp_path) == []
    data = tmp_path / "data"
    assert list((data / "cache" / "crates").rglob(f"{TEMP_PREFIX}*")) == []  # gone before the 502
    for _ in range(100):  # the index file is answered first and stored after: let it land
        if not list(data.rglob(f"{TEMP_PREFIX}*")):
            break
        await asyncio.sleep(0.02)
    assert list(data.rglob(f"{TEMP_PREFIX}*")) == []

    upstream.clear_faults()
    recovered = await client.get(download("bigdata", "0.1.0"))
    assert recovered.status == 200
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    assert await recovered.read() == big.data


async def test_an_outbound_proxy_that_never_accepts_is_named_in_the_timeout(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so a
    # connection to it times out instead of being refused.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        port = blackhole.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            client: MirrorClient = await make_mirror(
                proxy=f"http://someone:hunter2@127.0.0.1:{port}", connect_timeout=0.3
            )
            response = await client.get(download("z", "0.1.1"))
            assert response.status == 502
            detail = (await response.json())["errors"][0]["detail"]
    assert f"connecting to the outbound proxy 127.0.0.1:{port} timed out after 0.3 s" in detail
    assert "[upstream] proxy" in detail
    assert "hunter2" not in detail  # credentials are never repeated
    assert upstream.download_count("z", "0.1.1") == 0


async def test_a_checksum_mismatch_is_counted(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    upstream.set_corrupt(scope="download")
    assert (await client.get(download("z", "0.1.0"))).status == 502
    assert await metric(client, "ghostcrate_checksum_mismatches_total") == 1


async def test_concurrent_misses_make_one_upstream_request(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    upstream.set_latency(0.3, scope="download")
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    responses = await asyncio.gather(*(client.get(download("bigdata", "0.1.0")) for _ in range(30)))
    assert {r.status for r in responses} == {200}
    for response in responses:
        assert await response.read() == big.data
    assert upstream.download_count("bigdata", "0.1.0") == 1
    assert upstream.index_count("bigdata") == 1
