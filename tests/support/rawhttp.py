"""Raw HTTP/1.1 over a socket: send bytes as given, read every answer until the server stops.

For hostile-client tests, where the request may be malformed on purpose and
what matters is exactly what the server sends back (and whether it closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

#: An answer's status line (aiohttp answers HTTP/0.9 and 2.0 requests with their version).
_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})[^\r\n]*\r\n")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked", re.IGNORECASE)


@dataclass(frozen=True)
class Exchange:
    """What the server sent back to one connection."""

    #: Everything received.
    raw: bytes
    #: The server closed the connection (rather than falling quiet).
    closed: bool

    @property
    def statuses(self) -> list[int]:
        return [status for status, _ in answers(self.raw)]

    @property
    def outcome(self) -> tuple[list[int], bool]:
        """What two servers given the same bytes must agree on: the statuses, and closing."""
        return self.statuses, self.closed


async def exchange(
    host: str, port: int, data: bytes, *, quiet: float = 0.3, limit: float = 10.0
) -> Exchange:
    """Send `data` at once, then read until the server closes or sends nothing for `quiet` s."""
    reader, writer = await asyncio.open_connection(host, port)
    received = bytearray()
    closed = False
    try:
        writer.write(data)
        deadline = asyncio.get_running_loop().time() + limit
        while asyncio.get_running_loop().time() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), quiet)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()
    return Exchange(bytes(received), closed)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of the next answer (with a Content-Length) on `reader`."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    [(status, _)] = answers(head)
    length = _CONTENT_LENGTH.search(head)
    size = int(length.group(1)) if length is not None else 0
    return status, await asyncio.wait_for(reader.readexactly(size), 10)


def answers(raw: bytes) -> list[tuple[int, bytes]]:
    """The (status, body) of each HTTP/1 answer in `raw`, in order (up to a 101).

    An answer to HEAD has a Content-Length but no body: a body is taken to be
    absent when the next status line, or nothing, follows the head instead. None
    of the bodies the tests get back starts with a status line.
    """
    found: list[tuple[int, bytes]] = []
    at = 0
    while at < len(raw):
        line = _STATUS_LINE.match(raw, at)
        end = raw.find(b"\r\n\r\n", at)
        if line is None or end < 0:
            raise AssertionError(f"not an HTTP/1 answer at byte {at}: {raw[at : at + 80]!r}")
        status = int(line.group(1))
        head = raw[at : end + 2]
        at = end + 4
        length = _CONTENT_LENGTH.search(head)
        if status in (204, 304) or 100 <= status < 200:
            body = b""
        elif length is not None:
            body = raw[at : at + int(length.group(1))]
            if _STATUS_LINE.match(body):
                body = b""
            at += len(body)
        elif _CHUNKED.search(head):
            body, at = _dechunk(raw, at)
        else:  # until the connection closed
            body, at = raw[at:], len(raw)
        found.append((status, body))
        if status == 101:
            break  # another protocol from here on
    return found


def _dechunk(raw: bytes, at: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end].split(b";")[0], 16)
        at = end + 2
        body += raw[at : at + size]
        at += size + 2
        if size == 0:
            return bytes(body), at


async def shrink_server_buffer(client: socket.socket, option: int, size: int) -> None:
    """Give the server's end of `client`'s connection a small kernel buffer.

    `option` is SO_SNDBUF or SO_RCVBUF. The server must run in this process: its
    end is found among this process's descriptors once it has accepted the
    connection. With small buffers, what a client sends or does not read stays in
    the server's own buffers after a few KiB (as across a real network), not after
    the megabytes that loopback takes.
    """
    wanted = client.getsockname()
    for _ in range(100):
        if _set_buffer(wanted, option, size):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the server never accepted {wanted}")


def _set_buffer(peer: tuple[str, int], option: int, size: int) -> bool:
    """Set `option` on this process's socket connected to `peer`; False if there is none."""
    for entry in Path("/proc/self/fd").iterdir():
        try:
            copy = os.dup(int(entry.name))
        except OSError:  # closed since listed
            continue
        try:
            candidate = socket.socket(fileno=copy)
        except OSError:  # not a socket
            os.close(copy)
            continue
        with candidate:
            try:
                connected = candidate.getpeername() == peer
            except OSError:
                continue
            if connected:
                candidate.setsockopt(socket.SOL_SOCKET, option, size)
                return True
    return False
