"""Clients that stop reading cost the server no CPU while their answers wait.

An answer that waits for a client to read has to wait for an event (the
transport's `resume_writing`, or writability of the socket), not poll: polling
every millisecond, a few such connections held a worker at half a core.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import MirrorClient
from tests.support.crates import CrateSpec, index_path
from tests.support.rawhttp import shrink_server_buffer
from tests.support.upstream import FakeUpstream

CONNECTIONS = 32
#: A crate larger than the memory tier holds in memory (1/16 of it): sent with sendfile.
MEMORY_BYTES = 16 * 2**20


def request(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def stalled_connection(client: MirrorClient, requests: bytes) -> socket.socket:
    """A connection that sends `requests` and never reads, from a server that buffers little."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
    await shrink_server_buffer(sock, socket.SO_SNDBUF, 4096)
    sock.send(requests)
    return sock


@pytest.mark.parametrize("handed_over", [False, True], ids=["fast-lane", "aiohttp"])
async def test_answers_waiting_for_clients_that_do_not_read_cost_no_cpu(
    make_mirror: Callable[..., Any], upstream: FakeUpstream, handed_over: bool
) -> None:
    # An index file answered from memory fills the socket and leaves part of itself in
    # the server's write buffer; the crate after it then waits for that to be written.
    features: dict[str, list[str]] = {f"feature{n}": [] for n in range(400)}
    for minor in range(8):
        upstream.publish(CrateSpec("wide", f"1.{minor}.0", features=features))
    client: MirrorClient = await make_mirror(cache={"memory_bytes": MEMORY_BYTES})
    index = f"/index/{index_path('wide')}"
    download = "/api/v1/crates/bigdata/0.1.0/download"
    for target in (index, download):  # cached and kept: the answers below are hits
        assert (await client.get(target)).status == 200
    first = request("/health") if handed_over else b""
    stalled = [
        await stalled_connection(client, first + request(index) + request(download))
        for _ in range(CONNECTIONS)
    ]
    try:
        await asyncio.sleep(1.0)  # every connection's answers are stuck by now
        before = time.process_time()
        await asyncio.sleep(2.0)
        used = time.process_time() - before
        assert used < 0.1, f"{used:.2f} s of CPU in 2 s while clients did not read"
        assert (await client.get("/index/config.json")).status == 200  # still serving
    finally:
        for sock in stalled:
            sock.close()
