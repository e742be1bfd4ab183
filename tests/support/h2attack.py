"""A hostile HTTP/2 client: h2c upgrade, then frames as the test writes them.

Unlike `h2client.H2Client`, it checks nothing it sends and need not read what
it is sent: the frames the server sends are parsed only as far as a test asks
(`frames`, `goaway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.settings

GOAWAY = 0x7
RST_STREAM = 0x3
HEADERS = 0x1
DATA = 0x0
CONTINUATION = 0x9
PING = 0x6
SETTINGS = 0x4
END_STREAM = 0x1
END_HEADERS = 0x4


@dataclass
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def error_code(self) -> int:
        """The error code of a GOAWAY or RST_STREAM frame."""
        offset = 4 if self.kind == GOAWAY else 0
        code: int = struct.unpack(">I", self.payload[offset : offset + 4])[0]
        return code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


class RawH2:
    """One connection; `h2` is a client-side state machine that validates nothing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self._buffer = b""

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        settings: dict[h2.settings.SettingCodes, int] | None = None,
        path: str = "/index/config.json",
    ) -> RawH2:
        """Connect and upgrade with a GET of `path` (stream 1), as curl does."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if settings:  # sent in HTTP2-Settings: in force from the first frame
            client.h2.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        offered = client.h2.initiate_upgrade_connection()
        assert offered is not None
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                f"Upgrade: h2c\r\nHTTP2-Settings: {offered.decode()}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        client.flush()
        return client

    def request(
        self,
        path: bytes,
        *,
        method: bytes = b"GET",
        extra: Iterable[tuple[bytes, bytes]] = (),
        authority: bytes = b"127.0.0.1",
        end: bool = True,
    ) -> int:
        """Queue a request's HEADERS on a new stream; its stream id."""
        stream_id = self.h2.get_next_available_stream_id()
        fields = [
            (b":method", method),
            (b":path", path),
            (b":scheme", b"http"),
            (b":authority", authority),
            *extra,
        ]
        self.h2.send_headers(stream_id, fields, end_stream=end)
        return stream_id

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    async def drain(self) -> None:
        self.flush()
        await self.writer.drain()

    async def frames(self, seconds: float) -> list[Frame]:
        """The frames the server sent within `seconds` (until it closed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        frames: list[Frame] = []
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except (TimeoutError, ConnectionError):
                break
            if not data:
                break
            self._buffer += data
            frames += self._parse()
        return frames

    async def answers(self, seconds: float, *, first: bool = False) -> list[h2.events.Event]:
        """The events of what the server sent within `seconds`, through the client's h2.

        `first`: return after the first read that brought something.
        """
        events: list[h2.events.Event] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:
                break
            if not data:
                break
            for event in self.h2.receive_data(data):
                events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.flush()
            if first:
                break
        return events

    async def until_done(self, stream_id: int, seconds: float = 10.0) -> list[h2.events.Event]:
        """The events read until `stream_id` ended or was reset (or `seconds` passed)."""
        events: list[h2.events.Event] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            got = await self.answers(left, first=True)
            if not got:
                break
            events += got
            if any(
                isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
                and e.stream_id == stream_id
                for e in got
            ):
                break
        return events

    async def goaway(self, seconds: float = 10.0) -> Frame | None:
        """The GOAWAY the server sends within `seconds`, if any."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            for received in await self.frames(min(left, 0.5)):
                if received.kind == GOAWAY:
                    return received
            if self.reader.at_eof():
                return None
        return None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    def _parse(self) -> list[Frame]:
        frames = []
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            kind, flags = self._buffer[3], self._buffer[4]
            stream_id = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
            frames.append(Frame(kind, flags, stream_id, self._buffer[9 : 9 + length]))
            self._buffer = self._buffer[9 + length :]
        return frames


def zero_windows() -> dict[h2.settings.SettingCodes, int]:
    """Settings of a client that lets the server send nothing on a stream."""
    return {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
