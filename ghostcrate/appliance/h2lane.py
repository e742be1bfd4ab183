"""HTTP/2 over plain TCP (h2c), for cargo: the fast lane's answer to `Upgrade: h2c`.

cargo keeps at most two connections per host (`set_max_host_connections(2)`
in its downloader) and counts on HTTP/2 to multiplex the rest. Over
`http://` it offers an h2c upgrade on its first request; a server that
declines gets cargo's requests two at a time, so a cold build against a far
upstream waits on each miss in turn. Accepting the upgrade (RFC 7540 3.2)
lets cargo send every request at once and the mirror fill them in parallel.

The state machine is the `h2` library's. Index and download GETs are
answered like the fast lane's (same hot set, replies, logs and metrics);
any other request is relayed to aiohttp in this process (`h2relay.py`).

The connection is held to the limits of `h2limits.py`: rates of new streams,
resets and control frames (over them: `GOAWAY` with `ENHANCE_YOUR_CALM`); a
bounded share of the event loop per read; no reading while the socket does
not take what was written; a send timeout for streams that cannot send. An
error in one stream is that stream's (`RST_STREAM`), logged in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
)

from ghostcrate.appliance import h2limits
from ghostcrate.appliance.fastlane import Lane, Request, lanes_answer, route_of
from ghostcrate.appliance.h2limits import ConnectionBudgets
from ghostcrate.appliance.h2relay import (
    MAX_RELAYED_BODY,
    MAX_RELAYED_STREAMS,
    Malformed,
    RelayedRequest,
    RelayedStream,
    error_fields,
)
from ghostcrate.appliance.hotset import Field, Prepared
from ghostcrate.proxy import h2tuning

if TYPE_CHECKING:
    from hyperframe.frame import Frame

log = logging.getLogger(__name__)

SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
BAD_UPGRADE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
#: Bytes read from a crate file per DATA run (at most; never more than the window).
CHUNK_BYTES = 256 * 1024


def upgrade_to_h2c(
    lane: Lane, transport: asyncio.Transport, remote: str | None, request: Request, rest: bytes
) -> None:
    """Switch a connection whose `request` asked for h2c to HTTP/2."""
    connection = H2Lane(lane, remote)
    transport.set_protocol(connection)
    connection.upgrade(transport, request.headers[b"http2-settings"], request, rest)


class SendTimeout(Exception):
    """A stream could send nothing for `SEND_TIMEOUT`."""


class _GuardedConnection(h2.connection.H2Connection):
    """h2's server side, with what a server on a network needs on top.

    - Each frame is counted against the connection's budgets; over one, h2 ends the
      connection with `GOAWAY` and `ENHANCE_YOUR_CALM` (its `DenialOfServiceError`).
    - A stream over SETTINGS_MAX_CONCURRENT_STREAMS is refused on its own
      (`REFUSED_STREAM`, RFC 9113 5.1.2), which clients retry; h2 would end the
      connection, and an h2c client may go over before it has read the limit.
    - A malformed request (bad fields, a body longer or shorter than its
      content-length) is a stream error (RFC 9113 8.1.1), not the connection's.
    """

    _refusing = False

    def __init__(self, budgets: ConnectionBudgets) -> None:
        super().__init__(config=h2tuning.configuration(client_side=False))
        self.budgets = budgets

    @property
    def open_inbound_streams(self) -> int:
        return 0 if self._refusing else super().open_inbound_streams

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        stream_id = frame.stream_id
        known = stream_id in self.streams
        if isinstance(frame, HeadersFrame) and not known:
            self._spend(self.budgets.streams, "new streams")
        elif isinstance(frame, RstStreamFrame):
            self._spend(self.budgets.resets, "stream resets")
        elif isinstance(frame, PingFrame | SettingsFrame | PriorityFrame) or (
            isinstance(frame, DataFrame) and not frame.data and "END_STREAM" not in frame.flags
        ):
            self._spend(self.budgets.control, "control frames")
        try:
            return super()._receive_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            if not isinstance(frame, DataFrame) or stream_id not in self.streams:
                raise
            self.acknowledge_received_data(frame.flow_controlled_length, stream_id)
            return self._reset_malformed(stream_id)
        except h2.exceptions.ProtocolError as error:
            # Header fields h2 refuses: plain ProtocolError, raised once the block is
            # decoded (the HPACK state is sound) and the new stream exists.
            if type(error) is not h2.exceptions.ProtocolError or not isinstance(
                frame, HeadersFrame
            ):
                raise
            if known or stream_id not in self.streams:
                raise
            return self._reset_malformed(stream_id)

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Frame], list[h2.events.Event]]:
        limit = self.local_settings.max_concurrent_streams
        if frame.stream_id in self.streams or super().open_inbound_streams < limit:
            return super()._receive_headers_frame(frame)
        # Taken as usual (its header block still has to be decoded: the HPACK state is
        # the connection's), then reset at once; nobody above sees its events.
        self._spend(self.budgets.resets, "refused streams")
        self._refusing = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._refusing = False
        self.reset_stream(frame.stream_id, ErrorCodes.REFUSED_STREAM)
        return frames, [e for e in events if getattr(e, "stream_id", None) != frame.stream_id]

    def _reset_malformed(self, stream_id: int) -> list[h2.events.Event]:
        """Reset a stream for a malformed request; the event tells the lane it is over."""
        self._spend(self.budgets.resets, "malformed requests")
        self.reset_stream(stream_id, ErrorCodes.PROTOCOL_ERROR)
        return [
            h2.events.StreamReset(
                stream_id=stream_id, error_code=ErrorCodes.PROTOCOL_ERROR, remote_reset=False
            )
        ]

    @staticmethod
    def _spend(budget: h2limits.Budget, what: str) -> None:
        if not budget.take():
            raise h2.exceptions.DenialOfServiceError(f"too many {what}")


class H2Lane(asyncio.Protocol):
    """One HTTP/2 connection, upgraded from an HTTP/1.1 one."""

    def __init__(self, lane: Lane, remote: str | None) -> None:
        self._lane = lane
        self._remote = remote
        loop = lane.loop
        self._h2 = _GuardedConnection(ConnectionBudgets(loop.time))
        h2tuning.tune(self._h2)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: h2limits.MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: (
                    self._h2.DEFAULT_MAX_HEADER_LIST_SIZE
                ),
            },
        )
        self._transport: asyncio.Transport | None = None
        self._peer: Any = None
        self._host = b"localhost"
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._relays: dict[int, RelayedStream] = {}
        self._window_open = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        #: Bytes read but not yet handed to h2, when a read's share of the loop ran out.
        self._backlog = b""
        self._continuing = False
        self._reading_paused = False
        #: Bytes of answers queued in h2 since the last write.
        self._queued = 0
        self._closing = False
        self.idle_since = loop.time()

    def upgrade(
        self, transport: asyncio.Transport, settings: bytes, request: Request, rest: bytes
    ) -> None:
        """Take over `transport`; `request` becomes stream 1 (RFC 9113 3.2)."""
        self._transport = transport
        self._peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple):
            host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
            self._host = f"{host}:{sockname[1]}".encode()
        try:
            self._h2.initiate_upgrade_connection(settings)
        except Exception as error:  # a malformed HTTP2-Settings: whatever h2 raises for it
            self._quiet("refused an h2c upgrade", error, remote=self._remote)
            transport.write(BAD_UPGRADE)
            transport.close()
            return
        transport.write(SWITCHING)
        self._lane.connections.add(self)
        self._safely(1, lambda: self._serve(1, request))
        self._flush()
        if rest:
            self.data_received(rest)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._backlog:
            self._backlog += data
            return
        self._receive(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._lane.connections.discard(self)
        for task in self._tasks.values():
            task.cancel()
        self._window_open.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()
        self._update_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        self._update_reading()
        self._push_relays()

    # What the lane asks of every connection

    def close_when_idle(self) -> None:
        if self._transport is not None and not self._tasks:
            self._h2.close_connection()
            self._flush()
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # Reading

    def _receive(self, data: bytes) -> None:
        """Hand `data` to h2 until this read's share of the loop is used up; keep the rest."""
        events_left = h2limits.EVENTS_PER_TURN
        offset = 0
        while offset < len(data):
            piece = data[offset : offset + h2limits.READ_SLICE]
            offset += len(piece)
            try:
                events = self._h2.receive_data(piece)
            except h2.exceptions.ProtocolError as error:
                self._end(error)
                return
            for event in events:
                if self._closing:
                    return
                self._dispatch(event)
            if self._transport is None or self._closing:
                return
            events_left -= len(events)
            if events_left <= 0 or not self._writable.is_set():
                break
        self._backlog = data[offset:]
        self._flush()
        self._update_reading()

    def _continue(self) -> None:
        self._continuing = False
        backlog, self._backlog = self._backlog, b""
        if backlog and self._transport is not None and not self._closing:
            self._receive(backlog)

    def _update_reading(self) -> None:
        """Read while the socket takes what is written and no backlog waits; else pause."""
        transport = self._transport
        if transport is None:
            return
        writable = self._writable.is_set()
        if self._backlog and writable and not self._continuing:
            self._continuing = True
            self._lane.loop.call_soon(self._continue)
        pause = not self._closing and (bool(self._backlog) or not writable)
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _end(self, error: h2.exceptions.ProtocolError) -> None:
        """The client broke the protocol or a limit: send the GOAWAY queued for it, and close."""
        calm = isinstance(error, h2.exceptions.DenialOfServiceError)
        self._lane.count("h2_calm" if calm else "h2_protocol_error")
        self._quiet("ended an HTTP/2 connection", error, remote=self._remote)
        self._flush()
        self._closing = True
        self._h2.incoming_buffer = FrameBuffer(server=True)  # what it held (a header block)
        for task in self._tasks.values():
            task.cancel()
        transport = self._transport
        if transport is None:
            return
        # A lingering close, as nginx's: the GOAWAY goes out, then what the client still
        # sends is read and dropped, so that its kernel sees no reset that would make it
        # drop the GOAWAY unread; after CLOSE_GRACE the connection is gone either way.
        transport.write_eof()
        self._backlog = b""
        self._update_reading()
        self._lane.loop.call_later(h2limits.CLOSE_GRACE, transport.abort)

    # Streams

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._safely(event.stream_id, lambda: self._received(event))
        elif isinstance(event, h2.events.DataReceived):
            relay = self._relays.get(event.stream_id)
            if relay is not None:
                self._safely(
                    event.stream_id,
                    lambda: relay.body(event.data, event.flow_controlled_length),
                )
            else:  # a body nobody reads (its stream was refused or reset)
                self.acknowledge(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            relay = self._relays.get(event.stream_id)
            if relay is not None:
                relay.end_body()
        elif isinstance(event, h2.events.StreamReset):
            task = self._tasks.pop(event.stream_id, None)
            if task is not None:
                task.cancel()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_open.set()
            self._push_relays()
        elif isinstance(event, h2.events.ConnectionTerminated) and self._transport is not None:
            self._transport.close()

    def _safely(self, stream_id: int | None, work: Any) -> None:
        """Run `work` for a stream; an error in it ends the stream, never the connection."""
        try:
            work()
        except h2.exceptions.StreamClosedError:
            pass  # the client reset the stream meanwhile
        except Exception as error:
            self._quiet("HTTP/2 stream failed", error, stream=stream_id, remote=self._remote)
            self._lane.count("h2_stream_error")
            if stream_id is not None:
                self.reset(stream_id, ErrorCodes.INTERNAL_ERROR)

    def _received(self, event: h2.events.RequestReceived) -> None:
        fields: list[Field] = event.headers
        stream_id = event.stream_id
        ended = event.stream_ended is not None
        pseudo = {name: value for name, value in fields if name.startswith(b":")}
        target = pseudo.get(b":path", b"")
        method = pseudo.get(b":method", b"")
        route = route_of(target)
        if route is not None and method in (b"GET", b"HEAD") and ended:
            headers: dict[bytes, bytes] = {}
            for name, value in fields:
                if not name.startswith(b":"):
                    previous = headers.get(name)
                    headers[name] = value if previous is None else previous + b", " + value
            if lanes_answer(route, headers):
                self._serve(stream_id, Request(target, route, headers, head_only=method == b"HEAD"))
                return
        self._relay(stream_id, fields, ended=ended)

    def _relay(self, stream_id: int, fields: list[Field], *, ended: bool) -> None:
        if len(self._relays) >= MAX_RELAYED_STREAMS:
            self._lane.count("h2_relay_refused")
            self._refuse(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        try:
            request = RelayedRequest(fields, self._host, ended=ended)
        except Malformed as error:
            self._quiet("refused an HTTP/2 request", error, stream=stream_id, remote=self._remote)
            self._refuse(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        if request.content_length is not None and request.content_length > MAX_RELAYED_BODY:
            head, body = error_fields(413, f"the body is larger than {MAX_RELAYED_BODY} bytes")
            self.send_head(stream_id, head, end=False)
            self.send_body(stream_id, bytearray(body), end=True)
            if not ended:
                self.reset(stream_id, ErrorCodes.NO_ERROR)  # stop sending the body
            return
        relay = RelayedStream(self, stream_id, request)
        self._relays[stream_id] = relay
        self._lane.count("h2_relayed")
        self._start(stream_id, self._run_relay(stream_id, relay))

    def _refuse(self, stream_id: int, code: int) -> None:
        """Reset a stream the lane will not answer; too many of these calm the client."""
        self.reset(stream_id, code)
        if not self._h2.budgets.resets.take():
            self._h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self._end(h2.exceptions.DenialOfServiceError("too many refused streams"))

    async def _run_relay(self, stream_id: int, relay: RelayedStream) -> None:
        try:
            await relay.run(self._lane.handler_factory, self._peer)
        finally:
            self._relays.pop(stream_id, None)

    def _push_relays(self) -> None:
        for relay in list(self._relays.values()):
            relay.push()

    def _serve(self, stream_id: int, request: Request) -> None:
        request.remote = self._remote
        prepared = self._lane.find(request)
        if prepared is not None and prepared.file is None and self._writable.is_set():
            status, gzip = request.choose(prepared)
            body = b"" if request.head_only or status == 304 else _body(prepared, gzip)
            if len(body) <= self._h2.local_flow_control_window(stream_id):
                self._send_head(stream_id, request, prepared, status, gzip, end=not body)
                if body:
                    self._queue_frames(stream_id, memoryview(body), len(body), end=True)
                self._queued += len(body)
                if self._queued >= h2limits.FLUSH_BYTES:
                    self._flush()  # so that a client that does not read is noticed early
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
        await self._send_file(stream_id, request, prepared, status, gzip)

    async def _send_file(
        self, stream_id: int, request: Request, prepared: Prepared, status: int, gzip: bool
    ) -> None:
        """Send a crate file; it is open only while the stream's window lets it be sent."""
        await self._window(stream_id)
        fd = self._lane.open_crate(request.target, prepared)
        if fd is None:  # gone from the disk tier meanwhile: ask the mirror again
            prepared = await self._lane.prepare(request)
            if prepared.file is None:  # the mirror answered with an error
                await self._answer(stream_id, request, prepared)
                return
            fd = self._lane.open_crate(request.target, prepared)
            if fd is None:
                raise FileNotFoundError(f"{prepared.file} vanished as soon as it was filled")
        size = prepared.file_size
        path = prepared.file  # kept: the reply may be held in memory meanwhile
        assert path is not None
        try:
            self._send_head(stream_id, request, prepared, status, gzip, end=size == 0)
            offset = 0
            while offset < size:
                window = self._h2.local_flow_control_window(stream_id)
                if window <= 0:  # let the file go while the client makes room
                    os.close(fd)
                    fd = -1
                    window = await self._window(stream_id)
                    fd = _reopen(path, size)
                length = min(CHUNK_BYTES, size - offset, window)
                chunk: bytes | memoryview | None = read_if_cached(fd, length, offset)
                if chunk is None:
                    chunk = await asyncio.to_thread(os.pread, fd, length, offset)
                if not chunk:
                    raise ConnectionResetError("the file ended before its stated size")
                offset += len(chunk)
                await self._send_data(stream_id, chunk, end=offset >= size)
            self._flush()  # the head alone, if the file is empty
        finally:
            if fd >= 0:
                os.close(fd)
        self._lane.sent("copy", size)
        self._finish(request, prepared, status, size)

    async def _send_data(self, stream_id: int, data: bytes | memoryview, *, end: bool) -> None:
        """Send `data` as the peer's flow-control windows allow (and end the stream)."""
        view = memoryview(data)
        while view:
            window = await self._window(stream_id)
            view = self._queue_frames(stream_id, view, window, end=end)
            self._flush()

    async def _window(self, stream_id: int) -> int:
        """The stream's open window, once there is one; `SendTimeout` after SEND_TIMEOUT."""
        loop = self._lane.loop
        deadline = loop.time() + h2limits.SEND_TIMEOUT
        while True:
            await self._writable_or_timeout()
            window = self._h2.local_flow_control_window(stream_id)
            if window > 0:
                return window
            self._window_open.clear()
            try:
                await asyncio.wait_for(self._window_open.wait(), deadline - loop.time())
            except TimeoutError:
                raise SendTimeout(f"stream {stream_id} had no window for 60 s") from None

    async def _writable_or_timeout(self) -> None:
        """Wait while the socket takes nothing; after SEND_TIMEOUT, close the connection."""
        if not self._writable.is_set():
            try:
                await asyncio.wait_for(self._writable.wait(), h2limits.SEND_TIMEOUT)
            except TimeoutError:
                self._lane.count("h2_send_timeout")
                self.abort()
                raise ConnectionResetError("the client took nothing for 60 s") from None
        if self._transport is None:
            raise ConnectionResetError("connection lost")

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

    def _finish(self, request: Request, prepared: Prepared, status: int, length: int) -> None:
        if prepared.reply.file is not None and prepared.file is None and length:
            self._lane.sent("memory", length)
        self._lane.finish(request, status, length, self._remote)
        self.idle_since = self._lane.loop.time()

    def _start(self, stream_id: int, work: Coroutine[Any, Any, None]) -> None:
        task = self._lane.loop.create_task(work)
        self._tasks[stream_id] = task

        def done(task: asyncio.Task[None]) -> None:
            if self._tasks.get(stream_id) is task:
                del self._tasks[stream_id]
            self.idle_since = self._lane.loop.time()
            error = None if task.cancelled() else task.exception()
            if error is None or self._transport is None or self._closing:
                return  # a connection that is gone takes its streams' errors with it
            if isinstance(error, h2.exceptions.StreamClosedError):
                return
            if isinstance(error, SendTimeout):
                self._lane.count("h2_send_timeout")
                self.reset(stream_id, ErrorCodes.CANCEL)
                return
            self._quiet("HTTP/2 stream failed", error, stream=stream_id, remote=self._remote)
            self._lane.count("h2_stream_error")
            self.reset(stream_id, ErrorCodes.INTERNAL_ERROR)

        task.add_done_callback(done)

    def _quiet(self, message: str, error: BaseException, **fields: object) -> None:
        """One line about what a client caused, at the lanes' bounded rate."""
        self._lane.quiet.report(log, logging.WARNING, message, error, **fields)

    def _flush(self) -> None:
        self._queued = 0
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._closing:
            self._transport.write(data)

    # What a relayed stream asks of its connection (`h2relay.StreamSink`)

    def send_head(self, stream_id: int, fields: list[Field], *, end: bool) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self._h2.send_headers(stream_id, fields, end_stream=end)
            self._flush()

    def send_body(self, stream_id: int, data: bytearray, *, end: bool) -> int:
        if self._transport is None or not self._writable.is_set():
            return 0
        try:
            if not data:
                if end:
                    self._h2.send_data(stream_id, b"", end_stream=True)
                    self._flush()
                return 0
            window = self._h2.local_flow_control_window(stream_id)
            if window <= 0:
                return 0
            part = bytes(data[:window])
            # The stream ends with the last of `data`, not with the last the window takes.
            self._queue_frames(
                stream_id, memoryview(part), window, end=end and len(part) == len(data)
            )
        except h2.exceptions.StreamClosedError:
            return len(data)  # reset meanwhile: nobody wants the rest
        self._flush()
        return len(part)

    def acknowledge(self, stream_id: int, length: int) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self._h2.acknowledge_received_data(length, stream_id)
            self._flush()

    def reset(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, code)
        self._flush()


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


def _reopen(path: Path, size: int) -> int:
    """The crate file sent in part before, again; an error if it left the cache since."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConnectionResetError("the crate left the cache mid-answer") from None
    if os.fstat(fd).st_size != size:
        os.close(fd)
        raise ConnectionResetError("the crate changed mid-answer")
    return fd


def _body(prepared: Prepared, gzip: bool) -> bytes:
    return cast(bytes, prepared.gzip_body) if gzip else prepared.body
