"""The same request gets the same answer through the fast lane, over h2c and from aiohttp alone."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.hostile.test_h2_relay import answers_of
from tests.support.crates import index_path
from tests.support.h2attack import RawH2
from tests.support.rawhttp import exchange
from tests.support.twins import Twins, twin_servers
from tests.support.upstream import FakeUpstream

INDEX = f"/index/{index_path('abc')}"
CRATE = "/api/v1/crates/abc/0.2.0/download"

#: (method, target, extra header fields)
REQUESTS: list[tuple[str, str, tuple[tuple[str, str], ...]]] = [
    ("GET", INDEX, ()),
    ("HEAD", INDEX, ()),
    ("GET", INDEX, (("if-none-match", "*"),)),
    ("GET", INDEX, (("if-modified-since", "Mon, 01 Jan 2024 00:00:00 +99999999999999"),)),
    ("GET", CRATE, ()),
    ("HEAD", CRATE, ()),
    ("GET", CRATE, (("if-match", '"nope"'),)),
    ("GET", CRATE, (("if-none-match", "*"),)),
    ("GET", CRATE, (("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),)),
    ("GET", CRATE, (("range", "bytes=0-9"),)),
    ("GET", "/api/v1/crates/abc/9.9.9/download", ()),
    ("GET", "/api/v1/crates/abc/not-a-version/download", ()),
    ("GET", "/index/zz/zz/zzz-none", ()),
    ("GET", "/index/./3/a/abc", ()),
    ("GET", "//index/3/a/abc", ()),
    ("GET", "/index/3/a/abc?x=1", ()),
    ("GET", "/health", ()),
    ("POST", "/health", ()),
    ("GET", "/healthz", ()),
    ("HEAD", "/healthz", ()),
    ("GET", "/healthz?probe=1", ()),
    ("POST", "/healthz", ()),
    ("DELETE", CRATE, ()),
    ("GET", "/no/such/route", ()),
    # The registry's API: no token, a mirrored (not private) crate, search, /me.
    ("PUT", "/api/v1/crates/new", ()),
    ("PUT", "/api/v1/crates/new", (("authorization", "gcr_" + "x" * 43),)),
    ("DELETE", "/api/v1/crates/abc/0.2.0/yank", ()),
    ("PUT", "/api/v1/crates/abc/0.2.0/unyank", (("authorization", "not-a-token"),)),
    ("GET", "/api/v1/crates/abc", ()),
    ("GET", "/api/v1/crates/abc/owners", ()),
    ("GET", "/api/v1/crates?q=ab&per_page=5", ()),
    ("GET", "/api/v1/crates?per_page=lots", ()),
    ("GET", "/me", ()),
    # Sessions: no body, no token, a token that is not valid.
    ("POST", "/api/v1/session", ()),
    ("POST", "/api/v1/session/refresh", ()),
    ("DELETE", "/api/v1/session", ()),
    ("DELETE", "/api/v1/session", (("authorization", "Bearer e30.e30.x"),)),
    ("GET", "/api/v1/me", ()),
    ("GET", "/api/v1/me", (("authorization", "Bearer e30.e30.x"),)),
    # Organisations: listed, unknown, writes without a token or with a bad one.
    ("GET", "/api/v1/orgs", ()),
    ("GET", "/api/v1/orgs/acme", ()),
    ("GET", "/api/v1/orgs/acme/members", ()),
    ("GET", "/api/v1/orgs/acme/teams", ()),
    ("POST", "/api/v1/orgs", ()),
    ("PUT", "/api/v1/orgs/acme/members", (("authorization", "gcr_" + "x" * 43),)),
    ("DELETE", "/api/v1/orgs/acme/teams/platform/members", ()),
    # Single sign-on: no provider is configured here.
    ("GET", "/api/v1/sso/corp/login", ()),
    ("GET", "/api/v1/sso/corp/callback?state=x&code=y", ()),
]


@pytest.fixture
async def twins(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Twins]:
    async with twin_servers(tmp_path, upstream.url) as both:
        yield both


async def test_every_request_is_answered_alike_by_all_three(twins: Twins) -> None:
    assert twins.fast.port is not None
    assert twins.plain.port is not None
    for server in (twins.fast, twins.plain):  # both caches warm
        assert server.port is not None
        for target in (INDEX, CRATE):
            warm = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            assert (await exchange("127.0.0.1", server.port, warm)).statuses == [200]
    client = await RawH2.connect(twins.fast.port)
    try:
        answered = []
        for method, target, extra in REQUESTS:
            fields = tuple((name.encode(), value.encode()) for name, value in extra)
            stream_id = client.request(target.encode(), method=method.encode(), extra=fields)
            await client.drain()
            answered.append(answers_of(await client.until_done(stream_id), stream_id))
    finally:
        await client.close()
    heads = []
    for method, target, extra in REQUESTS:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in extra]
        heads.append("\r\n".join([*lines, "", ""]).encode())
    http1 = await asyncio.gather(*(twins.send(head) for head in heads))
    for (method, target, extra), (fast, plain), (h2_status, h2_body, reset) in zip(
        REQUESTS, http1, answered, strict=True
    ):
        what = f"{method} {target} {extra}"
        assert reset is None, what
        assert fast.statuses == plain.statuses == [h2_status], (what, fast.raw[:200], h2_status)
        if method == "GET" and h2_status == 200:
            body = fast.raw.split(b"\r\n\r\n", 1)[1]
            assert hashlib.sha256(h2_body).digest() == hashlib.sha256(body).digest(), what
