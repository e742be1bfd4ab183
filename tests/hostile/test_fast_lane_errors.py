"""A request that fails in the fast lane is answered and logged in one line, never dropped.

The failures are injected into the fast lane's own functions (nothing a client
sends makes them fail today); the server, its sockets and its client are real.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest

from ghostcrate.appliance import fastlane, lanelog
from ghostcrate.appliance.fastlane import FastLane, Request
from ghostcrate.appliance.hotset import Prepared
from ghostcrate.appliance.replies import MirrorReplies
from tests.conftest import MirrorClient
from tests.support.crates import index_path
from tests.support.metrics import client_metric
from tests.support.rawhttp import answers, read_answer, shrink_server_buffer

MakeMirror = Callable[..., Any]
INDEX = f"/index/{index_path('abc')}"
DOWNLOAD = "/api/v1/crates/bigdata/0.1.0/download"


def get(target: str = INDEX, *fields: str) -> bytes:
    return "\r\n".join([f"GET {target} HTTP/1.1", "Host: x", *fields, "", ""]).encode()


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == fastlane.__name__ and r.msg == "request failed"]


@pytest.fixture
def boom_on_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests with an `X-Boom` field fail while their answer is chosen."""
    choose = Request.choose

    def failing(self: Request, prepared: Prepared) -> tuple[int, bool]:
        if b"x-boom" in self.headers:
            raise RuntimeError("boom")
        return choose(self, prepared)

    monkeypatch.setattr(Request, "choose", failing)


@pytest.mark.usefixtures("boom_on_choose")
async def test_a_request_that_fails_gets_a_500_in_cargo_format_and_the_connection_goes_on(
    make_mirror: MakeMirror, caplog: pytest.LogCaptureFixture
) -> None:
    client: MirrorClient = await make_mirror()
    caplog.set_level(logging.ERROR, logger=fastlane.__name__)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(get(INDEX, "X-Request-Id: failing-1", "X-Boom: 1"))
    status, body = await read_answer(reader)
    assert status == 500
    detail = json.loads(body)["errors"][0]["detail"]
    assert "failing-1" in detail
    writer.write(get(INDEX))  # the same connection answers the next request
    assert (await read_answer(reader))[0] == 200
    writer.close()
    [record] = failures(caplog)
    assert record.exc_info is None  # one line, no traceback
    assert record.__dict__["error"] == "RuntimeError: boom"
    assert record.__dict__["where"].startswith("test_fast_lane_errors.py:")
    assert record.__dict__["path"] == INDEX
    assert record.__dict__["request_id"] == "failing-1"
    assert record.__dict__["remote"] == "127.0.0.1"
    assert await client_metric(client, "ghostcrate_fast_lane_requests_total", result="error") == 1


@pytest.mark.usefixtures("boom_on_choose")
async def test_a_flood_of_failing_requests_logs_a_few_lines_and_counts_the_rest(
    make_mirror: MakeMirror, caplog: pytest.LogCaptureFixture
) -> None:
    client: MirrorClient = await make_mirror()
    caplog.set_level(logging.ERROR, logger=fastlane.__name__)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(get(INDEX, "X-Boom: 1") * 50)
    for _ in range(50):
        assert (await read_answer(reader))[0] == 500
    await asyncio.sleep(1.1)  # a second later, the next line says how many were left out
    writer.write(get(INDEX, "X-Boom: 1"))
    assert (await read_answer(reader))[0] == 500
    writer.close()
    lines = failures(caplog)
    # At most the limit in each second the flood touched (two, if it crossed one).
    assert len(lines) <= 2 * lanelog.PER_SECOND + 1
    assert lines[-1].__dict__["left_out"] > 0
    assert len(lines) + sum(line.__dict__.get("left_out", 0) for line in lines) == 51


async def test_a_head_that_cannot_be_read_gets_a_400_and_the_connection_closes(
    make_mirror: MakeMirror, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client: MirrorClient = await make_mirror()
    caplog.set_level(logging.ERROR, logger=fastlane.__name__)

    def unreadable(self: FastLane, head: bytes) -> Request | None:
        raise ValueError("cannot read this")

    monkeypatch.setattr(FastLane, "_parse_new", unreadable)
    for data in (get(), get() + get("/index/config.json")):  # alone, and pipelined
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(data)
        raw = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        [(status, body)] = answers(raw)
        assert status == 400
        assert b"\r\nConnection: close\r\n" in raw
        detail = json.loads(body)["errors"][0]["detail"]
        assert detail.startswith("malformed request (request id ")
        writer.close()
        line = failures(caplog)[-1]
        assert line.__dict__["error"] == "ValueError: cannot read this"
        assert line.__dict__["request_id"] in detail
    assert len(failures(caplog)) == 2


async def test_a_fill_that_fails_gets_a_500_and_one_line(
    make_mirror: MakeMirror, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing(self: MirrorReplies, path: str, *, renew_ahead: bool = False) -> Any:
        raise OSError("disk on fire")

    monkeypatch.setattr(MirrorReplies, "index_file", failing)
    client: MirrorClient = await make_mirror()
    caplog.set_level(logging.ERROR, logger=fastlane.__name__)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(get())
    status, body = await read_answer(reader)
    assert status == 500
    assert "internal error" in json.loads(body)["errors"][0]["detail"]
    writer.close()
    [record] = failures(caplog)
    assert record.exc_info is None
    assert record.__dict__["error"] == "OSError: disk on fire"


async def test_a_failure_after_the_answer_began_ends_the_connection_and_logs_one_line(
    make_mirror: MakeMirror, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client: MirrorClient = await make_mirror()
    assert (await client.get(DOWNLOAD)).status == 200  # kept: answered by sendfile

    async def failing(sock_fd: int, file_fd: int, offset: int, count: int) -> None:
        raise RuntimeError("sendfile broke")

    monkeypatch.setattr(fastlane, "sendfile_all", failing)
    caplog.set_level(logging.ERROR, logger=fastlane.__name__)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    # A small send buffer: the first sendfile takes part of the crate, the rest waits.
    await shrink_server_buffer(writer.get_extra_info("socket"), socket.SO_SNDBUF, 4096)
    writer.write(get(DOWNLOAD))
    raw = await asyncio.wait_for(reader.read(), 10)  # read until the server ends it
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.count(b"HTTP/1.1 ") == 1  # no second answer after a half-sent one
    writer.close()
    [record] = failures(caplog)
    assert record.__dict__["error"] == "RuntimeError: sendfile broke"
