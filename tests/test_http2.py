"""HTTP/2 after cargo's h2c upgrade: multiplexed, flow-controlled, the same answers as HTTP/1.1."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h2.errors as h2errors
import pytest

from ghostcrate.appliance import h2lane, h2limits
from tests.conftest import MirrorClient
from tests.support.crates import CrateSpec, index_path
from tests.support.h2client import H2Client
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


def download(name: str, version: str) -> str:
    return f"/api/v1/crates/{name}/{version}/download"


@pytest.fixture
async def client(make_mirror: MakeMirror) -> MirrorClient:
    mirror: MirrorClient = await make_mirror()
    return mirror


async def test_the_upgrade_request_is_answered_on_stream_1(
    client: MirrorClient, upstream: FakeUpstream
) -> None:
    h2, first = await H2Client.upgrade(client.host, client.port, f"/index/{index_path('abc')}")
    try:
        assert b"101" in h2.switched
        assert first.status == 200
        assert bytes(first.body) == upstream.registry.index_file("abc")
        assert first.headers["etag"]
        assert first.headers["x-request-id"]
        again = await h2.get(f"/index/{index_path('abc')}")  # the connection goes on
        assert bytes(again.body) == bytes(first.body)
    finally:
        await h2.close()


async def test_requests_on_one_connection_are_filled_in_parallel(
    client: MirrorClient, upstream: FakeUpstream
) -> None:
    names = ["ab", "multi", "featly", "lazy", "optdep", "platform", "renamer", "builder"]
    h2, _ = await H2Client.upgrade(client.host, client.port, "/index/config.json")
    try:
        upstream.set_latency(0.5)
        started = time.monotonic()
        answers = await h2.get_many([f"/index/{index_path(name)}" for name in names])
        elapsed = time.monotonic() - started
        for name, answer in zip(names, answers, strict=True):
            assert answer.status == 200
            assert bytes(answer.body) == upstream.registry.index_file(name)
        # One after another this takes 8 x 0.5 s; at once, about one upstream round trip.
        assert elapsed < 2.5, f"{len(names)} misses took {elapsed:.1f} s: filled one by one?"
    finally:
        await h2.close()


async def test_streams_over_the_limit_are_refused_and_the_connection_goes_on(
    client: MirrorClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An h2c client sends its requests as soon as the upgrade is accepted, before it
    # has read the server's SETTINGS_MAX_CONCURRENT_STREAMS: streams over the limit are
    # refused one by one (REFUSED_STREAM, which clients retry), not the connection.
    monkeypatch.setattr(h2limits, "MAX_CONCURRENT_STREAMS", 2)
    upstream.set_latency(0.3)  # so that the first streams are still open
    names = ["ab", "multi", "featly", "lazy", "optdep"]
    h2, first = await H2Client.upgrade(
        client.host,
        client.port,
        "/index/config.json",
        early=tuple(f"/index/{index_path(name)}" for name in names),
    )
    try:
        assert first.status == 200
        early = await asyncio.wait_for(asyncio.gather(*h2.early_answers), 15)
        refused = [answer for answer in early if answer.reset]
        assert refused, "no stream was over the limit"
        assert all(answer.error_code == h2errors.ErrorCodes.REFUSED_STREAM for answer in refused)
        for name, answer in zip(names, early, strict=True):
            if not answer.reset:
                assert bytes(answer.body) == upstream.registry.index_file(name)
        # The connection goes on: what was refused is answered when asked again.
        retried = await h2.get_many(
            [f"/index/{index_path(n)}" for n, a in zip(names, early, strict=True) if a.reset][:2]
        )
        assert all(answer.status == 200 for answer in retried)
    finally:
        await h2.close()


async def test_a_large_crate_is_sent_within_the_flow_control_windows(
    client: MirrorClient, upstream: FakeUpstream
) -> None:
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    assert len(big.data) > 10 * 65_535  # far more than the default window
    h2, _ = await H2Client.upgrade(client.host, client.port, "/index/config.json")
    try:
        for _ in range(2):  # a miss, then a hit
            answer = await h2.get(download("bigdata", "0.1.0"))
            assert answer.status == 200
            assert answer.headers["content-length"] == str(len(big.data))
            assert hashlib.sha256(answer.body).hexdigest() == big.cksum
    finally:
        await h2.close()


async def test_conditional_and_gzip_answers_match_http_1_1(
    client: MirrorClient, upstream: FakeUpstream
) -> None:
    for minor in range(12):
        upstream.publish(CrateSpec("sprawl", f"1.{minor}.0", features={"extra": []}))
    path = f"/index/{index_path('sprawl')}"
    h2, plain = await H2Client.upgrade(client.host, client.port, path)
    try:
        for _ in range(100):  # made in the background once a client accepts gzip
            packed = await h2.get(path, ("accept-encoding", "gzip"))
            if "content-encoding" in packed.headers:
                break
            await asyncio.sleep(0.02)
        assert packed.headers["content-encoding"] == "gzip"
        assert gzip.decompress(packed.body) == bytes(plain.body)
        unchanged = await h2.get(path, ("if-none-match", plain.headers["etag"]))
        assert unchanged.status == 304
        assert not unchanged.body
        http1 = await client.get(path, headers={"Accept-Encoding": "identity"})
        assert http1.headers["ETag"] == plain.headers["etag"]
        assert await http1.read() == bytes(plain.body)
    finally:
        await h2.close()


async def test_other_routes_are_relayed_to_aiohttp(
    client: MirrorClient, upstream: FakeUpstream
) -> None:
    h2, _ = await H2Client.upgrade(client.host, client.port, "/index/config.json")
    try:
        health, metrics, missing, ranged = await asyncio.gather(
            h2.get("/health"),
            h2.get("/metrics"),
            h2.get("/no/such/route"),
            h2.get(download("featly", "0.1.0"), ("range", "bytes=0-9")),
        )
        assert (health.status, b'"ok"' in health.body) == (200, True)
        assert metrics.status == 200
        assert b"ghostcrate_fast_lane_requests_total" in metrics.body
        assert missing.status == 404
        assert b"errors" in missing.body
        crate = upstream.registry.crate("featly", "0.1.0")
        assert crate is not None
        assert (ranged.status, bytes(ranged.body)) == (206, crate.data[:10])
    finally:
        await h2.close()


async def test_http2_can_be_switched_off(make_mirror: MakeMirror) -> None:
    client: MirrorClient = await make_mirror(server={"http2": False})
    with pytest.raises(ConnectionError, match="no upgrade"):
        await H2Client.upgrade(client.host, client.port, "/index/config.json")


def test_a_file_in_the_page_cache_is_read_without_a_thread(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "just-filled.crate"
    path.write_bytes(data)  # its pages are in the page cache now
    fd = os.open(path, os.O_RDONLY)
    try:
        part = h2lane.read_if_cached(fd, 100_000, 50_000)
        assert part is not None
        assert bytes(part) == data[50_000:150_000]
        tail = h2lane.read_if_cached(fd, 100_000, 250_000)
        assert tail is not None
        assert bytes(tail) == data[250_000:]  # short at the end of the file
        assert h2lane.read_if_cached(fd, 10, len(data)) is None  # nothing there
    finally:
        os.close(fd)
