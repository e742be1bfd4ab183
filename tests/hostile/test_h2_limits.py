"""HTTP/2 clients that abuse the protocol: each is stopped, and nobody else notices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import h2.settings
import hpack
import pytest
from h2.errors import ErrorCodes

from ghostcrate.appliance import lanelog
from tests.hostile.conftest import Target
from tests.support.h2attack import (
    CONTINUATION,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    SETTINGS,
    Frame,
    RawH2,
    frame,
    zero_windows,
)

MakeTarget = Callable[..., Target]
ATTACK_SECONDS = 3.0
LANE_LOGGERS = ("ghostcrate.appliance.h2lane", "ghostcrate.appliance.fastlane")


async def keep_attacking(
    port: int,
    attack: Callable[[RawH2], Coroutine[Any, Any, None]],
    *,
    connections: int = 4,
    seconds: float = ATTACK_SECONDS,
    settings: dict[h2.settings.SettingCodes, int] | None = None,
    reading: bool = True,
) -> Counter[int]:
    """Run `attack` on `connections` connections at once, reconnecting, for `seconds`.

    `reading`: the client reads what the server sends (and stops at a GOAWAY); else it
    never reads. Returns how often each GOAWAY error code ended a connection.
    """
    codes: Counter[int] = Counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def one() -> None:
        while (left := deadline - loop.time()) > 0:
            try:
                client = await RawH2.connect(port, settings=settings)
            except ConnectionError:
                continue
            attacking = asyncio.create_task(attack(client))
            waiting: set[asyncio.Task[Any]] = {attacking}
            if reading:
                waiting.add(asyncio.create_task(client.goaway(left)))
            done, pending = await asyncio.wait(
                waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            for task in done:
                result = task.exception() or task.result()
                if isinstance(result, Frame):
                    codes[result.error_code] += 1
            await client.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return codes


def open_files(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def client_time() -> float:
    return asyncio.get_running_loop().time()


async def until_closed(client: RawH2, writes: Callable[[], bytes]) -> None:
    """Write what `writes` makes, again and again, until the server stops taking it."""
    with contextlib.suppress(ConnectionError):
        while True:
            client.writer.write(writes())
            await client.writer.drain()
            await asyncio.sleep(0)


def assert_quiet_log(target: Target) -> None:
    """No tracebacks, and the lanes' lines at their bounded rate (`lanelog.PER_SECOND`).

    A line may carry the next second's timestamp from the one it was counted in: one
    more in a second is that boundary, not the limit failing.
    """
    target.assert_no_traceback()
    per_second: Counter[tuple[int, str]] = Counter()
    for line in target.log_lines():
        if line.startswith("{"):
            fields = json.loads(line)
            if fields["logger"] in LANE_LOGGERS:
                per_second[fields["pid"], fields["ts"][:19]] += 1
    assert max(per_second.values(), default=0) <= lanelog.PER_SECOND + 1, per_second.most_common(3)


@pytest.mark.parametrize("workers", [1, 2])
async def test_rapid_reset_is_calmed_and_others_are_served(
    target: MakeTarget, workers: int
) -> None:
    served = target(workers=workers)
    paths = [b"/metrics", b"/no/such/route", b"/index/ra/nd/random"]

    async def rapid_reset(client: RawH2) -> None:
        def resets() -> bytes:
            for _ in range(50):
                path = random.choice(paths)
                if path.startswith(b"/index"):
                    path += b"%d" % random.randrange(10**9)
                client.h2.reset_stream(client.request(path))
            return client.h2.data_to_send()

        await until_closed(client, resets)

    with served.bystanders() as watch:
        codes = await keep_attacking(served.port, rapid_reset)
    watch.check()
    assert codes[ErrorCodes.ENHANCE_YOUR_CALM] >= 4, codes
    assert_quiet_log(served)


@pytest.mark.parametrize("flood", ["304", "ping", "settings", "crates"])
async def test_a_client_that_never_reads_is_held_to_its_buffer(
    target: MakeTarget, flood: str
) -> None:
    served = target()
    etag = await asyncio.to_thread(_etag_of, served)
    big = {
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: 2**24 - 1,
    }

    def writes(client: RawH2) -> bytes:
        if flood == "304":
            for _ in range(20):
                client.request(served.path.encode(), extra=[(b"if-none-match", etag)])
            return client.h2.data_to_send()
        if flood == "ping":
            return frame(PING, 0, 0, os.urandom(8)) * 50
        if flood == "settings":
            return frame(SETTINGS, 0, 0) * 50
        client.h2.increment_flow_control_window(2**30)
        for _ in range(20):
            client.request(b"/api/v1/crates/bigdata/0.1.0/download")
        return client.h2.data_to_send()

    async def never_read(client: RawH2) -> None:
        await until_closed(client, lambda: writes(client))

    with served.bystanders() as watch:
        settings = big if flood == "crates" else None
        await keep_attacking(served.port, never_read, settings=settings, reading=False)
    watch.check()
    assert_quiet_log(served)


def _etag_of(target: Target) -> bytes:
    with urllib.request.urlopen(target.appliance.url + target.path, timeout=10) as response:
        etag: str = response.headers["ETag"]
    return etag.encode()


async def test_streams_at_a_zero_window_hold_no_files(target: MakeTarget) -> None:
    served = target()
    (pid,) = served.pids()
    before = open_files(pid)
    clients = [await RawH2.connect(served.port, settings=zero_windows()) for _ in range(8)]
    try:
        with served.bystanders() as watch:
            for client in clients:
                for _ in range(99):
                    client.request(b"/api/v1/crates/bigdata/0.1.0/download")
                await client.drain()
            await asyncio.sleep(1.5)
            during = open_files(pid)
    finally:
        for client in clients:
            await client.close()
    watch.check()
    # Eight client sockets and the bystanders' two; none of the 792 crate files.
    assert during - before < 20, f"{during - before} more descriptors"


async def test_hpack_bombs_end_the_connection(target: MakeTarget) -> None:
    served = target()

    async def bomb(client: RawH2) -> None:
        encoder = hpack.Encoder()
        fields = [
            (b":method", b"GET"),
            (b":path", b"/index/config.json"),
            (b":scheme", b"http"),
            (b":authority", b"127.0.0.1"),
        ]
        # A 4 KB field into the dynamic table, then referred to 1,000 times (2 bytes each).
        block = encoder.encode(
            [*fields, (b"x-bomb", b"a" * 4000)] + [(b"x-bomb", b"a" * 4000)] * 1000
        )
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.highest_outbound_stream_id = stream_id
        client.writer.write(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block))
        await client.writer.drain()
        await client.goaway(5)

    with served.bystanders() as watch:
        codes = await keep_attacking(served.port, bomb)
    watch.check()
    assert codes, "no GOAWAY"
    assert set(codes) <= {ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.COMPRESSION_ERROR}, codes
    assert_quiet_log(served)


async def test_continuation_floods_end_the_connection(target: MakeTarget) -> None:
    served = target()

    async def flood(client: RawH2) -> None:
        block = hpack.Encoder().encode(
            [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http")]
        )
        client.writer.write(frame(HEADERS, 0, 1 + 2, block))
        junk = frame(CONTINUATION, 0, 3, b"\x40\x01x\x01y" * 3000)
        await until_closed(client, lambda: junk * 4)

    with served.bystanders() as watch:
        codes = await keep_attacking(served.port, flood)
    watch.check()
    assert codes, "no GOAWAY"
    assert_quiet_log(served)


def a_miss() -> bytes:
    """A missing index file: its stream stays open while the mirror asks the upstream."""
    return b"/index/ma/ny/many%d" % random.randrange(10**9)


def not_relayable() -> bytes:
    """Not origin-form: refused at once with PROTOCOL_ERROR."""
    return b"@127.0.0.1:1/x"


@pytest.mark.parametrize("path", [a_miss, not_relayable])
async def test_streams_refused_in_bulk_are_calmed(
    target: MakeTarget, path: Callable[[], bytes]
) -> None:
    served = target()

    async def open_many(client: RawH2) -> None:
        def requests() -> bytes:
            for _ in range(200):  # over the concurrent limit, or each refused
                client.request(path())
            return client.h2.data_to_send()

        await until_closed(client, requests)

    with served.bystanders() as watch:
        codes = await keep_attacking(served.port, open_many, connections=2)
    watch.check()
    assert codes[ErrorCodes.ENHANCE_YOUR_CALM] >= 2, codes
    assert_quiet_log(served)
