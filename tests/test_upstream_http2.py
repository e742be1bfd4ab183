"""HTTP/2 to an HTTPS upstream: one connection for many misses, GOAWAY, gzip, broken bodies.

The upstream is the fake crates.io behind a TLS front that speaks only HTTP/2, like
crates.io's CDN; GhostCrate trusts the front's throw-away CA through `ca_bundle`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ghostcrate.proxy.h2client import STREAM_WINDOW, H2Client, h2_tls_context
from tests.conftest import MirrorClient
from tests.support.appliance import Appliance
from tests.support.cargo import CargoEnv, read_lockfile
from tests.support.crates import CORPUS_APP_DEPS, corpus_registry, index_path, make_workspace
from tests.support.h2front import H2Front
from tests.support.metrics import client_metric as metric
from tests.support.tls import TestPKI, make_pki
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def front(upstream: FakeUpstream, pki: TestPKI) -> Iterator[H2Front]:
    with H2Front(upstream.url, pki) as started:
        upstream.advertised_url = started.url
        yield started


async def mirror_via(make_mirror: MakeMirror, front: H2Front, pki: TestPKI, **kw: Any) -> Any:
    return await make_mirror(index=front.url, ca_bundle=pki.ca_path, **kw)


def download(name: str, version: str) -> str:
    return f"/api/v1/crates/{name}/{version}/download"


async def test_concurrent_misses_share_one_http2_connection(
    make_mirror: MakeMirror, upstream: FakeUpstream, front: H2Front, pki: TestPKI
) -> None:
    client: MirrorClient = await mirror_via(make_mirror, front, pki)
    crates = [c for c in upstream.registry if c.name != "bigdata"][:12]
    names = sorted({c.name for c in crates})

    async def index(name: str) -> bytes:
        response = await client.get(f"/index/{index_path(name)}")
        assert response.status == 200
        return await response.read()

    bodies = await asyncio.gather(*(index(name) for name in names))
    assert bodies == [upstream.registry.index_file(name) for name in names]
    answers = await asyncio.gather(*(client.get(download(c.name, c.version)) for c in crates))
    for crate, answer in zip(crates, answers, strict=True):
        assert answer.status == 200
        assert hashlib.sha256(await answer.read()).hexdigest() == crate.cksum
    assert front.protocols == ["h2"]  # one connection, for all of them
    assert front.streams == len(names) + 1 + len(crates)  # index files, config.json, crates
    assert all(agent.startswith("ghostcrate/") for agent in front.user_agents)


async def test_after_a_goaway_requests_go_to_a_new_connection(
    make_mirror: MakeMirror, upstream: FakeUpstream, front: H2Front, pki: TestPKI
) -> None:
    front.goaway_after = 3
    client: MirrorClient = await mirror_via(make_mirror, front, pki)
    names = sorted({c.name for c in upstream.registry})[:10]
    for name in names[:4]:  # one at a time: the fourth finds the first connection closing
        assert (await client.get(f"/index/{index_path(name)}")).status == 200
    # At once: the streams above a GOAWAY's last stream were never processed, and are
    # sent again on another connection.
    answers = await asyncio.gather(*(client.get(f"/index/{index_path(n)}") for n in names[4:]))
    failures = [await a.text() for a in answers if a.status != 200]
    assert not failures
    for name, answer in zip(names[4:], answers, strict=True):
        assert await answer.read() == upstream.registry.index_file(name)
    assert front.connections >= 3
    # A request whose connection ends before it is answered is sent again (a GET may be):
    # the upstream may see one twice, never more.
    assert all(1 <= upstream.index_count(name) <= 2 for name in names)


async def test_a_goaway_read_together_with_the_answers_it_covers_lets_them_finish(
    make_mirror: MakeMirror, upstream: FakeUpstream, front: H2Front, pki: TestPKI
) -> None:
    # The GOAWAY and the last covered stream's answer arrive in one read: the answer
    # is still accepted (h2 alone would refuse frames after the GOAWAY).
    front.goaway_after = 2
    front.goaway_with_answer = True
    client: MirrorClient = await mirror_via(make_mirror, front, pki)
    names = sorted({c.name for c in upstream.registry})[:5]
    for name in names:
        response = await client.get(f"/index/{index_path(name)}")
        assert response.status == 200, await response.text()
        assert await response.read() == upstream.registry.index_file(name)
    assert front.connections == 3
    assert all(upstream.index_count(name) == 1 for name in names)


async def test_index_files_the_upstream_compresses_are_decoded(
    make_mirror: MakeMirror, upstream: FakeUpstream, front: H2Front, pki: TestPKI
) -> None:
    front.gzip = True
    client: MirrorClient = await mirror_via(make_mirror, front, pki)
    response = await client.get(f"/index/{index_path('multi')}")
    assert response.status == 200
    assert await response.read() == upstream.registry.index_file("multi")


async def test_a_crate_larger_than_the_stream_window_arrives_whole(
    make_mirror: MakeMirror, upstream: FakeUpstream, front: H2Front, pki: TestPKI
) -> None:
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    assert len(big.data) > 2 * STREAM_WINDOW
    client: MirrorClient = await mirror_via(make_mirror, front, pki)
    response = await client.get(download("bigdata", "0.1.0"))
    assert response.status == 200
    assert hashlib.sha256(await response.read()).hexdigest() == big.cksum


async def test_a_body_cut_short_is_refused_and_not_cached(
    make_mirror: MakeMirror, upstream: FakeUpstream, front: H2Front, pki: TestPKI
) -> None:
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    client: MirrorClient = await mirror_via(make_mirror, front, pki)
    assert (await client.get(f"/index/{index_path('bigdata')}")).status == 200
    front.cut_after = 100_000
    for _ in range(4):  # more than breaker_failures: a broken body does not open it
        failed = await client.get(download("bigdata", "0.1.0"))
        assert failed.status == 502
        assert "closed" in (await failed.json())["errors"][0]["detail"]
    assert await metric(client, "ghostcrate_upstream_breaker_open") == 0
    front.cut_after = None
    response = await client.get(download("bigdata", "0.1.0"))
    assert response.status == 200
    assert hashlib.sha256(await response.read()).hexdigest() == big.cksum


async def test_an_upstream_without_http2_is_asked_over_http1(
    make_mirror: MakeMirror, pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeUpstream(corpus_registry(), ssl_context=pki.server_context()) as tls_only:
        caplog.set_level(logging.INFO, logger="ghostcrate.proxy.h2client")
        client: MirrorClient = await make_mirror(index=tls_only.url, ca_bundle=pki.ca_path)
        for name in ("multi", "featly"):
            response = await client.get(f"/index/{index_path(name)}")
            assert response.status == 200
            assert await response.read() == tls_only.registry.index_file(name)
        noted = [r for r in caplog.records if "does not speak HTTP/2" in r.getMessage()]
        assert len(noted) == 1  # asked once, then remembered


async def test_http2_can_be_switched_off(
    make_mirror: MakeMirror, front: H2Front, pki: TestPKI
) -> None:
    client: MirrorClient = await mirror_via(make_mirror, front, pki, http2=False)
    response = await client.get(f"/index/{index_path('multi')}")
    assert response.status == 502  # this front speaks nothing but HTTP/2
    assert front.protocols
    assert None in front.protocols
    assert "h2" not in front.protocols


async def test_abandoned_bodies_give_their_window_back(
    upstream: FakeUpstream, front: H2Front, pki: TestPKI
) -> None:
    big = upstream.registry.crate("bigdata", "0.1.0")
    assert big is not None
    url = f"{front.url}crates/bigdata/0.1.0/download"
    client = H2Client(h2_tls_context(pki.client_context()), connect_timeout=5, read_timeout=5)
    try:
        # Each abandoned download leaves up to a stream window of received, unread data;
        # 24 of them would exhaust the connection's window if it were not given back.
        for _ in range(24):
            async with client.get(url, {}, decode=False) as response:
                assert response is not None
                assert response.status == 200
                async for _chunk in response.chunks():
                    await asyncio.sleep(0.05)  # let the rest of the window arrive
                    break
        async with client.get(url, {}, decode=False) as response:
            assert response is not None
            body = b"".join([chunk async for chunk in response.chunks()])
        assert hashlib.sha256(body).hexdigest() == big.cksum
        assert front.connections == 1
    finally:
        await client.close()


async def test_an_untrusted_certificate_names_ca_bundle_over_http2_too(
    make_mirror: MakeMirror, upstream: FakeUpstream, front: H2Front
) -> None:
    client: MirrorClient = await make_mirror(index=front.url)  # no ca_bundle
    response = await client.get(f"/index/{index_path('multi')}")
    assert response.status == 502
    detail = (await response.json())["errors"][0]["detail"]
    assert f"TLS certificate (127.0.0.1:{front.port}) is not trusted" in detail
    assert "[upstream] ca_bundle" in detail
    assert upstream.index_count("multi") == 0


@pytest.mark.e2e
def test_cargo_builds_through_ghostcrate_from_an_http2_upstream(
    upstream: FakeUpstream, front: H2Front, pki: TestPKI, tmp_path: Path
) -> None:
    appliance = Appliance(
        tmp_path / "appliance",
        front.url,
        server={"workers": 2},
        ca_bundle=str(pki.ca_path),
    ).start()
    try:
        app = make_workspace(tmp_path / "app", CORPUS_APP_DEPS)
        with CargoEnv(tmp_path / "cargo") as cargo:
            cargo.configure_replacement(appliance.index_url)
            cargo.run(["generate-lockfile"], app)
            cargo.run(["build"], app)
    finally:
        appliance.stop()
    locked = [p for p in read_lockfile(app) if p.source is not None]
    assert len(locked) >= len(CORPUS_APP_DEPS)
    for package in locked:
        crate = upstream.registry.crate(package.name, package.version)
        assert crate is not None, package.name
        assert package.checksum == crate.cksum, package.name
    assert set(front.protocols) == {"h2"}
    assert front.connections <= 2  # one per worker, whatever cargo asked for at once
    assert front.streams >= len(locked) * 2  # every index file and crate went over HTTP/2
