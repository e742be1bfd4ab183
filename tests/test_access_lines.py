"""Access lines: the fast JSON assembly says exactly what `render_json` would; text lines
quote what clients sent."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghostcrate.appliance.logs import (
    AccessRecord,
    AccessSink,
    access_fields,
    render_json,
    render_text,
)
from tests.support.appliance import Appliance
from tests.support.textlog import parse_text_line

DURATION = re.compile(r'"duration_ms": ([0-9.]+)')
#: The timestamp at the start of a JSON or a text line.
TIMESTAMP = re.compile(r'^(\{"ts": "[^"]*"|\S+ )')


def assert_same_line(line: str, expected: dict[str, Any]) -> None:
    """`line` is `render_json(expected)` byte for byte after the timestamp, but that its
    duration has two decimals always (the same number)."""
    rendered = render_json(expected)
    ours, theirs = DURATION.search(line), DURATION.search(rendered)
    assert ours is not None
    assert theirs is not None
    assert re.fullmatch(r"[0-9]+\.[0-9]{2}", ours[1])
    assert float(ours[1]) == float(theirs[1])
    assert DURATION.sub("", line).split(", ", 1)[1] == DURATION.sub("", rendered).split(", ", 1)[1]


@pytest.mark.parametrize(
    ("path", "user_agent", "remote", "request_id"),
    [
        ("/index/se/rd/serde", "cargo/1.95.0 (f2d3ce0bd 2026-03-21)", "127.0.0.1", "ab12"),
        ('/index/3/a/ab\u00e9"c\\', 'odd "agent" \\ \u2603', None, "-"),
        ("/api/v1/crates/x/1.0.0/download", None, "::1", "trace-me-42"),
    ],
)
def test_json_access_lines_equal_rendered_fields(
    path: str, user_agent: str | None, remote: str | None, request_id: str
) -> None:
    stream = io.StringIO()
    sink = AccessSink(stream, render_json)
    request: dict[str, Any] = {
        "method": "GET",
        "path": path,
        "status": 304,
        "length": 123,
        "seconds": 0.0123456,
        "remote": remote,
        "user_agent": user_agent,
        "request_id": request_id,
    }
    sink.request(**request)
    sink.flush()
    line = stream.getvalue()
    assert line.endswith("\n")
    assert line.count("\n") == 1
    written = json.loads(line)
    expected = access_fields(0.0, sink.pid, **request)
    # Byte for byte, after the timestamp: same keys, order and escaping as json.dumps.
    assert_same_line(line.rstrip("\n"), expected)
    assert written.pop("ts")[-6:] == "+00:00"
    expected.pop("ts")
    assert written == expected


async def test_lines_are_written_in_batches_within_the_flush_interval() -> None:
    stream = io.StringIO()
    sink = AccessSink(stream, render_text)
    for number in range(3):
        sink.request(
            method="GET",
            path=f"/index/{number}",
            status=200,
            length=1,
            seconds=0.001,
            remote=None,
            user_agent=None,
            request_id="-",
        )
    assert stream.getvalue() == ""  # buffered
    await asyncio.sleep(AccessSink.FLUSH_SECONDS * 2)
    lines = stream.getvalue().splitlines()
    assert [line.split("ghostcrate.access: ")[1].split(" pid=")[0] for line in lines] == [
        f"GET /index/{number} 200" for number in range(3)
    ]


def test_repeated_requests_reuse_pieces_and_still_say_what_each_was() -> None:
    stream = io.StringIO()
    sink = AccessSink(stream, render_json)
    asked = [
        ("GET", "/index/se/rd/serde", 200, 900, "127.0.0.1", "cargo/1", "a1"),
        ("GET", "/index/se/rd/serde", 200, 350, "127.0.0.1", "cargo/1", "a2"),  # gzip
        ("GET", "/index/se/rd/serde", 304, 0, "127.0.0.1", "cargo/1", "a3"),
        ("HEAD", "/index/se/rd/serde", 200, 0, "::1", None, "-"),
        ("GET", "/index/se/rd/serde", 200, 900, "::1", None, "a5"),
    ]
    fields: list[dict[str, Any]] = [
        {
            "method": method,
            "path": path,
            "status": status,
            "length": length,
            "seconds": length / 1e6,
            "remote": remote,
            "user_agent": agent,
            "request_id": rid,
        }
        for method, path, status, length, remote, agent, rid in asked
    ]
    for request in fields:
        sink.request(**request)
    sink.flush()
    for line, request in zip(stream.getvalue().splitlines(), fields, strict=True):
        assert_same_line(line, access_fields(0.0, sink.pid, **request))


def test_a_batch_of_requests_gives_the_lines_of_each_in_order() -> None:
    records: list[AccessRecord] = [
        ("GET", "/index/se/rd/serde", 200, 900, 0.001, "127.0.0.1", "cargo/1", "a1"),
        ("HEAD", "/index/3/f/foo", 404, 0, 0.0025, "::1", None, "-"),
        ("GET", "/index/se/rd/serde", 304, 0, 0.0001, "127.0.0.1", "cargo/1", "a3"),
    ]
    for render in (render_json, render_text):
        batched, single = io.StringIO(), io.StringIO()
        AccessSink(batched, render).requests(records)  # no running loop: written at once
        one_by_one = AccessSink(single, render)
        for method, path, status, length, seconds, remote, agent, rid in records:
            one_by_one.request(
                method=method,
                path=path,
                status=status,
                length=length,
                seconds=seconds,
                remote=remote,
                user_agent=agent,
                request_id=rid,
            )
        lines, expected = batched.getvalue().splitlines(), single.getvalue().splitlines()
        assert len(lines) == len(records)
        # The same lines but for the timestamp, which comes first in both formats.
        assert [TIMESTAMP.sub("", line) for line in lines] == [
            TIMESTAMP.sub("", line) for line in expected
        ]


@given(path=st.text(), user_agent=st.one_of(st.none(), st.text()), remote=st.text())
def test_a_text_line_is_one_line_whose_fields_read_back(
    path: str, user_agent: str | None, remote: str
) -> None:
    fields = access_fields(
        0.0,
        1,
        method="GET",
        path=path,
        status=404,
        length=0,
        seconds=0.001,
        remote=remote,
        user_agent=user_agent,
        request_id="-",
    )
    line = render_text(fields)
    assert line.isascii()
    assert line.splitlines() == [line]
    parsed = parse_text_line(line)
    assert parsed is not None
    assert parsed == {key: str(value) for key, value in fields.items()}


def test_plain_values_stay_unquoted_in_text_lines() -> None:
    line = render_text({"ts": "-", "level": "info", "logger": "x", "msg": "hit it", "n": 1.5})
    assert line.endswith(": hit it n=1.5")


#: User agents that would forge fields, or break the line, if written as they came.
HOSTILE_AGENTS = (b"x status=200 remote=10.0.0.1", b'tab\there obs\x85text\xff "q" \\ e=1')


def raw_get(port: int, target: str, *headers: bytes) -> int:
    """One HTTP/1.1 request, the bytes as given; the status of its answer."""
    head = [f"GET {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close", *headers]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join([*head, b"", b""]))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_text_access_lines_keep_what_clients_sent_inside_its_field(
    start_appliance: Callable[..., Appliance],
) -> None:
    appliance = start_appliance(tables={"log": {"format": "text"}})
    index = "/index/no/su/nosuchcrate"
    # The fast lane (it hands a head with bytes outside ASCII to aiohttp), then aiohttp
    # (a Range header, or a query, hands the request over).
    asked = [
        (index, []),
        (index, [b"Range: bytes=0-"]),
        (f"{index}?status=200", []),
    ]
    for target, extra in asked:
        for agent in HOSTILE_AGENTS:
            assert raw_get(appliance.port, target, b"User-Agent: " + agent, *extra) == 404
    appliance.stop()
    events = appliance.events()
    access = [e for e in events if e["logger"] == "ghostcrate.access" and e["path"] != "/health"]
    expected = [
        {
            "msg": f"GET {target} 404",
            "path": target,
            "status": "404",
            "remote": "127.0.0.1",
            # Header bytes as aiohttp decodes them (the fast lane sees only ASCII).
            "user_agent": agent.decode("utf-8", "surrogateescape"),
        }
        for target, _ in asked
        for agent in HOSTILE_AGENTS
    ]
    assert [{key: line[key] for key in expected[0]} for line in access] == expected
