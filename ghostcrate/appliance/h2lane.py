"""HTTP/2 over plain TCP (h2c), for cargo: the fast lane's answer to `Upgrade: h2c`.

cargo keeps at most two connections per host (`set_max_host_connections(2)`
in its downloader) and counts on HTTP/2 to multiplex the rest. Over
`http://` it offers an h2c upgrade on its first request; a server that
declines gets cargo's requests two at a time, so a cold build against a far
upstream waits on each miss in turn. Accepting the upgrade (RFC 7540 3.2)
lets cargo send every request at once and the mirror fill them in parallel.

The state machine is the `h2` library's. Index and download GETs are
answered like the fast lane's (same hot set, replies, logs and metrics);
any other request on an HTTP/2 connection is relayed over HTTP/1.1 to this
same server, where aiohttp answers it, because aiohttp does not speak HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ghostcrate.appliance.fastlane import HANDED_OVER, Lane, Request, route_of
from ghostcrate.appliance.hotset import Field, Prepared
from ghostcrate.proxy import h2tuning

if TYPE_CHECKING:
    from hyperframe.frame import Frame, HeadersFrame  # h2's frame types

log = logging.getLogger(__name__)

SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
#: Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; curl's own cap).
MAX_CONCURRENT_STREAMS = 100
#: Bytes read from a crate file per DATA run.
CHUNK_BYTES = 256 * 1024
#: A relayed request body larger than this is refused (413).
MAX_RELAYED_BODY = 64 * 2**20
#: Hop-by-hop header fields, which HTTP/2 forbids (RFC 9113 8.2.2).
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)


def upgrade_to_h2c(
    lane: Lane, transport: asyncio.Transport, remote: str | None, request: Request, rest: bytes
) -> None:
    """Switch a connection whose `request` asked for h2c to HTTP/2."""
    connection = H2Lane(lane, remote)
    transport.set_protocol(connection)
    connection.upgrade(transport, request.headers[b"http2-settings"], request, rest)


class _RefusingConnection(h2.connection.H2Connection):
    """h2's server side, but a stream over the advertised limit is refused, not fatal.

    h2 answers a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS with a connection
    error, which ends every stream of the connection. RFC 9113 5.1.2 lets a server
    refuse just that stream (RST_STREAM REFUSED_STREAM), which clients retry; and an
    h2c client may well go over before it has read the limit, since it sends its
    requests as soon as the upgrade is accepted.
    """

    _refusing = False

    @property
    def open_inbound_streams(self) -> int:
        return 0 if self._refusing else super().open_inbound_streams

    def _receive_headers_frame(
        self, frame: HeadersFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        limit = self.local_settings.max_concurrent_streams
        if frame.stream_id in self.streams or super().open_inbound_streams < limit:
            return super()._receive_headers_frame(frame)
        # Taken as usual (its header block still has to be decoded: the HPACK state is
        # the connection's), then reset at once; nobody above sees its events.
        self._refusing = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._refusing = False
        self.reset_stream(frame.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        return frames, [e for e in events if getattr(e, "stream_id", None) != frame.stream_id]


class H2Lane(asyncio.Protocol):
    """One HTTP/2 connection, upgraded from an HTTP/1.1 one."""

    def __init__(self, lane: Lane, remote: str | None) -> None:
        self._lane = lane
        self._remote = remote
        self._h2 = _RefusingConnection(config=h2tuning.configuration(client_side=False))
        h2tuning.tune(self._h2)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: (
                    self._h2.DEFAULT_MAX_HEADER_LIST_SIZE
                ),
            },
        )
        self._transport: asyncio.Transport | None = None
        self._local: tuple[str, int] | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._relayed: dict[int, tuple[list[Field], bytearray]] = {}
        self._window_open = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.idle_since = lane.loop.time()

    def upgrade(
        self, transport: asyncio.Transport, settings: bytes, request: Request, rest: bytes
    ) -> None:
        """Take over `transport`; `request` becomes stream 1 (RFC 9113 3.2)."""
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self._local = sockname[:2] if isinstance(sockname, tuple) else None
        transport.write(SWITCHING)
        self._h2.initiate_upgrade_connection(settings)
        self._lane.connections.add(self)
        self._serve(1, request)
        self._flush()
        if rest:
            self.data_received(rest)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self.abort()
            return
        for event in events:
            self._dispatch(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._lane.connections.discard(self)
        for task in self._tasks.values():
            task.cancel()
        self._window_open.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # What the lane asks of every connection

    def close_when_idle(self) -> None:
        if self._transport is not None and not self._tasks:
            self._h2.close_connection()
            self._flush()
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # HTTP/2

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._received(event)
        elif isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            relayed = self._relayed.get(event.stream_id)
            if relayed is not None:
                relayed[1].extend(event.data)
                if len(relayed[1]) > MAX_RELAYED_BODY:
                    del self._relayed[event.stream_id]
                    self._reset(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif isinstance(event, h2.events.StreamEnded):
            relayed = self._relayed.pop(event.stream_id, None)
            if relayed is not None:
                self._start(event.stream_id, self._relay(event.stream_id, *relayed))
        elif isinstance(event, h2.events.StreamReset):
            self._relayed.pop(event.stream_id, None)
            task = self._tasks.pop(event.stream_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated) and self._transport is not None:
            self._transport.close()

    def _received(self, event: h2.events.RequestReceived) -> None:
        fields: list[Field] = event.headers
        pseudo = {name: value for name, value in fields if name.startswith(b":")}
        headers: dict[bytes, bytes] = {}
        for name, value in fields:
            if not name.startswith(b":"):
                previous = headers.get(name)
                headers[name] = value if previous is None else previous + b", " + value
        target = pseudo.get(b":path", b"")
        method = pseudo.get(b":method", b"")
        route = route_of(target)
        if (
            route is not None
            and method in (b"GET", b"HEAD")
            and event.stream_ended is not None
            and HANDED_OVER.isdisjoint(headers)
        ):
            request = Request(target, route, headers, head_only=method == b"HEAD")
            self._serve(event.stream_id, request)
            return
        if event.stream_ended is not None:
            self._start(event.stream_id, self._relay(event.stream_id, fields, bytearray()))
        else:
            self._relayed[event.stream_id] = (fields, bytearray())

    def _serve(self, stream_id: int, request: Request) -> None:
        prepared = self._lane.find(request)
        if prepared is not None and prepared.file is None:
            status, gzip = request.choose(prepared)
            body = b"" if request.head_only or status == 304 else _body(prepared, gzip)
            if len(body) <= self._h2.local_flow_control_window(stream_id):
                self._send_head(stream_id, request, prepared, status, gzip, end=not body)
                if body:
                    self._queue_frames(stream_id, memoryview(body), len(body), end=True)
                self._finish(request, prepared, status, len(body))
                return
        self._start(stream_id, self._answer(stream_id, request, prepared))

    async def _answer(self, stream_id: int, request: Request, prepared: Prepared | None) -> None:
        if prepared is None:
            prepared = await self._lane.prepare(request)
        status, gzip = request.choose(prepared)
        if request.head_only or status == 304:
            self._send_head(stream_id, request, prepared, status, gzip, end=True)
            self._flush()
            self._finish(request, prepared, status, 0)
            return
        if prepared.file is None:
            body = _body(prepared, gzip)
            self._send_head(stream_id, request, prepared, status, gzip, end=not body)
            await self._send_data(stream_id, body, end=True)
            self._finish(request, prepared, status, len(body))
            return
        fd = self._lane.open_crate(request.target, prepared)
        if fd is None:  # gone from the disk tier meanwhile: ask the mirror again
            prepared = await self._lane.prepare(request)
            if prepared.file is None:  # the mirror answered with an error
                await self._answer(stream_id, request, prepared)
                return
            fd = self._lane.open_crate(request.target, prepared)
            if fd is None:
                raise FileNotFoundError(f"{prepared.file} vanished as soon as it was filled")
        try:
            size = prepared.file_size
            self._send_head(stream_id, request, prepared, status, gzip, end=size == 0)
            offset = 0
            while offset < size:
                length = min(CHUNK_BYTES, size - offset)
                chunk: bytes | memoryview | None = read_if_cached(fd, length, offset)
                if chunk is None:
                    chunk = await asyncio.to_thread(os.pread, fd, length, offset)
                if not chunk:
                    raise ConnectionResetError("the file ended before its stated size")
                offset += len(chunk)
                await self._send_data(stream_id, chunk, end=offset >= size)
            self._flush()  # the head alone, if the file is empty
        finally:
            os.close(fd)
        self._lane.sent("copy", size)
        self._finish(request, prepared, status, size)

    async def _relay(self, stream_id: int, fields: list[Field], body: bytearray) -> None:
        """Answer a request the fast lane does not, through this server's HTTP/1.1 side."""
        pseudo = {name: value for name, value in fields if name.startswith(b":")}
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in fields
            if not name.startswith(b":") and name not in HOP_BY_HOP
        ]
        authority = pseudo.get(b":authority")
        if authority is not None:
            headers.append(("Host", authority.decode("latin-1")))
        if self._local is None:
            self._reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        host, port = self._local
        if ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{port}{pseudo.get(b':path', b'/').decode('latin-1')}"
        try:
            async with self._lane.relay_session().request(
                pseudo.get(b":method", b"GET").decode("latin-1"),
                url,
                headers=headers,
                data=bytes(body),
                allow_redirects=False,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            ) as response:
                answer: list[Field] = [(b":status", str(response.status).encode())]
                answer += [
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in response.headers.items()
                    if name.lower().encode("latin-1") not in HOP_BY_HOP
                ]
                self._h2.send_headers(stream_id, answer)
                self._flush()
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    await self._send_data(stream_id, chunk, end=False)
                await self._send_data(stream_id, b"", end=True)
        except (aiohttp.ClientError, h2.exceptions.ProtocolError):
            log.warning("relaying an HTTP/2 request failed", exc_info=True)
            self._reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)

    # Sending

    def _send_head(
        self,
        stream_id: int,
        request: Request,
        prepared: Prepared,
        status: int,
        gzip: bool,
        *,
        end: bool,
    ) -> None:
        """Queue the head; the caller flushes (once per read for answers from memory)."""
        if status == 304:
            fields = prepared.gzip_not_modified_fields if gzip else prepared.not_modified_fields
        else:
            fields = prepared.gzip_fields if gzip else prepared.fields
        headers = [(b":status", b"%d" % status)]
        headers += [(name.lower(), value) for name, value in fields]
        headers.append((b"date", self._lane.date()))
        headers.append((b"x-request-id", request.request_id.encode()))
        self._h2.send_headers(stream_id, headers, end_stream=end)

    def _queue_frames(
        self, stream_id: int, view: memoryview, window: int, *, end: bool
    ) -> memoryview:
        """Queue as much of `view` as `window` takes, in frames the peer accepts; the rest."""
        frame = self._h2.max_outbound_frame_size
        while True:
            size = min(window, frame)
            part, view = view[:size], view[size:]
            window -= size
            self._h2.send_data(stream_id, part, end_stream=end and not view)
            if not view or window <= 0:
                return view

    async def _send_data(self, stream_id: int, data: bytes | memoryview, *, end: bool) -> None:
        """Send `data` as the peer's flow-control windows allow."""
        view = memoryview(data)
        while True:
            if not self._writable.is_set():
                await self._writable.wait()
            if self._transport is None:
                raise ConnectionResetError("connection lost")
            window = self._h2.local_flow_control_window(stream_id)
            if view and window <= 0:
                self._window_open.clear()
                await self._window_open.wait()
                continue
            view = self._queue_frames(stream_id, view, window, end=end)  # then one write
            self._flush()
            if not view:
                return

    def _finish(self, request: Request, prepared: Prepared, status: int, length: int) -> None:
        if prepared.reply.file is not None and prepared.file is None and length:
            self._lane.sent("memory", length)
        self._lane.finish(request, status, length, self._remote)
        self.idle_since = self._lane.loop.time()

    def _start(self, stream_id: int, work: Coroutine[Any, Any, None]) -> None:
        task = self._lane.loop.create_task(work)
        self._tasks[stream_id] = task

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.pop(stream_id, None)
            self.idle_since = self._lane.loop.time()
            if task.cancelled() or self._transport is None:
                return
            error = task.exception()
            if error is not None:
                log.error("answering an HTTP/2 stream failed", exc_info=error)
                self._reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)

        task.add_done_callback(done)

    def _reset(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, code)
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)


def read_if_cached(fd: int, length: int, offset: int) -> memoryview | None:
    """Up to `length` bytes at `offset` if the page cache has them, else None, at once.

    `RWF_NOWAIT` makes the read fail instead of waiting for the disk, so it can be
    done on the event loop: a crate just filled (or often asked for) is read in
    microseconds, without the trip to a thread (and that thread's turns for the
    GIL) that a read from the disk still takes.
    """
    buffer = bytearray(length)
    try:
        got = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a file system without it
        return None
    return memoryview(buffer)[:got] if got else None


def _body(prepared: Prepared, gzip: bool) -> bytes:
    return cast(bytes, prepared.gzip_body) if gzip else prepared.body
