"""The fast lane's HTTP/1.1: keep-alive, pipelining, HEAD, gzip, 304s, and handing over to aiohttp.

These talk raw HTTP over a socket to GhostCrate in-process (behind the fast
lane, as `ghostcrate serve` runs it), so that what is on the wire is what is
checked.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghostcrate.appliance import fastlane
from tests.conftest import MirrorClient
from tests.support.crates import CrateSpec, index_path
from tests.support.metrics import client_metric as metric
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


class Answer:
    def __init__(self, status_line: bytes, headers: dict[str, str], body: bytes) -> None:
        self.status = int(status_line.split()[1])
        self.headers = headers
        self.body = body


class RawConnection:
    """One client connection; requests are written as given, answers read one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, client: MirrorClient) -> RawConnection:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head_only: bool = False) -> Answer:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), 10)
        return Answer(status_line, headers, body)

    async def closed(self) -> bool:
        """Whether the server closed the connection (and sent nothing more)."""
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def get(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


def download(name: str, version: str) -> str:
    return f"/api/v1/crates/{name}/{version}/download"


@pytest.fixture
async def client(make_mirror: MakeMirror) -> MirrorClient:
    mirror: MirrorClient = await make_mirror()
    return mirror


@pytest.fixture
async def conn(client: MirrorClient) -> Any:
    connection = await RawConnection.open(client)
    yield connection
    await connection.close()


async def test_pipelined_requests_are_answered_in_order(
    conn: RawConnection, upstream: FakeUpstream
) -> None:
    upstream.set_latency(0.2, scope="index")  # the first answer is the slow one
    names = ["featly", "multi", "featly", "abc"]
    await conn.send(b"".join(get(f"/index/{index_path(name)}") for name in names))
    for name in names:
        answer = await conn.answer()
        assert answer.status == 200
        assert answer.body == upstream.registry.index_file(name)


async def test_keep_alive_serves_many_requests_on_one_connection(
    conn: RawConnection, upstream: FakeUpstream, client: MirrorClient
) -> None:
    for _ in range(20):
        await conn.send(get(f"/index/{index_path('multi')}"))
        assert (await conn.answer()).body == upstream.registry.index_file("multi")
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="hit") == 19


async def test_head_gives_the_headers_of_get_without_a_body(
    conn: RawConnection, upstream: FakeUpstream
) -> None:
    crate = upstream.registry.crate("featly", "0.1.0")
    assert crate is not None
    for target in (f"/index/{index_path('featly')}", download("featly", "0.1.0")):
        await conn.send(get(target))
        full = await conn.answer()
        await conn.send(get(target, method="HEAD"))
        head = await conn.answer(head_only=True)
        assert head.status == full.status == 200
        assert head.headers["content-length"] == str(len(full.body))
        assert head.headers["content-type"] == full.headers["content-type"]
    assert full.body == crate.data
    await conn.send(get("/index/config.json"))  # nothing stray was sent after the HEADs
    assert (await conn.answer()).status == 200


async def test_index_files_are_gzipped_for_clients_that_accept_it(
    conn: RawConnection, upstream: FakeUpstream
) -> None:
    for minor in range(12):
        upstream.publish(CrateSpec("sprawl", f"1.{minor}.0", features={"extra": []}))
    plain_body = upstream.registry.index_file("sprawl")
    assert plain_body is not None
    assert len(plain_body) > 1024
    path = f"/index/{index_path('sprawl')}"
    await conn.send(get(path))
    plain = await conn.answer()
    # The gzip variant is made in the background once a client accepts gzip: until it
    # is ready, such clients get the identity body.
    for _ in range(100):
        await conn.send(get(path, "Accept-Encoding: br, gzip;q=0.8"))
        packed = await conn.answer()
        if "content-encoding" in packed.headers:
            break
        assert packed.body == plain_body
        assert packed.headers["vary"] == "Accept-Encoding"
        await asyncio.sleep(0.02)
    assert plain.body == plain_body
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert gzip.decompress(packed.body) == plain_body
    assert len(packed.body) < len(plain_body)
    assert plain.headers["vary"] == packed.headers["vary"] == "Accept-Encoding"
    assert packed.headers["etag"] == "W/" + plain.headers["etag"]
    # Revalidation with either validator: a 304 naming the representation asked for.
    await conn.send(get(path, "Accept-Encoding: gzip", f"If-None-Match: {packed.headers['etag']}"))
    again = await conn.answer(head_only=True)
    assert again.status == 304
    assert again.headers["etag"] == packed.headers["etag"]
    await conn.send(
        get(path, "Accept-Encoding: gzip;q=0", f"If-None-Match: {plain.headers['etag']}")
    )
    assert (await conn.answer(head_only=True)).status == 304
    await conn.send(get(path, "Accept-Encoding: gzip;q=0"))
    assert "content-encoding" not in (await conn.answer()).headers


async def test_conditional_requests_get_304_without_a_body(
    conn: RawConnection, upstream: FakeUpstream
) -> None:
    path = f"/index/{index_path('multi')}"
    await conn.send(get(path))
    first = await conn.answer()
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    await conn.send(get(path, f'If-None-Match: "other", {etag}'))
    by_etag = await conn.answer(head_only=True)
    await conn.send(get(path, f"If-Modified-Since: {last_modified}"))
    by_date = await conn.answer(head_only=True)
    await conn.send(get(path, 'If-None-Match: "other"'))
    changed = await conn.answer()
    assert (by_etag.status, by_date.status, changed.status) == (304, 304, 200)
    assert by_etag.headers["etag"] == etag
    assert "content-length" not in by_etag.headers
    assert changed.body == upstream.registry.index_file("multi")


async def test_connection_close_and_http_1_0_end_the_connection(client: MirrorClient) -> None:
    for request in (
        get("/index/config.json", "Connection: close"),
        get("/index/config.json", version="1.0"),
    ):
        conn = await RawConnection.open(client)
        await conn.send(request)
        answer = await conn.answer()
        assert answer.status == 200
        assert answer.headers["connection"] == "close"
        assert await conn.closed()
        await conn.close()


async def test_a_repeated_head_is_answered_like_the_first_with_its_own_request_id(
    client: MirrorClient, upstream: FakeUpstream
) -> None:
    # Heads seen before are not parsed again (`Lane.heads`): what each asked still holds.
    path = f"/index/{index_path('multi')}"
    conn = await RawConnection.open(client)
    ids = []
    for _ in range(3):
        await conn.send(get(path))
        answer = await conn.answer()
        assert answer.body == upstream.registry.index_file("multi")
        ids.append(answer.headers["x-request-id"])
    for _ in range(2):
        await conn.send(get(path, "X-Request-Id: trace-me-7"))
        assert (await conn.answer()).headers["x-request-id"] == "trace-me-7"
    await conn.close()
    assert len(set(ids)) == 3
    for _ in range(2):  # the same closing head, on two connections: both are closed
        conn = await RawConnection.open(client)
        await conn.send(get(path, "Connection: close"))
        assert (await conn.answer()).headers["connection"] == "close"
        assert await conn.closed()
        await conn.close()


async def test_heads_forgotten_when_the_memo_is_full_are_parsed_again(
    client: MirrorClient, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full memo forgets its older half; every head, remembered or not, still gets what
    # it asked (here: its own X-Request-Id echoed, and the file).
    path = f"/index/{index_path('multi')}"
    monkeypatch.setattr(
        fastlane, "MAX_HEADS_BYTES", 4 * fastlane.memo_cost(get(path, "X-Request-Id: head-0"))
    )
    conn = await RawConnection.open(client)
    for round_ in range(3):
        for number in range(7):
            await conn.send(get(path, f"X-Request-Id: head-{number}"))
            answer = await conn.answer()
            assert answer.headers["x-request-id"] == f"head-{number}", round_
            assert answer.body == upstream.registry.index_file("multi")
    await conn.close()


async def test_other_routes_hand_the_connection_to_aiohttp(
    conn: RawConnection, client: MirrorClient, upstream: FakeUpstream
) -> None:
    handovers = await metric(client, "ghostcrate_fast_lane_requests_total", result="handover")
    await conn.send(get(f"/index/{index_path('abc')}"))
    assert (await conn.answer()).status == 200
    await conn.send(get("/health"))  # not a fast-lane route: aiohttp answers from here on
    health = await conn.answer()
    assert health.status == 200
    assert b'"ok"' in health.body
    await conn.send(get(f"/index/{index_path('abc')}") + get("/nowhere"))
    assert (await conn.answer()).body == upstream.registry.index_file("abc")
    missing = await conn.answer()
    assert missing.status == 404
    assert b"errors" in missing.body
    # One more: this connection's (the test client's own went over for /metrics before).
    after = await metric(client, "ghostcrate_fast_lane_requests_total", result="handover")
    assert after == handovers + 1


async def test_ranges_and_encoded_targets_are_served_by_aiohttp(
    client: MirrorClient, upstream: FakeUpstream
) -> None:
    crate = upstream.registry.crate("bigdata", "0.1.0")
    assert crate is not None
    conn = await RawConnection.open(client)
    await conn.send(get(download("bigdata", "0.1.0"), "Range: bytes=10-19"))
    partial = await conn.answer()
    assert partial.status == 206
    assert partial.body == crate.data[10:20]
    await conn.close()
    conn = await RawConnection.open(client)
    await conn.send(get("/index/3/a/ab%63"))  # abc, percent-encoded
    assert (await conn.answer()).body == upstream.registry.index_file("abc")
    await conn.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /index/3/a/abc HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /index/3/a/abc HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET /index/3/a/abc HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ],
    ids=["not-http", "bad-header", "huge-head", "two-lengths"],
)
async def test_malformed_requests_get_a_400(client: MirrorClient, request_bytes: bytes) -> None:
    conn = await RawConnection.open(client)
    await conn.send(request_bytes)
    answer = await conn.answer()
    assert answer.status in (400, 431)
    await conn.close()
    assert (await client.get("/index/config.json")).status == 200  # the server is fine


async def test_with_http2_off_an_h2c_upgrade_request_is_answered_in_http_1_1(
    make_mirror: MakeMirror,
) -> None:
    client: MirrorClient = await make_mirror(server={"http2": False})
    conn = await RawConnection.open(client)
    upgrade = ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABk")
    await conn.send(get("/index/config.json", *upgrade))
    answer = await conn.answer()
    assert answer.status == 200
    await conn.send(get("/index/config.json"))  # and the connection goes on
    assert (await conn.answer()).status == 200
    await conn.close()


async def test_a_client_gone_during_a_fill_does_not_stop_the_fill(
    client: MirrorClient, upstream: FakeUpstream
) -> None:
    upstream.set_latency(0.3, scope="download")
    conn = await RawConnection.open(client)
    await conn.send(get(download("featly", "0.1.0")))
    await conn.close()
    await asyncio.sleep(0.5)
    response = await client.get(download("featly", "0.1.0"))
    assert response.status == 200
    assert upstream.download_count("featly", "0.1.0") == 1


async def test_a_crate_evicted_from_disk_is_fetched_again(
    conn: RawConnection, upstream: FakeUpstream, tmp_path: Path
) -> None:
    crate = upstream.registry.crate("bigdata", "0.1.0")
    assert crate is not None
    await conn.send(get(download("bigdata", "0.1.0")))
    assert (await conn.answer()).body == crate.data
    for path in (tmp_path / "data" / "cache" / "crates").rglob("*.crate"):
        path.unlink()  # as the disk tier's LRU or `ghostcrate gc` would
    await conn.send(get(download("bigdata", "0.1.0")))
    assert (await conn.answer()).body == crate.data
    assert upstream.download_count("bigdata", "0.1.0") == 2


async def test_crates_asked_for_repeatedly_are_served_from_memory(
    conn: RawConnection, client: MirrorClient, upstream: FakeUpstream
) -> None:
    crate = upstream.registry.crate("multi", "1.1.0")
    assert crate is not None
    for _ in range(4):
        await conn.send(get(download("multi", "1.1.0")))
        assert (await conn.answer()).body == crate.data
        await asyncio.sleep(0.05)  # the body is read into memory in the background
    sendfile = await metric(client, "ghostcrate_file_bytes_sent_total", method="sendfile")
    memory = await metric(client, "ghostcrate_file_bytes_sent_total", method="memory")
    assert sendfile == 2 * len(crate.data)  # the first two: the miss, and the hit that promotes
    assert memory == 2 * len(crate.data)


async def test_idle_connections_are_closed_after_the_keep_alive_timeout(
    make_mirror: MakeMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastlane, "KEEPALIVE_SECONDS", 0.3)
    monkeypatch.setattr(fastlane, "SWEEP_SECONDS", 0.1)
    client: MirrorClient = await make_mirror()
    conn = await RawConnection.open(client)
    await conn.send(get("/index/config.json"))
    assert (await conn.answer()).status == 200
    assert await conn.closed()
    await conn.close()
    slow = await RawConnection.open(client)
    await slow.send(b"GET /index/config.json HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert await slow.closed()
    await slow.close()


async def test_while_an_expired_index_file_is_renewed_others_get_the_previous_one(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=0.3)
    path = f"/index/{index_path('multi')}"
    before = await (await client.get(path)).read()
    upstream.publish(CrateSpec("multi", "2.0.0"))
    await asyncio.sleep(0.4)  # expired
    upstream.set_latency(0.6, scope="index")

    async def body() -> bytes:
        response = await client.get(path)
        return await response.read()

    renewing = asyncio.create_task(body())
    await asyncio.sleep(0.15)  # its revalidation is on its way
    started = asyncio.get_running_loop().time()
    meanwhile = await body()
    waited = asyncio.get_running_loop().time() - started
    renewed = await renewing
    assert meanwhile == before  # the reply that was fresh until a moment ago
    assert waited < 0.3, "a request behind a renewal should not wait for the upstream"
    assert b'"2.0.0"' in renewed  # the request that renewed it got the new file
    assert b'"2.0.0"' in await body()
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="updating") == 1


async def test_an_index_file_in_use_is_renewed_before_it_expires(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror(index_ttl=2.0)
    path = f"/index/{index_path('multi')}"
    assert (await client.get(path)).status == 200  # fills: fresh for 2 s
    upstream.publish(CrateSpec("multi", "3.0.0"))
    await asyncio.sleep(1.86)  # past its renewal point (70-90 % of its life), not expired
    ahead = await client.get(path)
    assert b'"3.0.0"' not in await ahead.read()  # answered at once, from the hot set...
    await asyncio.sleep(0.2)  # ...while it is revalidated behind the scenes
    assert upstream.index_count("multi") == 2
    later = await client.get(path)  # past the first ttl: no request waits for a renewal
    assert b'"3.0.0"' in await later.read()
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="fill") == 1
    assert await metric(client, "ghostcrate_fast_lane_requests_total", result="renewed_ahead") == 1
