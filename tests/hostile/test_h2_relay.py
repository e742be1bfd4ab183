"""HTTP/2 requests the lane does not answer itself reach aiohttp in this process, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import h2.events
import h2.exceptions
import pytest
from h2.errors import ErrorCodes

from tests.hostile.conftest import Target
from tests.support.h2attack import RawH2, zero_windows

MakeTarget = Callable[..., Target]


class Canary:
    """A server on 127.0.0.1 that nobody should reach through the appliance."""

    def __init__(self) -> None:
        self.hits: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits.append(await reader.read(4096))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        await writer.drain()
        writer.close()


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    found = Canary()
    server = await asyncio.start_server(found.handle, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    async with server:
        yield found


def answers_of(events: list[h2.events.Event], stream_id: int) -> tuple[int, bytes, int | None]:
    """Status, body and reset code of one stream."""
    status, body, reset = 0, b"", None
    for event in events:
        if getattr(event, "stream_id", None) != stream_id:
            continue
        if isinstance(event, h2.events.ResponseReceived):
            status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            body += event.data
        elif isinstance(event, h2.events.StreamReset):
            reset = event.error_code
    return status, body, reset


async def test_the_relay_reaches_no_other_host(target: MakeTarget, canary: Canary) -> None:
    served = target()
    elsewhere = f"127.0.0.1:{canary.port}".encode()
    tricks = [
        b"@" + elsewhere + b"/secret",
        b"http://" + elsewhere + b"/secret",
        b"//" + elsewhere + b"/secret",
        b"secret",
        b"*",
        b"/health HTTP/1.1\r\nHost: x",
        b"/he alth",
        b"",
    ]
    client = await RawH2.connect(served.port)
    try:
        tricked = [client.request(path) for path in tricks]
        via_authority = client.request(b"/health", authority=elsewhere)
        connect = client.request(b"/", method=b"CONNECT", authority=elsewhere)
        await client.drain()
        events = await client.answers(3)
    finally:
        await client.close()
    for stream_id, path in zip(tricked, tricks, strict=True):
        status, _, reset = answers_of(events, stream_id)
        assert reset == ErrorCodes.PROTOCOL_ERROR or 400 <= status < 500, (path, status, reset)
    assert answers_of(events, connect)[2] == ErrorCodes.PROTOCOL_ERROR
    status, body, _ = answers_of(events, via_authority)
    assert status == 200
    assert b'"ok"' in body  # this server's /health: :authority only named the Host
    assert canary.hits == []
    served.assert_no_traceback()


async def pour(client: RawH2, stream_id: int, total: int) -> list[h2.events.Event]:
    """Send up to `total` body bytes as the server's windows allow; what it answered."""
    chunk = b"x" * 16384
    sent = 0
    events: list[h2.events.Event] = []
    with contextlib.suppress(h2.exceptions.StreamClosedError):
        while sent < total:
            if client.h2.local_flow_control_window(stream_id) < len(chunk):
                got = await client.answers(2.0, first=True)  # WINDOW_UPDATEs, say
                if not got:
                    break  # it takes no more
                events += got
                continue
            client.h2.send_data(stream_id, chunk)
            sent += len(chunk)
            await client.drain()
    return events + await client.answers(1.0)


async def test_relayed_request_bodies_are_streamed_under_flow_control(target: MakeTarget) -> None:
    served = target()
    with served.bystanders() as watch:
        clients = [await RawH2.connect(served.port) for _ in range(4)]
        streams = [c.request(b"/health", method=b"POST", end=False) for c in clients]
        answered = await asyncio.gather(
            *(pour(c, s, 60 * 2**20) for c, s in zip(clients, streams, strict=True))
        )
        for client in clients:
            await client.close()
    watch.check()  # memory included: four bodies of 60 MiB were not kept
    for events, stream_id in zip(answered, streams, strict=True):
        assert answers_of(events, stream_id)[0] == 405  # aiohttp's answer, relayed
    served.assert_no_traceback()


async def test_an_announced_body_over_the_limit_is_refused_with_413(target: MakeTarget) -> None:
    served = target()
    client = await RawH2.connect(served.port)
    try:
        stream_id = client.request(
            b"/health",
            method=b"PUT",
            extra=[(b"content-length", b"%d" % (65 * 2**20))],
            end=False,
        )
        await client.drain()
        status, body, _ = answers_of(await client.answers(2), stream_id)
    finally:
        await client.close()
    assert status == 413
    assert b"larger than" in body


async def test_relayed_streams_per_connection_are_capped(target: MakeTarget) -> None:
    served = target()
    # A client that lets nothing be sent keeps its relayed answers (/metrics) waiting.
    client = await RawH2.connect(served.port, settings=zero_windows())
    try:
        with served.bystanders() as watch:
            stuck = [client.request(b"/metrics") for _ in range(12)]
            await client.drain()
            events = await client.answers(2)
        resets = {s: answers_of(events, s)[2] for s in stuck}
        refused = [s for s, code in resets.items() if code == ErrorCodes.REFUSED_STREAM]
        assert len(refused) == 12 - 8, resets
    finally:
        await client.close()
    watch.check()
