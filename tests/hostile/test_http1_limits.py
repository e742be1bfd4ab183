"""What a hostile HTTP/1.1 client can make the fast lane hold: memory, time, buffers.

- Distinct heads do not grow the memo of seen heads past its bound in bytes.
- A head that never completes is closed after the header timeout (nginx's
  `client_header_timeout`); an idle keep-alive connection is not.
- A pipelining flood behind a slow answer is not read past `MAX_PENDING_BYTES`.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from ghostcrate.appliance import fastlane
from ghostcrate.appliance.fastlane import Request
from tests.conftest import MirrorClient
from tests.support.crates import index_path
from tests.support.rawhttp import answers, read_answer, shrink_server_buffer
from tests.support.twins import lane_of
from tests.support.upstream import FakeUpstream

MakeMirror = Callable[..., Any]
INDEX = f"/index/{index_path('abc')}"


def padded(number: int, size: int) -> bytes:
    """A distinct request head for the index file of `abc`, `size` bytes long."""
    start = f"GET {INDEX} HTTP/1.1\r\nHost: x\r\nX-Pad: {number:06d}".encode()
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def footprint(heads: dict[bytes, Request]) -> int:
    """The memory a memo of heads holds: keys, requests, their fields and strings."""
    total = sys.getsizeof(heads)
    for head, request in heads.items():
        total += sys.getsizeof(head) + sys.getsizeof(request) + sys.getsizeof(request.headers)
        total += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in request.headers.items())
        total += sum(
            sys.getsizeof(value)
            for value in (request.target, request.path, request.agent, request.request_id)
        )
    return total


async def send_all(client: MirrorClient, heads: list[bytes], body: bytes, batch: int = 50) -> None:
    """Send `heads` pipelined in batches on one connection; each must get `body` in a 200."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    for start in range(0, len(heads), batch):
        chunk = heads[start : start + batch]
        writer.write(b"".join(chunk))
        received = b""
        while received.count(b"HTTP/1.1 ") < len(chunk) or not received.endswith(body):
            received += await asyncio.wait_for(reader.read(1 << 20), 10)
        assert answers(received) == [(200, body)] * len(chunk)
    writer.close()
    await writer.wait_closed()


async def test_distinct_heads_do_not_grow_the_memo_past_its_bound(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    body = upstream.registry.index_file("abc")
    assert body is not None
    assert await (await client.get(INDEX)).read() == body
    lane = lane_of(client.server)
    before = footprint(lane.heads)
    # Long heads (under the 8 KiB limit, so answered): none is remembered.
    await send_all(client, [padded(n, 7 * 1024) for n in range(2000)], body)
    assert footprint(lane.heads) == before
    # Heads short enough to remember, more than the memo holds: the older half goes.
    await send_all(client, [padded(n, 2000) for n in range(2000)], body)
    assert 1000 < len(lane.heads) < 2000
    assert lane.heads_bytes <= fastlane.MAX_HEADS_BYTES
    assert footprint(lane.heads) <= lane.heads_bytes  # what is counted is what is held
    assert lane.heads_bytes == sum(fastlane.memo_cost(head) for head in lane.heads)


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> float:
    """Read until the server closes; the seconds that took."""
    started = time.monotonic()
    while await asyncio.wait_for(reader.read(65536), within):
        pass
    return time.monotonic() - started


async def test_a_head_that_never_completes_is_closed_after_the_header_timeout(
    make_mirror: MakeMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastlane, "HEADER_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(fastlane, "SWEEP_SECONDS", 0.05)
    client: MirrorClient = await make_mirror()
    silent = await asyncio.open_connection(client.host, client.port)  # sends nothing
    trickling = await asyncio.open_connection(client.host, client.port)
    idle = await asyncio.open_connection(client.host, client.port)
    idle[1].write(f"GET {INDEX} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (await read_answer(idle[0]))[0] == 200

    async def trickle() -> None:
        for byte in f"GET {INDEX} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode():
            trickling[1].write(bytes([byte]))
            await asyncio.sleep(0.02)
            if trickling[0].at_eof():
                return

    trickler = asyncio.create_task(trickle())
    for reader in (silent[0], trickling[0]):
        assert await read_until_closed(reader, 3) < 1.5
    trickler.cancel()
    # A keep-alive connection that finished its request waits for the next one as long
    # as nginx's keepalive_timeout (75 s), not the header timeout.
    await asyncio.sleep(1.0)
    idle[1].write(f"GET {INDEX} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (await read_answer(idle[0]))[0] == 200
    for _, writer in (silent, trickling, idle):
        writer.close()


async def test_a_pipelining_flood_behind_a_slow_answer_is_not_read_past_the_limit(
    make_mirror: MakeMirror, upstream: FakeUpstream
) -> None:
    client: MirrorClient = await make_mirror()
    assert (await client.get(INDEX)).status == 200  # a hit: what the flood asks for
    upstream.set_latency(1.0, scope="index")
    slow = f"GET /index/{index_path('multi')} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    flood = f"GET {INDEX} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * (8 * 2**20 // 40)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (client.host, client.port))
    await shrink_server_buffer(sock, socket.SO_RCVBUF, 64 * 1024)
    data = memoryview(slow + flood)
    sent = 0
    deadline = loop.time() + 0.5  # well before the slow answer
    while loop.time() < deadline and sent < len(data):
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            await asyncio.sleep(0.01)
    # Taken in: the fast lane's buffer (MAX_PENDING_BYTES, plus the read that went over
    # it) and what the kernel holds on both sides; nowhere near the 8 MiB sent.
    assert sent < fastlane.MAX_PENDING_BYTES + 2**20
    first = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
    assert first.startswith(b"HTTP/1.1 200 ")  # the slow answer, then the flood's
    sock.close()
