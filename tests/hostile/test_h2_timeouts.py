"""Streams that cannot send are not kept for ever (nginx's send_timeout and proxy_read_timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import h2.events
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from ghostcrate.appliance import h2limits, h2relay
from tests.hostile.test_h2_relay import answers_of
from tests.support.h2attack import RawH2, zero_windows

MakeMirror = Callable[..., Any]


@pytest.mark.parametrize("path", [b"/api/v1/crates/bigdata/0.1.0/download", b"/metrics"])
async def test_a_stream_at_a_zero_window_is_reset_after_the_send_timeout(
    make_mirror: MakeMirror, monkeypatch: pytest.MonkeyPatch, path: bytes
) -> None:
    monkeypatch.setattr(h2limits, "SEND_TIMEOUT", 0.5)
    monkeypatch.setattr(h2relay, "RELAY_TIMEOUT", 0.5)
    mirror = await make_mirror()
    client = await RawH2.connect(mirror.port, settings=zero_windows())
    try:
        started = time.monotonic()
        stream_id = client.request(path)
        await client.drain()
        events: list[h2.events.Event] = []
        while answers_of(events, stream_id)[2] is None and time.monotonic() - started < 5:
            events += await client.answers(0.1)
        assert answers_of(events, stream_id)[2] == ErrorCodes.CANCEL
        assert time.monotonic() - started < 2.0
        # The connection goes on: a client that opens its windows is answered.
        client.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        again = client.request(b"/index/config.json")
        await client.drain()
        assert answers_of(await client.answers(1), again)[0] == 200
    finally:
        await client.close()


async def test_a_connection_whose_socket_takes_nothing_is_closed(
    make_mirror: MakeMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h2limits, "SEND_TIMEOUT", 0.5)
    mirror = await make_mirror()
    client = await RawH2.connect(
        mirror.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1}
    )
    client.h2.increment_flow_control_window(2**30)
    for _ in range(20):  # 60 MB of crates into a socket nobody reads
        client.request(b"/api/v1/crates/bigdata/0.1.0/download")
    await client.drain()
    await asyncio.sleep(2.5)
    # Gone: what is read now ends with the server's close (a timeout here fails the test).
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(client.reader.read(2**20), 5):
            pass
    await client.close()
