"""HTTP/2 to an HTTPS upstream: every request of a worker on one connection per origin.

crates.io (index.crates.io, static.crates.io) speaks HTTP/2, and so does cargo
when it talks to crates.io directly: it sends a whole level of the dependency
tree at once over one connection. aiohttp speaks HTTP/1.1 only, so a cold
burst of 40 misses opened 40 TLS connections, and the handshakes (about 2.5 ms
of CPU each in Python, plus the server's) cost more than the round trip they
were waiting for (benchmarks/RESULTS.md). Here all of a worker's requests to
one origin share one TLS connection (ALPN `h2`), opened once however many
requests are waiting for it.

The protocol's state machine is the `h2` library's. Each response body is
read under flow control: a stream's window (`STREAM_WINDOW`) is given back
only as the caller consumes the data, so a slow disk never makes a worker
buffer more than that per download. An origin that answers ALPN with
`http/1.1` is remembered and `request` returns None for it: the caller
uses its HTTP/1.1 client instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ghostcrate.proxy import h2tuning

log = logging.getLogger(__name__)

#: Bytes a stream may receive before the caller has consumed them.
STREAM_WINDOW = 1024 * 1024
#: Bytes all streams of a connection may receive before their callers consumed them.
CONNECTION_WINDOW = 16 * 1024 * 1024
#: An idle connection (no open stream) is closed after this many seconds.
IDLE_SECONDS = 60.0
#: Tries of a request that servers keep leaving unprocessed (GOAWAY while it was sent).
ATTEMPTS = 3
#: How long closing the client waits for its connections' TLS shutdowns.
CLOSE_SECONDS = 2.0


class H2Error(Exception):
    """A request over HTTP/2 failed; the message says how."""


class H2ConnectError(H2Error):
    def __init__(self, host: str, port: int, cause: BaseException) -> None:
        super().__init__(f"cannot connect to {host}:{port} ({cause})")
        self.host = host
        self.port = port
        self.cause = cause


class H2Timeout(H2Error):
    """Connecting, or waiting for an answer or the next part of a body, took too long."""

    def __init__(self, message: str, *, connecting: bool) -> None:
        super().__init__(message)
        self.connecting = connecting


class H2Disconnected(H2Error):
    """The connection or the stream ended before the whole answer arrived."""

    def __init__(self, message: str, *, answered: bool, retry: bool = False) -> None:
        super().__init__(message)
        #: Whether the response head had arrived (then the body was cut short).
        self.answered = answered
        #: Whether the server never processed the request (GOAWAY below its stream id).
        self.retry = retry


@dataclass
class _Stream:
    head: asyncio.Future[tuple[int, CIMultiDictProxy[str]]]
    #: Body bytes received and not yet read (DATA frames are 16 KiB; reads take them all).
    data: deque[bytes] = field(default_factory=deque)
    ended: bool = False
    error: H2Error | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class H2Response:
    """A response whose body is read in chunks, decoded if the server compressed it."""

    def __init__(
        self,
        connection: _Connection,
        stream_id: int,
        status: int,
        headers: CIMultiDictProxy[str],
        *,
        decode: bool,
    ) -> None:
        self._connection = connection
        self._stream_id = stream_id
        self.status = status
        self.headers = headers
        self._ended = False
        encoding = headers.get("content-encoding", "identity").lower() if decode else "identity"
        self._decoder = (
            zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
            if encoding in ("gzip", "deflate")
            else None
        )

    @property
    def content_length(self) -> int | None:
        """The body's length as sent (None when compressed: it is what was decoded)."""
        value = self.headers.get("content-length")
        if self._decoder is not None or value is None or not value.isdigit():
            return None
        return int(value)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, in the pieces it arrives in (decoded)."""
        while not self._ended:
            chunk = await self._connection.next_chunk(self._stream_id)
            if chunk is None:
                self._ended = True
                if self._decoder is not None:
                    tail = self._decoder.flush()
                    if not self._decoder.eof:
                        raise H2Disconnected("the compressed body was cut short", answered=True)
                    if tail:
                        yield tail
                return
            if self._decoder is not None:
                try:
                    chunk = self._decoder.decompress(chunk)
                except zlib.error as error:
                    message = f"the body did not decode ({error})"
                    raise H2Disconnected(message, answered=True) from error
            if chunk:
                yield chunk

    def close(self) -> None:
        """Stop reading: a stream not read to its end is reset."""
        if not self._ended:
            self._ended = True
            self._connection.cancel(self._stream_id)


class H2Client:
    """HTTP/2 connections to HTTPS origins, one per origin, opened on first use."""

    def __init__(self, tls: ssl.SSLContext, connect_timeout: float, read_timeout: float) -> None:
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._connections: dict[tuple[str, int], _Connection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Future[_Connection | None]] = {}
        #: Origins that chose HTTP/1.1 when offered both.
        self._http1: set[tuple[str, int]] = set()
        #: Every connection not yet lost, in use or closing.
        self._live: set[_Connection] = set()

    @contextlib.asynccontextmanager
    async def get(
        self, url: str, headers: dict[str, str], *, decode: bool
    ) -> AsyncIterator[H2Response | None]:
        """GET `url` (https); None if its origin does not speak HTTP/2.

        `decode`: ask for gzip and decode the body. A request the server left
        unprocessed (above a GOAWAY's last stream, or on a connection lost before
        any answer) is sent again on a new connection, up to `ATTEMPTS` times.
        """
        target = URL(url)
        origin = (target.raw_host or "", target.port or 443)
        for attempt in range(1, ATTEMPTS + 1):
            connection = await self._connection(origin)
            if connection is None:
                yield None
                return
            try:
                response = await connection.get(target, headers, decode=decode)
            except H2Disconnected as error:
                if attempt == ATTEMPTS or not error.retry:
                    raise
                continue
            try:
                yield response
            finally:
                response.close()
            return

    async def close(self) -> None:
        """Close every connection, and wait (a moment) until they are closed."""
        self._connections.clear()
        live = list(self._live)
        for connection in live:
            connection.close()
        if live:
            await asyncio.wait([c.lost for c in live], timeout=CLOSE_SECONDS)
            for connection in live:
                if not connection.lost.done():
                    connection.abort()

    async def _connection(self, origin: tuple[str, int]) -> _Connection | None:
        connection = self._connections.get(origin)
        if connection is not None and connection.usable:
            return connection
        if origin in self._http1:
            return None
        pending = self._connecting.get(origin)
        if pending is None:  # the first request opens it; the others wait for it
            pending = asyncio.get_running_loop().create_future()
            self._connecting[origin] = pending
            try:
                opened = await self._open(origin)
            except BaseException as error:
                pending.set_exception(error)
                pending.exception()  # retrieved: only the waiters need it
                raise
            finally:
                del self._connecting[origin]
            pending.set_result(opened)
            return opened
        return await asyncio.shield(pending)

    async def _open(self, origin: tuple[str, int]) -> _Connection | None:
        host, port = origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, connection = await loop.create_connection(
                    lambda: _Connection(self._read_timeout, origin, self._forget),
                    host,
                    port,
                    ssl=self._tls,
                    server_hostname=host,
                )
        except TimeoutError:
            raise H2Timeout(
                f"connecting timed out after {self._connect_timeout:g} s", connecting=True
            ) from None
        except OSError as error:  # ssl.SSLError included
            raise H2ConnectError(host, port, error) from error
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            transport.close()
            self._http1.add(origin)
            log.info("the upstream does not speak HTTP/2; using HTTP/1.1", extra={"host": host})
            return None
        self._connections[origin] = connection
        self._live.add(connection)
        connection.lost.add_done_callback(lambda _: self._live.discard(connection))
        return connection

    def _forget(self, connection: _Connection) -> None:
        if self._connections.get(connection.origin) is connection:
            del self._connections[connection.origin]


def h2_tls_context(base: ssl.SSLContext) -> ssl.SSLContext:
    """`base` (trust settings included) offering HTTP/2 first via ALPN."""
    base.set_alpn_protocols(["h2", "http/1.1"])
    return base


class _DrainingStateMachine(h2.connection.H2ConnectionStateMachine):
    """h2's connection states, except that a received GOAWAY leaves the connection open.

    h2 closes the connection at any GOAWAY, and then refuses the frames that finish
    the streams the GOAWAY covers, even those that arrived in the same read. Those
    streams may finish (RFC 9113 6.8); `_Connection` stops opening new ones itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self._transitions = {
            **self._transitions,
            (
                h2.connection.ConnectionState.CLIENT_OPEN,
                h2.connection.ConnectionInputs.RECV_GOAWAY,
            ): (None, h2.connection.ConnectionState.CLIENT_OPEN),
        }


class _Connection(asyncio.Protocol):
    """One HTTP/2 client connection and its streams."""

    def __init__(
        self,
        read_timeout: float,
        origin: tuple[str, int],
        forget: Callable[[_Connection], None],
    ) -> None:
        self.origin = origin
        self._read_timeout = read_timeout
        self._forget = forget
        self._h2 = h2.connection.H2Connection(h2tuning.configuration(client_side=True))
        h2tuning.tune(self._h2)
        self._h2.state_machine = _DrainingStateMachine()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        #: No new streams: the server said GOAWAY, or the connection is gone.
        self._closing = False
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._idle: asyncio.TimerHandle | None = None
        #: Done once the transport is gone.
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def usable(self) -> bool:
        return not self._closing and self._transport is not None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._flush()
        self._schedule_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._end("the upstream closed the connection", retry=True)
        if not self.lost.done():
            self.lost.set_result(None)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            log.warning("HTTP/2 protocol error from the upstream", extra={"error": str(error)})
            self._end(f"the upstream broke the HTTP/2 protocol ({error})", retry=False)
            self._flush()
            self.close()
            return
        for event in events:
            self._handle(event)
        self._flush()

    # Requests

    async def get(self, url: URL, headers: dict[str, str], *, decode: bool) -> H2Response:
        while self._full():
            self._capacity.clear()
            await self._capacity.wait()
        if not self.usable:
            raise H2Disconnected(
                "the connection closed before the request", answered=False, retry=True
            )
        fields = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", url.raw_authority),
            (":path", url.raw_path_qs),
            *((name.lower(), value) for name, value in headers.items()),
        ]
        if decode:
            fields.append(("accept-encoding", "gzip"))
        stream_id = self._h2.get_next_available_stream_id()
        stream = _Stream(asyncio.get_running_loop().create_future())
        self._streams[stream_id] = stream
        self._cancel_idle()
        self._h2.send_headers(stream_id, fields, end_stream=True)
        self._flush()
        try:
            async with asyncio.timeout(self._read_timeout):
                status, response_headers = await stream.head
        except TimeoutError:
            self.cancel(stream_id)
            raise H2Timeout(
                f"no data for {self._read_timeout:g} s (read timeout)", connecting=False
            ) from None
        except BaseException:
            self.cancel(stream_id)
            raise
        return H2Response(self, stream_id, status, response_headers, decode=decode)

    async def next_chunk(self, stream_id: int) -> bytes | None:
        """All of a stream's body received so far (its window given back); None at its end."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return None
        try:
            async with asyncio.timeout(self._read_timeout):
                while not (stream.data or stream.ended or stream.error):
                    stream.arrived.clear()
                    await stream.arrived.wait()
        except TimeoutError:
            self.cancel(stream_id)
            raise H2Timeout(
                f"no data for {self._read_timeout:g} s (read timeout)", connecting=False
            ) from None
        if stream.data:
            chunk = b"".join(stream.data)
            stream.data.clear()
            if self._transport is not None:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._h2.acknowledge_received_data(len(chunk), stream_id)
                self._flush()
            return chunk
        self._discard(stream_id)
        if stream.error is not None and not stream.ended:  # a body that ended is whole
            raise stream.error
        return None

    def cancel(self, stream_id: int) -> None:
        """Reset a stream the caller no longer reads."""
        if self._discard(stream_id) and self._transport is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._flush()

    def close(self) -> None:
        self._closing = True
        self._cancel_idle()
        if self._transport is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.close_connection()
                self._flush()
            self._transport.close()

    # Internals

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self._on_response(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None:
                stream.ended = True
                stream.arrived.set()
        elif isinstance(event, h2.events.StreamReset):
            self._fail(
                event.stream_id or 0, f"the upstream reset the stream ({event.error_code!r})"
            )
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._capacity.set()

    def _on_response(self, event: h2.events.ResponseReceived) -> None:
        stream = self._streams.get(event.stream_id or 0)
        if stream is None or stream.head.done():
            return
        headers: CIMultiDict[str] = CIMultiDict()
        status = 0
        for name, value in event.headers or ():
            if name == b":status":
                status = int(value)
            elif not name.startswith(b":"):
                headers.add(name.decode("latin-1"), value.decode("latin-1"))
        stream.head.set_result((status, CIMultiDictProxy(headers)))

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        data = event.data or b""
        flow_controlled = event.flow_controlled_length or 0
        stream = self._streams.get(stream_id)
        if stream is None:  # reset by us meanwhile: give the window back at once
            self._h2.acknowledge_received_data(flow_controlled, stream_id)
            return
        stream.data.append(data)
        stream.arrived.set()
        if flow_controlled > len(data):  # padding: never reaches the reader
            self._h2.acknowledge_received_data(flow_controlled - len(data), stream_id)

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """No new streams here; those the server never saw are failed, to be sent again.

        A graceful GOAWAY (a server draining the connection, as nginx does after
        `keepalive_requests`) lets the streams it covers finish (RFC 9113 6.8).
        """
        self._closing = True
        last = event.last_stream_id or 0
        for stream_id in [s for s in self._streams if s > last]:
            self._fail(stream_id, "the upstream went away before the request", retry=True)
        if event.error_code != h2.errors.ErrorCodes.NO_ERROR:
            for stream_id in list(self._streams):
                self._fail(stream_id, f"the upstream ended the connection ({event.error_code!r})")
        self._capacity.set()
        self._forget(self)
        if not self._streams:
            self.close()

    def _full(self) -> bool:
        limit = self._h2.remote_settings.max_concurrent_streams
        return self.usable and self._h2.open_outbound_streams >= limit

    def _fail(self, stream_id: int, message: str, *, retry: bool = False) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if not stream.head.done():
            stream.head.set_exception(H2Disconnected(message, answered=False, retry=retry))
            stream.head.exception()  # the waiter may be gone; retrieved either way
        else:
            stream.error = H2Disconnected(message, answered=True)
            stream.arrived.set()

    def _end(self, message: str, *, retry: bool) -> None:
        self._closing = True
        self._cancel_idle()
        for stream_id in list(self._streams):
            self._fail(stream_id, message, retry=retry)
        self._capacity.set()
        self._forget(self)

    def _discard(self, stream_id: int) -> bool:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return False
        unread = sum(len(data) for data in stream.data)
        if unread and self._transport is not None:  # the connection's window, given back
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.acknowledge_received_data(unread, stream_id)
        self._capacity.set()
        if not self._streams:
            if self._closing:
                self.close()
            else:
                self._schedule_idle()
        return True

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _schedule_idle(self) -> None:
        self._cancel_idle()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(IDLE_SECONDS, self._close_idle)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _close_idle(self) -> None:
        if not self._streams:
            self._closing = True
            self._forget(self)
            self.close()
