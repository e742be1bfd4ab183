"""An HTTPS front that speaks only HTTP/2 (ALPN `h2`), as crates.io's CDN does.

It relays each GET to a backend (the fake upstream) over HTTP/1.1 and sends the
answer back under HTTP/2 flow control. It counts connections and streams, and
can misbehave on purpose: send GOAWAY after some streams, compress index files
itself, or cut a connection in the middle of a body.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from typing import Self

import aiohttp
import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tests.support.tls import TestPKI

RELAYED = ("if-none-match", "if-modified-since", "user-agent", "accept-encoding")


class H2Front:
    def __init__(self, backend: str, pki: TestPKI) -> None:
        self.backend = backend.rstrip("/")
        self._context = pki.server_context()
        self._context.set_alpn_protocols(["h2"])
        #: GOAWAY after this many streams on a connection (the later ones are refused).
        self.goaway_after: int | None = None
        #: Hold that GOAWAY back and send it in one write with the last stream's answer.
        self.goaway_with_answer = False
        #: Compress bodies itself for clients that accept gzip.
        self.gzip = False
        #: Close the connection after this many body bytes of a response.
        self.cut_after: int | None = None
        self.connections = 0
        self.streams = 0
        #: The ALPN protocol each connection chose (None: the client offered no h2).
        self.protocols: list[str | None] = []
        self.user_agents: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._open: set[_FrontConnection] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def __enter__(self) -> Self:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                loop.create_server(
                    lambda: _FrontConnection(self), "127.0.0.1", 0, ssl=self._context
                )
            )
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="H2Front", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the HTTP/2 front did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for connection in list(self._open):
                connection.abort()
            # Relays still asking the backend end here, not when the closed loop is
            # collected (which left their client connections open and warned).
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await asyncio.sleep(0.1)  # the transports they closed finish closing
            loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), loop)
        thread.join(10)
        loop.close()


class _FrontConnection(asyncio.Protocol):
    def __init__(self, front: H2Front) -> None:
        self._front = front
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._transport: asyncio.Transport | None = None
        self._window_opened = asyncio.Event()
        self._streams = 0
        self._going_away = False
        #: The stream whose answer carries the held-back GOAWAY.
        self._goaway_held: int | None = None
        self._relays: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._front.connections += 1
        self._front._open.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        self._front.protocols.append(ssl_object.selected_alpn_protocol() if ssl_object else None)
        self._h2.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._front._open.discard(self)
        self._window_opened.set()
        for task in self._relays:
            task.cancel()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event)
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_opened.set()
        self._flush()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self._going_away:
            return  # above the GOAWAY's last stream id: never processed
        self._streams += 1
        self._front.streams += 1
        headers = {str(k): str(v) for k, v in event.headers or ()}
        self._front.user_agents.add(headers.get("user-agent", ""))
        limit = self._front.goaway_after
        if limit is not None and self._streams >= limit:
            self._going_away = True
            if self._front.goaway_with_answer:
                self._goaway_held = stream_id
            else:
                self._goaway(stream_id)
        task = asyncio.ensure_future(self._relay(stream_id, headers))
        self._relays.add(task)
        task.add_done_callback(self._relayed)

    def _goaway(self, last_stream_id: int) -> None:
        """Drain as nginx does: GOAWAY now, finish the streams it covers, then close."""
        self._h2.close_connection(last_stream_id=last_stream_id)
        self._h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN

    def _relayed(self, task: asyncio.Task[None]) -> None:
        self._relays.discard(task)
        if self._going_away and not self._relays and self._transport is not None:
            self._transport.close()

    async def _relay(self, stream_id: int, headers: dict[str, str]) -> None:
        sent = {k: v for k, v in headers.items() if k in RELAYED and k != "accept-encoding"}
        url = self._front.backend + headers[":path"]
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.get(url, headers=sent) as answer,
        ):
            body = await answer.read()
            fields = [(":status", str(answer.status))]
            for name in ("content-type", "etag", "last-modified", "cache-control"):
                if name in answer.headers:
                    fields.append((name, answer.headers[name]))
        accepts = "gzip" in headers.get("accept-encoding", "")
        if self._front.gzip and accepts and headers[":path"].startswith("/index/") and body:
            body = gzip.compress(body)
            fields.append(("content-encoding", "gzip"))
        fields.append(("content-length", str(len(body))))
        if self._transport is None:
            return
        if self._goaway_held == stream_id:
            self._goaway(stream_id)
        self._h2.send_headers(stream_id, fields, end_stream=not body)
        self._flush()
        await self._send_body(stream_id, body)

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        sent = 0
        while sent < len(body):
            if self._transport is None:
                return
            cut = self._front.cut_after
            if cut is not None and sent >= cut:
                self._transport.close()
                return
            window = min(
                self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
            )
            if window <= 0:
                self._window_opened.clear()
                await self._window_opened.wait()
                continue
            chunk = body[sent : sent + window]
            if cut is not None:
                chunk = chunk[: max(1, cut - sent)]
            sent += len(chunk)
            self._h2.send_data(stream_id, chunk, end_stream=sent == len(body))
            self._flush()
            await asyncio.sleep(0)

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)
