"""The HTTP/2 requests the h2 lane does not answer itself, answered by aiohttp in this process.

aiohttp speaks only HTTP/1.1. A stream that is not an index or download GET
(`/metrics`, the web API, a `Range`) is written as an HTTP/1.1 request into
one end of a socket pair whose other end is served by one of aiohttp's own
connection handlers, and aiohttp's answer is read back and sent on the
stream. No address is ever made from the request: the other end is this
server by construction, whatever `:authority` or `:path` say, and `:path`
must be origin-form besides.

The request's body is streamed under HTTP/2 flow control: the bytes of a DATA
frame are given back to the client's window only once the socket pair has
taken them, so a client cannot make the server buffer more than one window.
The answer is read from the pair only while the stream's window lets it go
on, and a relayed stream on which no byte moves for `RELAY_TIMEOUT` is ended.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

import httptools
from h2.errors import ErrorCodes

from ghostcrate.appliance.hotset import Field

#: Relayed streams one connection may have at once; more are refused (REFUSED_STREAM).
MAX_RELAYED_STREAMS = 8
#: A larger request body is refused with 413 (nginx's client_max_body_size; crates.io
#: takes crates of up to 10 MB).
MAX_RELAYED_BODY = 64 * 2**20
#: No byte either way for this long ends a relayed stream: nginx's proxy_read_timeout.
RELAY_TIMEOUT = 60.0
#: Answer bytes read from aiohttp and not yet sent, before reading from the pair pauses.
PENDING_BYTES = 256 * 1024
#: Request body bytes the pair has not taken yet, before the client's window is held back.
UNTAKEN_BYTES = 64 * 1024

#: Fields that describe one HTTP/1.1 connection, not the request (RFC 9113 8.2.2), and
#: fields this relay sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"http2-settings",
    }
)
_NOT_RELAYED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ORIGIN_FORM = re.compile(rb"/[\x21-\x7e]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class Malformed(Exception):
    """A request that is not relayed: a stream error (RFC 9113 8.1.1)."""


class RelayedRequest:
    """The HTTP/1.1 form of one HTTP/2 request."""

    __slots__ = ("chunked", "content_length", "head", "head_only")

    def __init__(self, fields: list[Field], default_host: bytes, *, ended: bool) -> None:
        """Raises `Malformed` for a request that cannot or may not be relayed."""
        pseudo, regular = _split(fields)
        method = pseudo.get(b":method", b"")
        path = pseudo.get(b":path", b"")
        if not _TOKEN.fullmatch(method) or method == b"CONNECT":
            raise Malformed(f"method {method[:32]!r} is not served here")
        if not _ORIGIN_FORM.fullmatch(path):
            raise Malformed("the request target must be a path (origin-form)")
        host = pseudo.get(b":authority") or regular.pop(b"host", [default_host])[-1]
        regular.pop(b"host", None)
        if _BAD_VALUE.search(host) or b" " in host:
            raise Malformed("invalid :authority")
        lengths = regular.pop(b"content-length", None)
        self.content_length = None
        if lengths is not None:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                raise Malformed("invalid content-length")
            self.content_length = int(lengths[0])
        self.head_only = method == b"HEAD"
        lines = [method + b" " + path + b" HTTP/1.1", b"host: " + host]
        for name, values in regular.items():
            if name == b"cookie":  # split for compression; one line again (RFC 9113 8.2.3)
                lines.append(b"cookie: " + b"; ".join(values))
            elif name not in _NOT_RELAYED:
                lines += [name + b": " + value for value in values]
        #: A body of unknown length follows: it is sent in chunks.
        self.chunked = self.content_length is None and not ended
        if self.content_length is not None:
            lines.append(b"content-length: %d" % self.content_length)
        elif self.chunked:
            lines.append(b"transfer-encoding: chunked")
        lines += [b"connection: close", b"", b""]
        self.head = b"\r\n".join(lines)


def _split(fields: list[Field]) -> tuple[dict[bytes, bytes], dict[bytes, list[bytes]]]:
    """Pseudo-header fields, and the values of each other field; `Malformed` if invalid."""
    pseudo: dict[bytes, bytes] = {}
    regular: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        if name.startswith(b":"):
            pseudo[name] = value
        elif not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise Malformed(f"invalid header field {name[:64]!r}")
        else:
            regular.setdefault(name, []).append(value)
    return pseudo, regular


class StreamSink(Protocol):
    """What a relayed stream asks of its HTTP/2 connection."""

    def send_head(self, stream_id: int, fields: list[Field], *, end: bool) -> None: ...

    def send_body(self, stream_id: int, data: bytearray, *, end: bool) -> int:
        """Send what the windows take of `data` (ending the stream after all of it if
        `end`); the number of bytes taken."""
        ...

    def acknowledge(self, stream_id: int, length: int) -> None: ...

    def reset(self, stream_id: int, code: int) -> None: ...


def error_fields(status: int, detail: str) -> tuple[list[Field], bytes]:
    """An answer in cargo's error format."""
    body = json.dumps({"errors": [{"detail": detail}]}).encode()
    fields = [
        (b":status", b"%d" % status),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]
    return fields, body


class RelayedStream(asyncio.Protocol):
    """One relayed stream; as a protocol, the client end of its socket pair."""

    def __init__(self, sink: StreamSink, stream_id: int, request: RelayedRequest) -> None:
        self._sink = sink
        self._stream_id = stream_id
        self._request = request
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._finished: asyncio.Future[None] = self._loop.create_future()
        #: Body bytes received before the pair was open, with their flow-controlled lengths.
        self._early: list[tuple[bytes, int]] = []
        self._body_ended = False
        self._received = 0
        self._unacknowledged = 0
        self._status = 0
        self._fields: list[Field] = []
        self._pending = bytearray()
        self._answered = False
        self._complete = False
        self._active_at = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, handler_factory: Callable[[], asyncio.Protocol], peer: Any) -> None:
        """Open the pair, send the request, and return once the stream is answered."""
        ours, theirs = socket.socketpair()
        served: asyncio.BaseTransport | None = None
        try:
            served, _ = await self._loop.connect_accepted_socket(
                lambda: _ServerSide(handler_factory(), peer), theirs
            )
            await self._loop.connect_accepted_socket(lambda: self, ours)
        except BaseException:  # cancelled meanwhile: each socket closed by its owner
            if served is None:
                theirs.close()
            else:
                cast(asyncio.Transport, served).abort()
            if self._transport is None:
                ours.close()
            else:
                self._transport.abort()
            raise
        transport = self._transport
        assert transport is not None
        try:
            transport.write(self._request.head)
            for data, length in self._early:
                self._write_body(data, length)
            self._early.clear()
            if self._body_ended:
                self._end_chunks()
            self._timer = self._loop.call_later(RELAY_TIMEOUT, self._check_idle)
            await self._finished
        finally:
            if self._timer is not None:
                self._timer.cancel()
            transport.abort()

    # From the HTTP/2 connection

    def body(self, data: bytes, flow_controlled_length: int) -> None:
        """Bytes of the request's body, as a DATA frame brought them."""
        self._received += len(data)
        if self._received > MAX_RELAYED_BODY:
            self._refuse_body()
        elif self._transport is None:
            self._early.append((data, flow_controlled_length))
        else:
            self._write_body(data, flow_controlled_length)

    def end_body(self) -> None:
        self._body_ended = True
        if self._transport is not None:
            self._end_chunks()

    def push(self) -> None:
        """Send what the stream's window now takes of the answer read so far."""
        if self._finished.done() or not self._answered:
            return
        if self._pending or self._complete:
            taken = self._sink.send_body(self._stream_id, self._pending, end=self._complete)
            if taken:
                del self._pending[:taken]
                self._active_at = self._loop.time()
        if self._complete and not self._pending:
            self._finish()
        elif self._transport is not None and len(self._pending) < PENDING_BYTES:
            self._transport.resume_reading()

    # asyncio.Protocol (the pair)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._transport.set_write_buffer_limits(high=UNTAKEN_BYTES)

    def data_received(self, data: bytes) -> None:
        self._active_at = self._loop.time()
        if self._complete:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(f"unreadable answer from the HTTP/1.1 side: {error}")
            return
        if len(self._pending) >= PENDING_BYTES and self._transport is not None:
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        if not self._complete:
            self._fail("the HTTP/1.1 side closed before answering in full")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._complete:
            self._fail("the HTTP/1.1 side went away before answering in full")

    def resume_writing(self) -> None:
        self._acknowledge()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name not in HOP_BY_HOP:
            self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if self._status < 200:  # an interim answer: not relayed
            self._fields = []
            return
        self._answered = True
        fields = [(b":status", b"%d" % self._status), *self._fields]
        if self._request.head_only:
            self._complete = True
            self._sink.send_head(self._stream_id, fields, end=True)
            self._finish()
        else:
            self._sink.send_head(self._stream_id, fields, end=False)

    def on_body(self, body: bytes) -> None:
        self._pending += body
        self.push()

    def on_message_complete(self) -> None:
        if self._status >= 200 and not self._complete:
            self._complete = True
            self.push()

    # Inside

    def _write_body(self, data: bytes, flow_controlled_length: int) -> None:
        transport = self._transport
        assert transport is not None
        if self._request.chunked:
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            transport.write(data)
        self._active_at = self._loop.time()
        self._unacknowledged += flow_controlled_length
        if transport.get_write_buffer_size() <= UNTAKEN_BYTES:
            self._acknowledge()

    def _end_chunks(self) -> None:
        if self._request.chunked and self._transport is not None:
            self._transport.write(b"0\r\n\r\n")

    def _acknowledge(self) -> None:
        if self._unacknowledged:
            self._sink.acknowledge(self._stream_id, self._unacknowledged)
            self._unacknowledged = 0

    def _refuse_body(self) -> None:
        if self._finished.done():
            return
        if self._answered:
            self._sink.reset(self._stream_id, ErrorCodes.CANCEL)
        else:
            self._answer_error(413, f"the request body is larger than {MAX_RELAYED_BODY} bytes")
            self._sink.reset(self._stream_id, ErrorCodes.NO_ERROR)  # stop sending the body
        self._complete = True
        self._finish()

    def _fail(self, detail: str, status: int = 502) -> None:
        if self._finished.done():
            return
        if self._answered:
            self._sink.reset(self._stream_id, ErrorCodes.INTERNAL_ERROR)
        else:
            self._answer_error(status, detail)
        self._complete = True
        self._finish()

    def _answer_error(self, status: int, detail: str) -> None:
        self._answered = True
        fields, payload = error_fields(status, detail)
        self._sink.send_head(self._stream_id, fields, end=False)
        if self._sink.send_body(self._stream_id, bytearray(payload), end=True) < len(payload):
            self._sink.reset(self._stream_id, ErrorCodes.INTERNAL_ERROR)  # no window even for this

    def _check_idle(self) -> None:
        idle_for = self._loop.time() - self._active_at
        if idle_for < RELAY_TIMEOUT:
            self._timer = self._loop.call_later(RELAY_TIMEOUT - idle_for, self._check_idle)
        elif not self._answered:
            self._fail(f"no answer from the HTTP/1.1 side within {RELAY_TIMEOUT:g} s", 504)
        else:
            self._sink.reset(self._stream_id, ErrorCodes.CANCEL)
            self._finish()

    def _finish(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)


class _ServerSide(asyncio.Protocol):
    """aiohttp's handler of one relayed request, shown the HTTP/2 client's address."""

    def __init__(self, handler: asyncio.Protocol, peer: Any) -> None:
        self._handler = handler
        self._peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handler.connection_made(_Addressed(transport, self._peer))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class _Addressed:
    """A transport that reports another peer address (the HTTP/2 client's), for logs."""

    def __init__(self, transport: asyncio.BaseTransport, peer: Any) -> None:
        self._transport = transport
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
