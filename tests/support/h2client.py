"""A small HTTP/2 client that starts the way cargo (curl) does over http://: an h2c upgrade."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings


@dataclass
class H2Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    reset: bool = False
    error_code: int | None = None


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._answers: dict[int, H2Answer] = {}
        self._done: dict[int, asyncio.Future[H2Answer]] = {}
        self._reading: asyncio.Task[None] | None = None
        #: The status line of the answer to the upgrade request.
        self.switched = b""
        self.early_answers: list[asyncio.Future[H2Answer]] = []

    @classmethod
    async def upgrade(
        cls,
        host: str,
        port: int | None,
        path: str,
        headers: tuple[str, ...] = (),
        *,
        early: tuple[str, ...] = (),
    ) -> tuple[H2Client, H2Answer]:
        """Connect, ask for h2c with a GET of `path`, and return its answer (stream 1).

        `early`: paths also asked for right after the 101, before any of the server's
        frames is read (as curl does); their answers come in `early_answers`.
        """
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        settings = client._h2.initiate_upgrade_connection()
        assert settings is not None  # the client side gets the HTTP2-Settings value
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c",
            f"HTTP2-Settings: {settings.decode()}",
            *headers,
            "",
            "",
        ]
        writer.write("\r\n".join(lines).encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        client.switched = head.split(b"\r\n", 1)[0]
        if b" 101 " not in client.switched:
            writer.close()
            await writer.wait_closed()
            raise ConnectionError(f"no upgrade: {head!r}")
        client._done[1] = asyncio.get_running_loop().create_future()
        client._answers[1] = H2Answer()
        client.early_answers = [client.send("GET", early_path) for early_path in early]
        client._flush()
        client._reading = asyncio.create_task(client._read())
        return client, await asyncio.wait_for(client._done[1], 15)

    def widen_windows(self, stream: int, connection: int) -> None:
        """Advertise flow-control windows as large as curl's (cargo's): per stream and in all."""
        self._h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream})
        self._h2.increment_flow_control_window(connection - self._h2.inbound_flow_control_window)
        self._flush()

    async def get(self, path: str, *headers: tuple[str, str]) -> H2Answer:
        return (await self.get_many([path], *headers))[0]

    async def get_many(self, paths: list[str], *headers: tuple[str, str]) -> list[H2Answer]:
        """GET every path at once, each on its own stream."""
        futures = [self.send("GET", path, *headers) for path in paths]
        self._flush()
        return list(await asyncio.wait_for(asyncio.gather(*futures), 30))

    def send(
        self, method: str, path: str, *headers: tuple[str, str], body: bytes = b""
    ) -> asyncio.Future[H2Answer]:
        stream_id = self._h2.get_next_available_stream_id()
        fields = [
            (":method", method),
            (":path", path),
            (":scheme", "http"),
            (":authority", "127.0.0.1"),
            *headers,
        ]
        encoded = [(name.encode(), value.encode()) for name, value in fields]
        self._h2.send_headers(stream_id, encoded, end_stream=not body)
        frame = self._h2.max_outbound_frame_size  # a body within the window, in frames
        for start in range(0, len(body), frame):
            last = start + frame >= len(body)
            self._h2.send_data(stream_id, body[start : start + frame], end_stream=last)
        self._answers[stream_id] = H2Answer()
        future: asyncio.Future[H2Answer] = asyncio.get_running_loop().create_future()
        self._done[stream_id] = future
        self._flush()
        return future

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def _read(self) -> None:
        while True:
            data = await self._reader.read(65536)
            if not data:
                for future in self._done.values():
                    if not future.done():
                        future.set_exception(ConnectionError("closed"))
                return
            for event in self._h2.receive_data(data):
                self._event(event)
            self._flush()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            answer = self._answers[event.stream_id]
            for name, value in event.headers:
                if name == b":status":
                    answer.status = int(value)
                else:
                    answer.headers[name.decode()] = value.decode()
        elif isinstance(event, h2.events.DataReceived):
            self._answers[event.stream_id].body.extend(event.data)
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._done[event.stream_id].set_result(self._answers[event.stream_id])
        elif isinstance(event, h2.events.StreamReset):
            self._answers[event.stream_id].reset = True
            self._answers[event.stream_id].error_code = event.error_code
            self._done[event.stream_id].set_result(self._answers[event.stream_id])

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data:
            self._writer.write(data)
