"""Hostile HTTP/1.1 shapes: the fast lane answers each exactly as aiohttp does, or not at all.

Each request goes, as the same bytes over a raw socket, to the mirror behind the
fast lane and to the same mirror under plain aiohttp; the statuses of every
answer and whether the server closed must agree, and must be the ones listed.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.crates import corpus_registry
from tests.support.twins import Twins, twin_servers
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.asyncio(loop_scope="module")

INDEX = "/index/3/a/abc"
DOWNLOAD = "/api/v1/crates/abc/0.2.0/download"


def head(*lines: str, target: str = INDEX, line: str | None = None, end: str = "\r\n") -> bytes:
    """A request head: `GET target HTTP/1.1` (or `line`), `Host` unless `lines` name one."""
    fields = lines if any(f.lower().startswith("host") for f in lines) else ("Host: x", *lines)
    return end.join([line or f"GET {target} HTTP/1.1", *fields, "", ""]).encode("latin-1")


def settings(*pairs: tuple[int, int]) -> str:
    """An HTTP2-Settings value for (identifier, value) pairs."""
    payload = b"".join(struct.pack("!HI", code, value) for code, value in pairs)
    return base64.urlsafe_b64encode(payload).decode()


H2C = "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c"
WEBSOCKET = "Connection: Upgrade", "Upgrade: websocket"
SECOND = head(target="/index/config.json")
CLOSED = True
OPEN = False

#: (id, bytes, the statuses of the answers, whether the server then closes the connection).
SHAPES: list[tuple[str, bytes, list[int], bool]] = [
    ("plain", head(), [200], OPEN),
    (
        "cl-and-te",
        head("Content-Length: 5", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
        [400],
        CLOSED,
    ),
    ("double-cl", head("Content-Length: 5", "Content-Length: 5") + b"hello", [400], CLOSED),
    ("cl-with-body", head("Content-Length: 5") + b"hello", [200], OPEN),
    (
        "te-chunked-get",
        head("Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n",
        [200],
        OPEN,
    ),
    ("obs-fold", head("X-Folded: a", " b"), [400], CLOSED),
    ("bare-lf", head(end="\n"), [400], CLOSED),
    ("one-bare-lf", head("Accept: */*\nX-Other: 1"), [400], CLOSED),
    ("missing-host", b"GET /index/3/a/abc HTTP/1.1\r\n\r\n", [400], CLOSED),
    ("missing-host-http-1.0", b"GET /index/3/a/abc HTTP/1.0\r\n\r\n", [200], CLOSED),
    ("two-hosts", head("Host: x", "Host: y"), [400], CLOSED),
    ("empty-host", head("Host:"), [200], OPEN),
    ("http-0.9", b"GET /index/3/a/abc\r\n\r\n", [200], CLOSED),
    ("http-0.9-with-fields", head(line=f"GET {INDEX}"), [200], CLOSED),
    ("http-2.0", head(line=f"GET {INDEX} HTTP/2.0"), [200], CLOSED),
    ("http-1.2", head(line=f"GET {INDEX} HTTP/1.2"), [400], CLOSED),
    ("absolute-form", head(line=f"GET http://evil{INDEX} HTTP/1.1"), [200], OPEN),
    ("absolute-form-no-host", head(line="GET http:/index HTTP/1.1"), [400], CLOSED),
    ("dot-dot", head(target="/index/../metrics"), [404], OPEN),
    ("dot-dot-download", head(target="/api/v1/crates/abc/../download"), [404], OPEN),
    ("dot-segment", head(target="/index/3/./a/abc"), [404], OPEN),
    ("double-slash", head(target="/index//3/a/abc"), [404], OPEN),
    ("leading-double-slash", head(target="//index/3/a/abc"), [404], OPEN),
    ("encoded-dot-dot", head(target="/index/%2e%2e/metrics"), [404], OPEN),
    ("encoded-name", head(target="/index/3/a/%61bc"), [200], OPEN),
    ("backslashes", head(target="/index\\..\\metrics"), [404], OPEN),
    ("nul-in-target", head(target="/index/3/a/abc\x00"), [400], CLOSED),
    ("nul-in-value", head("X-Nul: a\x00b"), [400], CLOSED),
    ("control-in-value", head("X-Ctl: a\x01b"), [400], CLOSED),
    ("fragment", head(target=f"{INDEX}#x"), [200], OPEN),
    ("space-before-colon", head("Host : x"), [400], CLOSED),
    ("two-spaces", head(line=f"GET  {INDEX} HTTP/1.1"), [200], OPEN),
    ("lower-case-method", head(line=f"get {INDEX} HTTP/1.1"), [400], CLOSED),
    ("two-user-agents", head("User-Agent: a", "User-Agent: b"), [400], CLOSED),
    ("websocket-key1", head("Sec-WebSocket-Key1: 1"), [400], CLOSED),
    ("too-many-fields", head(*(f"X-{n}: {n}" for n in range(129))), [400], CLOSED),
    ("long-line", head("X-Long: " + "a" * 9000), [400], CLOSED),
    ("long-head", head(*(f"X-{n}: {'a' * 2000}" for n in range(10))), [200], OPEN),
    ("huge-head", head(*(f"X-{n}: {'a' * 8000}" for n in range(25))), [200], OPEN),
    (
        "websocket-with-body",
        head(*WEBSOCKET, f"Content-Length: {len(SECOND)}") + SECOND,
        [200],
        OPEN,
    ),
    ("websocket-then-request", head(*WEBSOCKET) + SECOND, [200, 200], OPEN),
    (
        "other-upgrade-then-request",
        head("Connection: Upgrade", "Upgrade: foo") + SECOND,
        [200],
        OPEN,
    ),
    ("h2c-bad-settings", head(*H2C, "HTTP2-Settings: !!!!!!!!"), [200], OPEN),
    ("h2c-settings-not-whole", head(*H2C, "HTTP2-Settings: AAMAAAB"), [200], OPEN),
    ("h2c-settings-padded", head(*H2C, "HTTP2-Settings: AAMAAABkAA=="), [200], OPEN),
    ("h2c-push-2", head(*H2C, f"HTTP2-Settings: {settings((2, 2))}"), [200], OPEN),
    ("h2c-window-2-31", head(*H2C, f"HTTP2-Settings: {settings((4, 2**31))}"), [200], OPEN),
    ("h2c-frame-size-100", head(*H2C, f"HTTP2-Settings: {settings((5, 100))}"), [200], OPEN),
    (
        "h2c-two-settings",
        head(*H2C, "HTTP2-Settings: AAMAAABk", "HTTP2-Settings: AAMAAABk"),
        [200],
        OPEN,
    ),
    ("h2c-bad-then-request", head(*H2C, "HTTP2-Settings: !!!!!!!!") + SECOND, [200], OPEN),
    ("close-then-request", head("Connection: close") + SECOND, [400], CLOSED),
    ("http-1.0-then-request", head(line=f"GET {INDEX} HTTP/1.0") + SECOND, [400], CLOSED),
    ("body-without-length", head() + b"hello", [400], CLOSED),
    ("request-then-garbage", head() + SECOND + b"GARBAGE\r\n\r\n", [400], CLOSED),
    ("request-then-crlf", head() + b"\r\n", [200], OPEN),
    ("request-then-partial", head() + b"GET /index/con", [200], OPEN),
    ("pipelined", head() + SECOND + head(target=DOWNLOAD), [200, 200, 200], OPEN),
    ("download-if-match", head('If-Match: "nope"', target=DOWNLOAD), [412], OPEN),
    (
        "download-if-modified-since",
        head("If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT", target=DOWNLOAD),
        [304],
        OPEN,
    ),
    ("download-if-none-match-any", head("If-None-Match: *", target=DOWNLOAD), [304], OPEN),
    ("index-if-match", head('If-Match: "nope"'), [200], OPEN),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def twins(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Twins]:
    """The twin servers, shared by this module's tests; the targets above cached."""
    with FakeUpstream(corpus_registry()) as upstream:
        async with twin_servers(tmp_path_factory.mktemp("twins"), upstream.url) as servers:
            for target in (INDEX, DOWNLOAD, "/index/config.json"):
                await servers.send(head(target=target), quiet=0.1)
            yield servers


@pytest.mark.parametrize(
    ("data", "statuses", "closed"),
    [pytest.param(data, statuses, closed, id=name) for name, data, statuses, closed in SHAPES],
)
async def test_the_fast_lane_answers_as_aiohttp_does(
    twins: Twins, data: bytes, statuses: list[int], closed: bool
) -> None:
    fast, plain = await twins.send(data)
    assert plain.outcome == (statuses, closed), "aiohttp itself answers otherwise now"
    assert fast.outcome == plain.outcome
