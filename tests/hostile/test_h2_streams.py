"""One bad HTTP/2 stream is that stream's problem: its siblings and the connection go on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h2.events
from h2.errors import ErrorCodes

from tests.hostile.conftest import Target
from tests.hostile.test_h2_relay import answers_of
from tests.support.h2attack import RawH2

MakeTarget = Callable[..., Target]


async def test_headers_and_reset_of_a_hot_reply_in_one_read(target: MakeTarget) -> None:
    served = target()
    client = await RawH2.connect(served.port)
    try:
        await client.answers(0.5)  # the upgrade's answer: the index file is hot now
        gone = client.request(served.path.encode())
        client.h2.reset_stream(gone)
        sibling = client.request(served.path.encode())
        await client.drain()  # HEADERS, RST_STREAM, HEADERS in one write
        events = await client.answers(2)
    finally:
        await client.close()
    assert answers_of(events, sibling)[0] == 200
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    served.assert_no_traceback()


async def test_a_malformed_request_resets_its_stream_only(target: MakeTarget) -> None:
    served = target()
    client = await RawH2.connect(served.port)
    try:
        upper = client.request(served.path.encode(), extra=[(b"X-Upper", b"1")])
        connection = client.request(served.path.encode(), extra=[(b"connection", b"close")])
        short = client.request(
            b"/health", method=b"POST", extra=[(b"content-length", b"10")], end=False
        )
        client.h2.send_data(short, b"12345", end_stream=True)
        sibling = client.request(served.path.encode())
        await client.drain()
        events = await client.answers(2)
    finally:
        await client.close()
    for stream_id in (upper, connection, short):
        assert answers_of(events, stream_id)[2] == ErrorCodes.PROTOCOL_ERROR, stream_id
    assert answers_of(events, sibling)[0] == 200
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    served.assert_no_traceback()


async def test_a_malformed_http2_settings_header_gets_an_http_1_1_answer(
    target: MakeTarget,
) -> None:
    served = target()
    # Not base64; a window over 2**31-1; ENABLE_PUSH=2; a partial setting; padding only.
    for settings in ("!!!not-base64!!!", "AAT_____", "AAIAAAAC", "AAMAAAB", "=" * 10):
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            (
                f"GET {served.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                f"HTTP2-Settings: {settings}\r\n\r\n"
            ).encode()
        )
        status_line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status_line.startswith(b"HTTP/1.1 "), (settings, status_line)
        assert b" 101 " not in status_line, settings
    served.assert_no_traceback()


async def test_an_if_modified_since_with_a_huge_zone_is_answered(target: MakeTarget) -> None:
    served = target()
    client = await RawH2.connect(served.port)
    try:
        odd = client.request(
            served.path.encode(),
            extra=[(b"if-modified-since", b"Mon, 01 Jan 2024 00:00:00 +99999999999999999999")],
        )
        sibling = client.request(served.path.encode())
        await client.drain()
        events = await client.answers(2)
    finally:
        await client.close()
    assert answers_of(events, odd)[0] == 200  # a date that is not one is ignored
    assert answers_of(events, sibling)[0] == 200
    served.assert_no_traceback()
