"""The fast lane: the HTTP/1.1 front end that answers the mirror's index and download routes.

aiohttp's request machinery (request and response objects, router,
middlewares) costs more than everything else a cache hit needs; profiled
under load it held a worker to about a third of what the same process can
send. So each connection starts here: a small protocol parses request heads
with httptools (llhttp, the parser of Node.js) and answers GET and HEAD on
`/index/...`, `/api/v1/crates/{name}/{version}/download` and `/healthz` from the hot set
(`hotset.py`), filling it through `replies.py` on a miss, with the same
responses, access lines and metrics as the aiohttp views.

It answers only heads that pass a strict check (`_STRICT_HEAD` and
`FastLane._parse_new`), which nothing aiohttp refuses passes. Anything else
(another route or method, a request body, Range, Expect, an Upgrade other
than h2c, a percent-encoded or query-carrying target, a malformed or huge
head) hands the connection to aiohttp as it stands, unread bytes included,
and aiohttp serves it from then on. So the fast lane is exactly as strict as
aiohttp, or stricter. Responses stay in request order: a connection answers
one request at a time, and a pipelined request waits in the buffer until the
one before it has been written.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import struct
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any, Protocol, cast

import httptools
from aiohttp import web
from prometheus_client import Counter

from ghostcrate.appliance.fileresponse import sendfile_all
from ghostcrate.appliance.hotset import HotSet, Prepared
from ghostcrate.appliance.keys import METRICS, POLICY, REPLIES, SETTINGS
from ghostcrate.appliance.lanelog import QuietLog
from ghostcrate.appliance.logs import REQUEST_ID, access_sink
from ghostcrate.appliance.observe import new_request_id
from ghostcrate.appliance.policy import refused_read, token_of
from ghostcrate.appliance.replies import (
    CONFIG_ROUTE,
    DOWNLOAD_ROUTE,
    HEALTHZ,
    HEALTHZ_ROUTE,
    INDEX_ROUTE,
    Reply,
    error_reply,
    not_modified,
)
from ghostcrate.cargo.names import CrateName, InvalidName, index_path
from ghostcrate.private.changes import Change

log = logging.getLogger(__name__)

#: A request head (request line, fields and the blank line after them) longer than this,
#: complete or not, goes to aiohttp: nginx's `large_client_header_buffers` (4 8k), and
#: it keeps every line within aiohttp's 8,190 bytes.
MAX_HEAD_BYTES = 8 * 1024
#: Header fields in a head the fast lane answers (aiohttp refuses more than 128).
MAX_FIELDS = 100
#: Bytes of pipelined requests buffered while one is answered, before reading pauses.
MAX_PENDING_BYTES = 256 * 1024
#: An idle connection (no request in progress) is closed after this, as nginx does.
KEEPALIVE_SECONDS = 75.0
#: A connection is closed if a request head is not complete this long after the
#: connection opened or the head began: nginx's `client_header_timeout`.
HEADER_TIMEOUT_SECONDS = 60.0
#: How often idle connections are looked for.
SWEEP_SECONDS = 5.0
#: How often request counts and latencies are handed to prometheus_client.
METRICS_FLUSH_SECONDS = 1.0
#: A crate file served from the hot set is marked as used for the disk tier's LRU this often.
MARK_USED_SECONDS = 60.0
#: Bodies larger than this are written without first joining them to their head.
JOIN_LIMIT = 16 * 1024
#: Memory for remembered request heads (`Lane.heads`), each counted as `memo_cost`; the
#: older half is forgotten when full. Holds a 200 and a 304 head of cargo's (300-600
#: bytes) for each of about 2,000 index files.
MAX_HEADS_BYTES = 8 * 2**20
#: Heads longer than this are parsed each time, not remembered.
MAX_REMEMBERED_HEAD = 2 * 1024
#: Request headers that only aiohttp handles.
HANDED_OVER = frozenset({b"range", b"if-range", b"expect"})
#: Request headers of heads that go to aiohttp: a body (which the fast lane never reads),
#: and one that aiohttp refuses.
_REFUSED = frozenset({b"content-length", b"transfer-encoding", b"sec-websocket-key1"})
#: Conditions that aiohttp's `FileResponse` evaluates for a crate file itself (with its
#: own ETag and Last-Modified, which the fast lane's crate answers do not carry).
_FILE_CONDITIONS = frozenset(
    {b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since"}
)

# The heads the fast lane answers: `GET|HEAD SP origin-form SP HTTP/1.x CRLF`, fields
# `token ":" value CRLF` with values of visible ASCII, space and tab (no obs-fold, no
# control characters, no obs-text), CRLF line ends only. Targets are of `pchar`s
# without percent-encoding; `route_of` narrows them further.
_TARGET = re.compile(rb"/[-A-Za-z0-9._~!$&'()*+,;=:@/]*")
_VERSION = rb" HTTP/1\.[01]"
_FIELD = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*"
_STRICT_HEAD = re.compile(
    rb"(?:GET|HEAD) " + _TARGET.pattern + _VERSION + rb"\r\n(?:" + _FIELD + rb"\r\n)*\r\n"
)
_REQUEST_LINE = re.compile(rb"(?:GET|HEAD) " + _TARGET.pattern + _VERSION)
_FIELD_LINE = re.compile(_FIELD)
#: What a field line can begin with.
_FIELD_BEGUN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]*|" + _FIELD)
#: An HTTP2-Settings value: base64url of whole 6-byte settings (which need no padding).
_HTTP2_SETTINGS = re.compile(rb"(?:[A-Za-z0-9_-]{8})+")
#: The values that h2 accepts for the settings that have a range (RFC 9113 6.5.2, RFC 8441).
_SETTING_RANGES = {0x2: (0, 1), 0x4: (0, 2**31 - 1), 0x5: (2**14, 2**24 - 1), 0x8: (0, 1)}

_CLIENT_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_new_request = object.__new__
_CONFIG = b"/index/config.json"
_INDEX = b"/index/"
_CRATES = b"/api/v1/crates/"
_DOWNLOAD = b"/download"
_HEALTHZ = HEALTHZ_ROUTE.encode()


class LaneConnection(Protocol):
    """What the lane asks of each connection it keeps (HTTP/1.1 or HTTP/2)."""

    idle_since: float

    def close_when_idle(self) -> None: ...

    def abort(self) -> None: ...


#: Switches a connection to HTTP/2: (lane, transport, remote address, request, bytes after it).
Upgrade = Callable[["Lane", asyncio.Transport, "str | None", "Request", bytes], None]


class Lane:
    """What every fast-lane connection of one process shares."""

    def __init__(
        self,
        app: web.Application,
        handler_factory: Callable[[], asyncio.Protocol],
        upgrade: Upgrade | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.replies = app[REPLIES]
        registry = self.replies.registry
        #: The registry's shared change counter, and the registry, to notice on each hit
        #: that another worker changed a private crate (`find`).
        self._generation = registry.generation.view
        self._registry = registry
        registry.listeners.append(self.forget_changed)
        policy = app[POLICY]
        #: `[auth]`, unless every read is open to everyone (then nothing is checked).
        self.guard = None if policy.open_reads else policy
        self.metrics = app[METRICS]
        #: Counts a fast-lane outcome ("fill", "handover", ...; hits are counted in `_book`).
        self.count: Callable[[str], None] = self.metrics.batches.fast_lane_result
        settings = app[SETTINGS]
        self.hot = HotSet(settings.cache.memory_bytes)
        self.access_log = settings.server.access_log
        self.handler_factory = handler_factory
        #: Set when HTTP/2 is on (`[server] http2`): how to take an h2c upgrade.
        self.upgrade = upgrade if settings.server.http2 else None
        self.connections: set[LaneConnection] = set()
        #: Targets whose reply a request (or a renewal ahead of expiry) is renewing now.
        self._renewing: set[bytes] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        #: Request heads seen before, and what they asked: cargo sends the same head for a
        #: file each time (same user agent, same If-None-Match until the file changes), so
        #: most heads need no parsing. `heads_bytes` is their `memo_cost`.
        self.heads: dict[bytes, Request] = {}
        self.heads_bytes = 0
        #: Hits since the last `_book`, counted there: a call per hit cost as much as a lookup.
        self.hits = 0
        #: Requests answered in this loop turn, for `_book`: request, status, length,
        #: remote address, seconds taken.
        self._answered: list[tuple[Request, int, int, str | None, float]] = []
        self._date_second = -1
        self._date = self._date_line = b""
        self._sent: dict[str, Counter] = {}
        #: Lines about failed requests, from both lanes, at a bounded rate.
        self.quiet = QuietLog()
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)
        self._flusher = self.loop.call_later(METRICS_FLUSH_SECONDS, self._flush_metrics)

    def date(self) -> bytes:
        """The Date header's value, made once a second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True).encode()
            self._date_line = b"Date: " + self._date + b"\r\n"
        return self._date

    def date_line(self) -> bytes:
        """The Date header line (`date` inlined: this is called for every answer)."""
        if int(time.time()) != self._date_second:
            self.date()
        return self._date_line

    def open_crate(self, target: bytes, prepared: Prepared) -> int | None:
        """A descriptor of the kept crate file, or None (and forgotten) if it is gone or changed.

        Marks the file as used for the disk tier's LRU (at most every `MARK_USED_SECONDS`)
        and reads it into memory in the background once it is asked for repeatedly.
        """
        assert prepared.file is not None
        try:
            fd = os.open(prepared.file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # evicted from the disk tier
            self.hot.discard(target)
            return None
        stat = os.fstat(fd)
        if stat.st_size != prepared.file_size:  # never for a crate; never send a wrong length
            os.close(fd)
            self.hot.discard(target)
            return None
        now = self.loop.time()
        if now - prepared.used_at > MARK_USED_SECONDS:
            prepared.used_at = now
            os.utime(fd, ns=(time.time_ns(), stat.st_mtime_ns))
        if self.hot.should_hold(prepared):
            self.hold_in_background(target, prepared)
        return fd

    def find(self, request: Request) -> Prepared | None:
        """The kept reply to `request` if it is fresh, or expired while being renewed.

        A hit late in a reply's life (`RENEW_WINDOW`) starts renewing it in the
        background, so an index file that is asked for all the time is
        revalidated before it expires and no request waits for the upstream.
        Like nginx's `proxy_cache_use_stale updating`: while one request renews an
        expired reply (and waits for the upstream's answer), the others that come
        meanwhile get the reply that was fresh until a moment ago, instead of
        queueing behind the upstream's round trip.
        """
        if self._generation[0] != self._registry.seen:  # a change not applied here yet
            self.count("fill")
            return None
        prepared = self.hot.get(request.target)
        if prepared is not None:
            guard = self.guard
            if (
                guard is not None
                and request.route != HEALTHZ_ROUTE
                and not guard.quick(
                    request.token,
                    request.remote,
                    private=None if request.route == CONFIG_ROUTE else prepared.reply.private,
                )
            ):
                return None  # `prepare` looks the token up, or refuses
            if prepared.gzip_wanted and b"accept-encoding" in request.headers:
                self.compress_if_accepted(request, prepared)
            now = self.loop.time()
            if prepared.expires > now:
                self.hits += 1
                if prepared.renew_at <= now and request.target not in self._renewing:
                    self.spawn(self._renew_ahead(request))
                return prepared
            if request.target in self._renewing:
                self.count("updating")
                request.outcome = "stale"
                return prepared
        self.count("fill")
        return None

    def compress_if_accepted(self, request: Request, prepared: Prepared) -> None:
        """Make a kept reply's gzip variant in a thread, once a client accepts gzip.

        This client and those that come before it is ready get the identity body;
        compressing a large index file on the event loop held every connection up.
        """
        if not _accepts_gzip(request.headers.get(b"accept-encoding")):
            return
        prepared.gzip_wanted = False
        target = request.target
        future = self.loop.run_in_executor(None, prepared.compress)

        def done(future: asyncio.Future[bytes]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.hot.add_gzip(target, prepared, future.result())

        future.add_done_callback(done)

    def forget_changed(self, changes: list[Change]) -> None:
        """Forget the kept replies that the registry's changes made stale."""
        for change in changes:
            if change.name is None:
                continue
            try:
                path = index_path(CrateName(change.name))
            except InvalidName:
                continue
            self.hot.discard(f"/index/{path}".encode())
            if change.version is not None:
                target = f"/api/v1/crates/{change.name}/{change.version}/download"
                self.hot.discard(target.encode())

    async def _renew_ahead(self, request: Request) -> None:
        """Renew a reply that is still asked for before it expires: nobody waits for it."""
        self.count("renewed_ahead")
        await self.prepare(request, renew_ahead=True)

    async def prepare(self, request: Request, *, renew_ahead: bool = False) -> Prepared:
        """Ask the mirror, and keep the reply for as long as it says."""
        REQUEST_ID.set(request.request_id)
        if self.guard is not None and not renew_ahead and request.route != HEALTHZ_ROUTE:
            refused = await self._refused(request)
            if refused is not None:
                request.outcome = refused.outcome
                return Prepared(refused, 0)
        self._renewing.add(request.target)
        try:
            reply = await self._reply(request, renew_ahead=renew_ahead)
            if not renew_ahead:  # a renewal ahead's request was answered from the hot set
                request.outcome = reply.outcome
            expires = self.loop.time() + reply.keep_for
            kept = self.hot.get(request.target)
            if kept is not None and reply.keep_for > 0 and kept.renew(reply, expires):
                return kept  # unchanged: no new heads, no compression
            prepared = Prepared(reply, expires, reply.file_size)
            if reply.keep_for > 0:
                self.hot.put(request.target, prepared)
                if prepared.gzip_wanted:
                    self.compress_if_accepted(request, prepared)
        except Exception as error:
            self.report(error, request)
            prepared = Prepared(error_reply(500, internal_error(request.request_id)), 0)
        finally:
            self._renewing.discard(request.target)
        return prepared

    async def _refused(self, request: Request) -> Reply | None:
        """The reply that refuses `request` under `[auth]`, or None if it is allowed."""
        assert self.guard is not None
        return await refused_read(
            self.guard,
            self.replies,
            request.route,
            request.path,
            token=request.token,
            remote=request.remote,
        )

    async def _reply(self, request: Request, *, renew_ahead: bool) -> Reply:
        target = request.target.decode()
        if request.route == CONFIG_ROUTE:
            return self.replies.config
        if request.route == HEALTHZ_ROUTE:
            return HEALTHZ
        if request.route == INDEX_ROUTE:
            path = target.removeprefix("/index/")
            return await self.replies.index_file(path, renew_ahead=renew_ahead)
        _, _, _, _, name, version, _ = target.split("/")
        return await self.replies.download(name, version)

    def remember(self, head: bytes, request: Request) -> None:
        """Keep what `head` asked, forgetting the older half of `heads` if it is full."""
        cost = memo_cost(head)
        if self.heads_bytes + cost > MAX_HEADS_BYTES:
            heads = self.heads
            forgotten: list[bytes] = []
            left = self.heads_bytes
            for old in heads:  # oldest first
                if left <= MAX_HEADS_BYTES // 2:
                    break
                forgotten.append(old)
                left -= memo_cost(old)
            for old in forgotten:
                del heads[old]
            self.heads_bytes = left
        self.heads[head] = request
        self.heads_bytes += cost

    def report(
        self,
        error: BaseException,
        request: Request | None,
        *,
        remote: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Log a request that failed: one line, without a traceback, and not too many."""
        self.count("error")
        path = None
        if request is not None:
            path = request.path
            request_id = request.request_id
        self.quiet.report(
            log,
            logging.ERROR,
            "request failed",
            error,
            path=path,
            request_id=request_id,
            remote=remote,
        )

    def finish(self, request: Request, status: int, length: int, remote: str | None) -> None:
        """Count and log an answered request, with the others answered in this loop turn."""
        answered = self._answered
        if not answered:
            self.loop.call_soon(self._book)
        answered.append((request, status, length, remote, time.perf_counter() - request.started))

    def _book(self) -> None:
        """The metrics and access lines of the requests answered since the last call.

        Done once per event-loop turn for all of them: per request, a call to each
        of the metrics and the log cost about as much as answering a cache hit.
        """
        answered, self._answered = self._answered, []
        if self.hits:
            self.metrics.batches.fast_lane_result("hit", self.hits)
            self.hits = 0
        observe = self.metrics.batches.observe
        for request, status, _, _, seconds in answered:
            observe(request.route, status, seconds, request.outcome)
        sink = access_sink()
        if self.access_log and sink is not None:
            sink.requests(
                (
                    request.method,
                    request.path,
                    status,
                    length,
                    seconds,
                    remote,
                    request.agent,
                    request.request_id,
                )
                for request, status, length, remote, seconds in answered
            )

    def sent(self, method: str, count: int) -> None:
        counter = self._sent.get(method)
        if counter is None:
            counter = self._sent[method] = self.metrics.file_bytes.labels(method)
        counter.inc(count)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def hold_in_background(self, target: bytes, prepared: Prepared) -> None:
        """Read a repeatedly asked-for crate into memory without delaying anyone."""
        path = prepared.file
        if path is None:
            return
        future = self.loop.run_in_executor(None, path.read_bytes)

        def done(future: asyncio.Future[bytes]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.hot.hold(target, prepared, future.result())

        future.add_done_callback(done)

    def close_idle(self) -> None:
        for connection in list(self.connections):
            connection.close_when_idle()

    async def drain(self, grace: float | None) -> None:
        """Let requests in progress finish (for up to `grace` seconds), then close what is left."""
        self._sweeper.cancel()
        self._flusher.cancel()
        deadline = self.loop.time() + (grace if grace is not None else KEEPALIVE_SECONDS)
        while self.connections and self.loop.time() < deadline:
            self.close_idle()
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        for task in list(self.tasks):
            task.cancel()
        self._book()
        self.metrics.batches.flush()

    def _flush_metrics(self) -> None:
        self.metrics.batches.flush()
        self._flusher = self.loop.call_later(METRICS_FLUSH_SECONDS, self._flush_metrics)

    def _sweep(self) -> None:
        limit = self.loop.time() - KEEPALIVE_SECONDS
        for connection in list(self.connections):
            if connection.idle_since < limit:
                connection.close_when_idle()
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)


class Request:
    """A GET or HEAD the fast lane answers, from HTTP/1.1 or HTTP/2."""

    __slots__ = (
        "agent",
        "head_only",
        "headers",
        "keep_alive",
        "method",
        "offered_id",
        "outcome",
        "path",
        "remote",
        "request_id",
        "route",
        "started",
        "target",
        "token",
    )

    def __init__(
        self,
        target: bytes,
        route: str,
        headers: dict[bytes, bytes],
        *,
        head_only: bool,
        keep_alive: bool = True,
    ) -> None:
        self.target = target
        self.route = route
        #: Lower-case names; repeated fields joined with ", ".
        self.headers = headers
        self.head_only = head_only
        self.keep_alive = keep_alive
        # Decoded once for the access line, and shared by the same head asked `again`.
        self.method = "HEAD" if head_only else "GET"
        self.path = target.decode()
        user_agent = headers.get(b"user-agent")
        self.agent = user_agent.decode("latin-1") if user_agent is not None else None
        offered = headers.get(b"x-request-id")
        self.offered_id = offered.decode() if offered and _CLIENT_ID.fullmatch(offered) else None
        self.started = time.perf_counter()
        self.request_id = self.offered_id or new_request_id()
        #: How it was answered (`Reply.outcome`): from the hot set unless the lane says else.
        self.outcome = "hit"
        authorization = headers.get(b"authorization")
        #: The API token cargo sent, if any (`[auth]`).
        self.token = token_of(authorization.decode("latin-1")) if authorization else None
        #: The client's address; each connection sets it before asking the lane.
        self.remote: str | None = None

    def again(self) -> Request:
        """The same request asked again (the same head): its own start time and request id.

        Copies the parsed fields instead of parsing them again; this runs for most
        requests, so it is written out rather than looped.
        """
        request = _new_request(Request)
        request.target = self.target
        request.route = self.route
        request.headers = self.headers
        request.head_only = self.head_only
        request.keep_alive = self.keep_alive
        request.method = self.method
        request.path = self.path
        request.agent = self.agent
        request.offered_id = self.offered_id
        request.started = time.perf_counter()
        request.request_id = self.offered_id or new_request_id()
        request.outcome = "hit"
        request.token = self.token
        request.remote = None
        return request

    def choose(self, prepared: Prepared) -> tuple[int, bool]:
        """The status to answer with (200/404/... or 304), and whether in gzip."""
        headers = self.headers
        gzip = prepared.gzip_body is not None and _accepts_gzip(headers.get(b"accept-encoding"))
        if headers.get(b"if-none-match") in prepared.matching_tags:  # what cargo sends
            return 304, gzip
        if (b"if-none-match" in headers or b"if-modified-since" in headers) and _not_modified(
            prepared, headers
        ):
            return 304, gzip
        return prepared.reply.status, gzip


def wants_h2c(headers: dict[bytes, bytes]) -> bool:
    """Whether an HTTP/1.1 request asks to upgrade to HTTP/2 in the clear, in a way h2 takes.

    As RFC 7540 3.2 has it (`Upgrade: h2c`, `Connection: Upgrade, HTTP2-Settings`),
    with one well-formed HTTP2-Settings value: base64url of whole 6-byte settings,
    each in its range (RFC 9113 6.5.2). h2 fails on anything else, after the 101
    has gone out; such a request is answered in HTTP/1.1 instead (RFC 9110 7.8).
    """
    settings = headers.get(b"http2-settings")
    if settings is None or _HTTP2_SETTINGS.fullmatch(settings) is None:
        return False
    if b"h2c" not in _tokens(headers.get(b"upgrade")) or not {
        b"upgrade",
        b"http2-settings",
    } <= _tokens(headers.get(b"connection")):
        return False
    for code, value in struct.iter_unpack("!HI", base64.urlsafe_b64decode(settings)):
        low, high = _SETTING_RANGES.get(code, (0, value))
        if not low <= value <= high:
            return False
    return True


def _tokens(value: bytes | None) -> set[bytes]:
    """The lower-case tokens of a comma-separated header value."""
    return {token.strip() for token in value.lower().split(b",")} if value else set()


def lanes_answer(route: str, headers: dict[bytes, bytes]) -> bool:
    """Whether the lanes answer a GET or HEAD of `route` with these headers, not aiohttp."""
    if not HANDED_OVER.isdisjoint(headers):
        return False
    return route != DOWNLOAD_ROUTE or _FILE_CONDITIONS.isdisjoint(headers)


def route_of(target: bytes) -> str | None:
    """The lanes' route for a request target, or None for aiohttp's.

    Targets with segments that are empty or begin with a dot go to aiohttp, which
    has its own view of them.
    """
    if b"%" in target or b"?" in target or b"/." in target or b"//" in target:
        return None
    if not target.isascii():
        return None
    if target.startswith(_INDEX):
        return CONFIG_ROUTE if target == _CONFIG else INDEX_ROUTE
    if target.startswith(_CRATES) and target.endswith(_DOWNLOAD) and target.count(b"/") == 6:
        return DOWNLOAD_ROUTE
    if target == _HEALTHZ:
        return HEALTHZ_ROUTE
    return None


class FastLane(asyncio.Protocol):
    """One client connection, until it closes or is handed to aiohttp.

    What is read is checked as it comes (`_check`): the heads a read completes are
    answered only if every one of them, and the beginning of a head that the read
    leaves unfinished, is one the fast lane answers. Otherwise none of them is: the
    connection goes to aiohttp with everything from the first of them on, and
    aiohttp answers as if it had read them itself. aiohttp answers none of the
    requests in a read that holds a malformed one, and drops what follows an
    Upgrade it ignores in the same read: so the fast lane never answers a request
    that aiohttp, reading the same bytes, would not have answered.
    """

    def __init__(self, lane: Lane) -> None:
        self._lane = lane
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._buffer = bytearray()
        #: Bytes at the start of `_buffer` that are complete heads, checked.
        self._checked = 0
        #: The bytes after the checked heads are not checked: they go to aiohttp (or, after
        #: an h2c upgrade, are HTTP/2).
        self._opaque = False
        #: Why the first head after the checked ones could not be read (it raised).
        self._unreadable: Exception | None = None
        #: Set while `_drain` waits for the transport to have written everything out.
        self._drained: asyncio.Future[None] | None = None
        self._fd = -1
        self._remote: str | None = None
        #: A request is being answered: later ones wait in the buffer.
        self._busy = False
        self._close_after = False
        self._reading_paused = False
        self._writing_paused = False
        #: When the connection fell idle: the sweep closes it after `KEEPALIVE_SECONDS`.
        #: Moved back while a head is awaited, so that the sweep keeps the header timeout.
        self.idle_since = lane.loop.time()
        self._await_head()
        # The head being parsed (httptools calls back into these).
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._repeated = False
        self._method = b""
        self._keep_alive = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = sock.fileno()
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) else None
        self._lane.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._lane.connections.discard(self)
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("connection lost"))

    def data_received(self, data: bytes) -> None:
        try:
            if not self._buffer and self._ready() and data.find(b"\r\n\r\n") == len(data) - 4 >= 0:
                self._answer_head(data)  # the usual case: one request head and nothing else
                return
            self._receive(data)
        except Exception as error:
            self._broken(error)

    def eof_received(self) -> bool:
        if self._busy:  # answer what was asked, then close
            self._close_after = True
            return True
        return False

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self._busy:
            self._resume_reading()
            self._process()

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in self._headers:
            self._repeated = True
        self._headers[name] = value.rstrip(b" \t")  # llhttp strips the whitespace before it

    def on_headers_complete(self) -> None:
        # llhttp forgets both once the message is complete.
        self._keep_alive = self._parser.should_keep_alive()
        self._method = self._parser.get_method()

    # Serving

    def close_when_idle(self) -> None:
        if self._transport is None:
            return
        if self._busy:
            self._close_after = True
        else:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _ready(self) -> bool:
        """Whether the next request may be answered now."""
        return not (self._busy or self._writing_paused or self._close_after) and bool(
            self._transport
        )

    def _await_head(self) -> None:
        """Close the connection if the head under way is not complete in time.

        The sweep closes it `HEADER_TIMEOUT_SECONDS` from now (nginx's
        `client_header_timeout`), or when it has been idle for `KEEPALIVE_SECONDS`,
        whichever comes first.
        """
        deadline = self._lane.loop.time() + HEADER_TIMEOUT_SECONDS - KEEPALIVE_SECONDS
        self.idle_since = min(self.idle_since, deadline)

    def _answer_head(self, head: bytes) -> None:
        """Answer a request head that came alone (nothing buffered, nothing after it)."""
        try:
            request = self._parse(head)
        except Exception as error:
            self._fail(error, None, 400)
            return
        if request is None:
            self._buffer += head
            self._hand_over()
        else:
            self._serve(request)

    def _receive(self, data: bytes) -> None:
        """Buffer and check what was read, and answer what can be answered now."""
        self._buffer += data
        if not self._opaque:
            self._check()
        if not self._busy:
            self._process()
        if self._busy and len(self._buffer) > MAX_PENDING_BYTES:
            self._pause_reading()

    def _check(self) -> None:
        """Check the heads after the checked ones (see the class docstring)."""
        buffer = self._buffer
        at = self._checked
        while (end := buffer.find(b"\r\n\r\n", at)) >= 0:
            try:
                request = self._parse(bytes(buffer[at : end + 4]))
            except Exception as error:
                self._unreadable = error
                request = None
            if request is None:
                self._opaque = True
                return
            at = end + 4
            if b"upgrade" in request.headers and self._takes_upgrade(request):
                self._checked = at
                self._opaque = True  # HTTP/2 from here on
                return
            if at < len(buffer) and (not request.keep_alive or b"upgrade" in request.headers):
                # llhttp refuses anything after a request that closes the connection, and
                # aiohttp drops what follows an Upgrade it ignores in the same read.
                self._opaque = True
                return
        if len(buffer) - at > MAX_HEAD_BYTES or not _may_begin_head(bytes(buffer[at:])):
            self._opaque = True
            return
        self._checked = at

    def _takes_upgrade(self, request: Request) -> bool:
        return self._lane.upgrade is not None and wants_h2c(request.headers)

    def _process(self) -> None:
        """Answer the checked requests in order, until one has to wait; hand over when due."""
        try:
            buffer = self._buffer
            while self._ready():
                if not self._checked:
                    if self._unreadable is not None:
                        self._fail(self._unreadable, None, 400)
                    elif self._opaque:
                        self._hand_over()
                    elif buffer:
                        self._await_head()
                    break
                end = buffer.find(b"\r\n\r\n") + 4
                request = self._parse(bytes(buffer[:end]))
                assert request is not None, "a checked head is answered"
                del buffer[:end]
                self._checked -= end
                self._serve(request)
            if not self._busy and not self._writing_paused:
                self._resume_reading()
        except Exception as error:
            self._broken(error)

    def _parse(self, head: bytes) -> Request | None:
        """The request in `head` if the fast lane answers it, else None."""
        known = self._lane.heads.get(head)
        if known is not None:
            return known.again()
        request = self._parse_new(head)
        if request is not None and len(head) <= MAX_REMEMBERED_HEAD:
            self._lane.remember(head, request)
        return request

    def _parse_new(self, head: bytes) -> Request | None:
        """What a head not seen before asks, if the fast lane answers it (else None).

        Only heads that aiohttp answers just the same pass: the strict grammar of
        `_STRICT_HEAD`, at most `MAX_HEAD_BYTES` and `MAX_FIELDS`, exactly one Host
        (aiohttp refuses HTTP/1.1 without one), no field twice (aiohttp refuses some
        twice), no body, no Upgrade but to h2c, no dot segments or empty segments in
        the target, and for crate files no condition that aiohttp's `FileResponse`
        evaluates on its own.
        """
        if len(head) > MAX_HEAD_BYTES or _STRICT_HEAD.fullmatch(head) is None:
            return None
        self._url = b""
        self._headers = {}
        self._repeated = False
        try:
            self._parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            # curl (so cargo) asks to upgrade to h2c; a server may ignore Upgrade
            # (RFC 9110 7.8) and answer in HTTP/1.1. llhttp stops after such a head,
            # so the next one needs a new parser.
            self._parser = httptools.HttpRequestParser(self)
        except httptools.HttpParserError:
            return None
        url = self._url
        headers = self._headers
        upgrade = headers.get(b"upgrade")
        if (
            self._repeated
            or b"host" not in headers
            or len(headers) > MAX_FIELDS
            or not _REFUSED.isdisjoint(headers)
            or (upgrade is not None and upgrade.lower() != b"h2c")
        ):
            return None
        route = route_of(url)
        if route is None or not lanes_answer(route, headers):
            return None
        return Request(
            url, route, headers, head_only=self._method == b"HEAD", keep_alive=self._keep_alive
        )

    def _serve(self, request: Request) -> None:
        upgrade = self._lane.upgrade
        if (
            upgrade is not None
            and b"http2-settings" in request.headers  # as `wants_h2c` asks first, inlined
            and self._transport is not None
            and wants_h2c(request.headers)
        ):
            self._upgrade(upgrade, request)
            return
        request.remote = self._remote
        try:
            prepared = self._lane.find(request)
        except Exception as error:
            self._fail(error, request)
            return
        if prepared is not None:
            self._answer(request, prepared)
        else:
            self._wait(self._fill(request))

    def _upgrade(self, upgrade: Upgrade, request: Request) -> None:
        transport = self._transport
        assert transport is not None
        self._transport = None
        self._lane.connections.discard(self)
        if self._reading_paused:
            transport.resume_reading()
        try:
            upgrade(self._lane, transport, self._remote, request, bytes(self._buffer))
        except Exception as error:  # the 101 may be out: no HTTP/1.1 answer any more
            self._lane.report(error, request, remote=self._remote)
            transport.abort()

    def _wait(self, work: Coroutine[Any, Any, None]) -> None:
        """Answer the current request in a task; the next ones wait until it is done."""
        self._busy = True
        self._lane.spawn(self._guarded(work))

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except ConnectionResetError:
            self.abort()
        except Exception as error:
            self._broken(error)

    async def _fill(self, request: Request) -> None:
        prepared = await self._lane.prepare(request)
        self._busy = False
        if self._transport is not None:
            self._answer(request, prepared)
            self._process()

    def _answer(self, request: Request, prepared: Prepared) -> None:  # noqa: PLR0912 - every answer: not split into calls
        transport = self._transport
        assert transport is not None
        fd = -1
        try:
            status, gzip = request.choose(prepared)
            if status == 304:
                head = prepared.gzip_not_modified_head if gzip else prepared.not_modified_head
                body = b""
            elif gzip:
                head, body = prepared.gzip_head, cast(bytes, prepared.gzip_body)
            else:
                head, body = prepared.head, prepared.body
            if not request.keep_alive:
                self._close_after = True
            head = b"".join(
                (
                    head,
                    self._lane.date_line(),
                    b"X-Request-Id: ",
                    request.request_id.encode(),
                    b"\r\nConnection: close\r\n\r\n" if self._close_after else b"\r\n\r\n",
                )
            )
            if request.head_only:
                body = b""
            elif prepared.file is not None and status == 200:
                opened = self._lane.open_crate(request.target, prepared)
                if opened is None:  # gone from the disk tier: fill it again
                    self._wait(self._fill(request))
                    return
                fd = opened
        except Exception as error:
            self._fail(error, request)
            return
        length = len(head) + len(body)
        if fd >= 0:
            self._send_file(fd, prepared.file_size, head)
            length += prepared.file_size
        else:
            if len(body) > JOIN_LIMIT:
                transport.writelines((head, body))
            else:
                transport.write(head + body)
            if prepared.reply.file is not None and body:  # a crate held in memory
                self._lane.sent("memory", len(body))
        self._finish(request, status, length)

    def _finish(self, request: Request, status: int, length: int) -> None:
        lane = self._lane
        lane.finish(request, status, length, self._remote)
        self.idle_since = lane.loop.time()
        if self._close_after and not self._busy and self._transport is not None:
            self._transport.close()

    def _fail(self, error: Exception, request: Request | None, status: int = 500) -> None:
        """Answer a request that raised `error` before any of its answer was written.

        In cargo's error format, and logged in one line (`Lane.report`). A head that
        could not be read (`request` is None) gets a 400 and the connection is closed, as
        aiohttp does; a request that failed afterwards gets a 500, as aiohttp's
        middleware answers it.
        """
        lane = self._lane
        request_id = request.request_id if request is not None else new_request_id()
        lane.report(error, request, remote=self._remote, request_id=request_id)
        transport = self._transport
        if transport is None:
            return
        if request is None or not request.keep_alive:
            self._close_after = True
        detail = (
            f"malformed request (request id {request_id})"
            if request is None
            else internal_error(request_id)
        )
        prepared = Prepared(error_reply(status, detail), 0)
        head = b"".join(
            (
                prepared.head,
                lane.date_line(),
                b"X-Request-Id: ",
                request_id.encode(),
                b"\r\nConnection: close\r\n\r\n" if self._close_after else b"\r\n\r\n",
            )
        )
        body = b"" if request is not None and request.head_only else prepared.body
        transport.write(head + body)
        if request is None:
            transport.close()
        else:
            self._finish(request, status, len(head) + len(body))

    def _broken(self, error: Exception) -> None:
        """A failure with an answer perhaps half written: log it and end the connection."""
        self._lane.report(error, None, remote=self._remote)
        self.abort()

    def _send_file(self, fd: int, size: int, head: bytes) -> None:
        """Send `head` and then the crate file open at `fd`, which this closes when sent."""
        transport = self._transport
        assert transport is not None
        transport.write(head)
        sent = 0
        if self._fd >= 0 and not transport.get_write_buffer_size():
            try:
                sent = os.sendfile(self._fd, fd, 0, size)
            except BlockingIOError:
                sent = 0
            except OSError:
                os.close(fd)
                transport.abort()
                return
        if sent >= size:
            os.close(fd)
            self._lane.sent("sendfile", size)
        else:
            self._wait(self._send_rest(fd, sent, size))

    async def _send_rest(self, fd: int, offset: int, size: int) -> None:
        try:
            if self._fd >= 0:
                await self._drain()  # the head goes first
                await sendfile_all(self._fd, fd, offset, size - offset)
                self._lane.sent("sendfile", size)
            else:  # no socket to give the kernel: copy
                chunk = await asyncio.to_thread(os.pread, fd, size - offset, offset)
                if self._transport is None:
                    raise ConnectionResetError("connection lost")
                self._transport.write(chunk)
                self._lane.sent("copy", size)
        finally:
            os.close(fd)
        self._busy = False
        if self._close_after and self._transport is not None:
            self._transport.close()
        self._process()

    async def _drain(self) -> None:
        """Wait until the transport has written out everything it was given.

        With both its write-buffer limits at 0, a transport that holds anything
        calls `pause_writing` at once and `resume_writing` once it is empty: the
        wait costs nothing however long the client takes to read.
        """
        transport = self._transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        if not transport.get_write_buffer_size():
            return
        low, high = transport.get_write_buffer_limits()
        drained = self._drained = self._lane.loop.create_future()
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            await drained
        finally:
            self._drained = None
            if not transport.is_closing():
                transport.set_write_buffer_limits(high=high, low=low)

    def _hand_over(self) -> None:
        """Give the connection, and what it has sent so far, to aiohttp."""
        transport = self._transport
        if transport is None:
            return
        self._lane.count("handover")
        self._lane.connections.discard(self)
        self._transport = None
        handler = self._lane.handler_factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._buffer:
            handler.data_received(bytes(self._buffer))
        if self._reading_paused:
            transport.resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()


def _may_begin_head(part: bytes) -> bool:
    """Whether `part` (no blank line in it) can begin a head that the fast lane answers."""
    *lines, last = part.split(b"\r\n")
    last = last.removesuffix(b"\r")
    if not lines:
        return _request_line_begun(last)
    return (
        _REQUEST_LINE.fullmatch(lines[0]) is not None
        and all(_FIELD_LINE.fullmatch(line) is not None for line in lines[1:])
        and _FIELD_BEGUN.fullmatch(last) is not None
    )


def _request_line_begun(line: bytes) -> bool:
    """Whether `line` can begin the request line of a head that the fast lane answers."""
    method, space, rest = line.partition(b" ")
    if not space:
        return b"GET".startswith(method) or b"HEAD".startswith(method)
    target, space, version = rest.partition(b" ")
    if method not in (b"GET", b"HEAD") or (target and _TARGET.fullmatch(target) is None):
        return False
    return not space or (
        bool(target) and (b"HTTP/1.0".startswith(version) or b"HTTP/1.1".startswith(version))
    )


def memo_cost(head: bytes) -> int:
    """The bytes that remembering `head` takes: itself, its fields, about 1 KiB of objects."""
    return 2 * len(head) + 1024


def internal_error(request_id: str) -> str:
    return f"internal error in GhostCrate (request id {request_id}); see its log"


def _accepts_gzip(accept_encoding: bytes | None) -> bool:
    if not accept_encoding or b"gzip" not in accept_encoding:
        return False
    for coding in accept_encoding.split(b","):
        name, _, params = coding.partition(b";")
        if name.strip().lower() in (b"gzip", b"x-gzip"):
            weight = params.strip().lower().removeprefix(b"q=")
            with contextlib.suppress(ValueError):
                return float(weight or b"1") > 0
            return False
    return False


def _not_modified(prepared: Prepared, headers: dict[bytes, bytes]) -> bool:
    if_none_match = headers.get(b"if-none-match")
    if_modified_since = headers.get(b"if-modified-since")
    return not_modified(
        prepared.reply,
        if_none_match.decode("latin-1") if if_none_match is not None else None,
        if_modified_since.decode("latin-1") if if_modified_since is not None else None,
    )
