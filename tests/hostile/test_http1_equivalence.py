"""Generated request heads: the fast lane answers every one exactly as aiohttp does.

Hypothesis builds requests from parts that hostile clients use (odd methods,
targets with path tricks, missing or strange versions, header fields with odd
bytes, a missing or doubled Host, obs-fold, bodies with and without framing,
Upgrade, bare LF, huge heads, bytes after the head); the same bytes go to the
mirror behind the fast lane and to the same mirror under plain aiohttp, and the
statuses of all the answers (until the server closes or falls quiet) and
whether it closed must agree. Where the fast lane hands the connection over,
they agree by construction; what this catches is a head the fast lane answers
itself, differently. The one difference allowed is the h2c upgrade, which the
fast lane takes (101) where aiohttp answers in HTTP/1.1.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.crates import corpus_registry
from tests.support.twins import Twins, twin_servers
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Examples run (each sends its request to both servers).
EXAMPLES = 250

TARGETS = [
    "/index/3/a/abc",
    "/index/mu/lt/multi",
    "/index/2/ab",
    "/index/config.json",
    "/index/no/pe/nopenope",
    "/api/v1/crates/abc/0.2.0/download",
    "/api/v1/crates/multi/1.1.0/download",
    "/api/v1/crates/nopenope/1.0.0/download",
    "/api/v1/crates/abc/not-a-version/download",
    "/health",
    "/nowhere",
]
#: Path tricks, applied to a target.
TRICKS: list[Callable[[str], str]] = [
    lambda t: t + "#x",
    lambda t: t + "?q=1",
    lambda t: "/" + t,
    lambda t: t.replace("/", "//", 2),
    lambda t: t.replace("/", "/./", 2),
    lambda t: t.replace("/", "/../", 2),
    lambda t: t.replace("/", "/%2e%2e/", 2),
    lambda t: t.replace("a", "%61", 1),
    lambda t: t.replace("/", "\\", 2),
    lambda t: t + "\x00",
    lambda t: t + "\x7f",
    lambda t: t + "\xff",
    lambda t: t + " x",
    lambda t: "http://evil" + t,
    lambda t: "http:" + t,
    lambda t: t.upper(),
    lambda t: "*",
    lambda t: "",
]
METHODS = ["POST", "PUT", "OPTIONS", "DELETE", "get", "G ET", "CONNECT", "PRI", "GET\t", "XYZ"]
VERSIONS = ["", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1.1 ", "HTTP/1", "HTTP/11"]
SECOND = b"GET /index/config.json HTTP/1.1\r\nHost: x\r\n\r\n"
AFTER_HEAD = [
    b"hello",
    SECOND,
    b"GARBAGE\r\n\r\n",
    b"GET /index/con",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"\r\n",
    b"\n",
]
ODD_NAMES = ["X Bad", "X\x00", "\xdcn\xefc\xf6de", "", "X-Tab\t", "(x)", "X:", " Host"]


def fields(etag: str, last_modified: str) -> tuple[list[str], list[str]]:
    """Header fields a client sends: (those cargo sends, those that change the answer)."""
    usual = [
        "User-Agent: cargo/1.80.0 (deadbeef 2024-07-21)",
        "Accept: */*",
        "Accept-Encoding: gzip",
        f"If-None-Match: {etag}",
        f"If-Modified-Since: {last_modified}",
        "cargo-protocol: version=1",
        "X-Request-Id: trace-1",
        "Connection: keep-alive",
    ]
    unusual = [
        "User-Agent: other",
        "Accept: text/html",
        "Accept-Encoding: br;q=1, gzip;q=0",
        f"If-None-Match: W/{etag}",
        'If-None-Match: "nope"',
        "If-None-Match: *",
        "If-Modified-Since: garbage",
        "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT",
        'If-Match: "nope"',
        "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
        "Connection: close",
        "Connection: Upgrade",
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "Upgrade: websocket",
        "Upgrade: foo",
        "HTTP2-Settings: AAMAAABk",
        "HTTP2-Settings: !!!!!!!!",
        "HTTP2-Settings: AAIAAAAC",
        "HTTP2-Settings: AAMAAAB",
        "Content-Length: 0",
        "Content-Length: 5",
        "Content-Length: -1",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: identity",
        "Range: bytes=0-9",
        "Expect: 100-continue",
        "X-Request-Id: not an id",
        "Sec-WebSocket-Key1: x",
        "Content-Type: text/plain",
        "Max-Forwards: 1",
    ]
    return usual, unusual


#: What can be odd about a request; each request has none, one or two of these.
ODDITIES = [
    "method",
    "target",
    "version",
    "host",
    "fields",
    "odd field",
    "obs-fold",
    "large",
    "many fields",
    "bare LF",
    "one bare LF",
    "after the head",
]


@st.composite
def requests(draw: st.DrawFn, etag: str, last_modified: str) -> bytes:
    """A request as cargo sends it, with up to two things about it odd."""
    odd = draw(st.sets(st.sampled_from(ODDITIES), max_size=2))
    usual, unusual = fields(etag, last_modified)
    method = draw(st.sampled_from(METHODS if "method" in odd else ["GET", "HEAD"]))
    target = draw(st.sampled_from(TARGETS))
    if "target" in odd:
        target = draw(st.sampled_from(TRICKS))(target)
    version = draw(st.sampled_from(VERSIONS if "version" in odd else ["HTTP/1.1", "HTTP/1.0"]))
    line = " ".join(part for part in (method, target, version) if part)
    host = ["Host: x"]
    if "host" in odd:
        host = draw(st.sampled_from([[], ["Host: x", "Host: y"], ["Host:"], ["Host: a b"]]))
    lines = [line, *host, *draw(st.lists(st.sampled_from(usual), max_size=4))]
    if "fields" in odd:
        lines += draw(st.lists(st.sampled_from(unusual), min_size=1, max_size=3))
    if "odd field" in odd:  # odd bytes in a name or a value
        name = draw(st.sampled_from(["X-Odd", "Host", "Connection", *ODD_NAMES]))
        value = draw(st.binary(max_size=6)).decode("latin-1")
        lines.insert(draw(st.integers(1, len(lines))), f"{name}: {value}")
    if "obs-fold" in odd:
        lines.insert(draw(st.integers(2, len(lines) + 1)), draw(st.sampled_from([" b", "\tb"])))
    if "large" in odd:  # around the limits of a line and of a head
        size = draw(st.sampled_from([2000, 7000, 8100, 8180, 8190, 8200, 9000, 20000]))
        lines += [f"X-Pad-{n}: {'a' * size}" for n in range(draw(st.integers(1, 3)))]
    if "many fields" in odd:  # around the limits of the field count
        lines += [f"X-{n}: {n}" for n in range(draw(st.sampled_from([99, 101, 127, 128, 129])))]
    end = "\n" if "bare LF" in odd else "\r\n"
    head = (end.join(lines) + end + end).encode("latin-1")
    if "one bare LF" in odd:
        head = head.replace(b"\r\n", b"\n", 1)
    after = draw(st.sampled_from([head, *AFTER_HEAD])) if "after the head" in odd else b""
    return head + after


def validators(raw: bytes) -> tuple[str, str]:
    """The ETag and Last-Modified of an answer."""
    etag = re.search(rb"\r\nETag: ([^\r\n]+)", raw, re.IGNORECASE)
    modified = re.search(rb"\r\nLast-Modified: ([^\r\n]+)", raw, re.IGNORECASE)
    assert etag is not None
    assert modified is not None
    return etag.group(1).decode(), modified.group(1).decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def twins(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Twins]:
    """The twin servers, shared by the examples; the targets cached."""
    with FakeUpstream(corpus_registry()) as upstream:
        async with twin_servers(tmp_path_factory.mktemp("twins"), upstream.url) as servers:
            for target in TARGETS:
                await servers.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), quiet=0.1)
            yield servers


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def index_validators(twins: Twins) -> tuple[str, str]:
    _, plain = await twins.send(b"GET /index/3/a/abc HTTP/1.1\r\nHost: x\r\n\r\n", quiet=0.1)
    return validators(plain.raw)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_generated_requests_get_the_answers_aiohttp_gives(
    twins: Twins, index_validators: tuple[str, str], data: st.DataObject
) -> None:
    request = data.draw(requests(*index_validators), label="request")
    fast, plain = await twins.send(request, quiet=0.25)
    event(f"aiohttp answers {plain.statuses[:1] or 'nothing'}")  # --hypothesis-show-statistics
    if fast.statuses[:1] == [101]:  # an h2c upgrade, taken; aiohttp answers in HTTP/1.1
        assert plain.statuses[:1] == [200]
    else:
        assert fast.outcome == plain.outcome
