"""A publish whose body stalls, or is larger than it may be, is refused early."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from ghostcrate.appliance import api
from ghostcrate.appliance.keys import PRIVATE
from tests.conftest import MirrorClient
from tests.support.rawhttp import read_answer


async def token_for(client: MirrorClient) -> str:
    accounts = client.app[PRIVATE].accounts
    await accounts.add_user("alice", admin=True)
    token, _ = await accounts.create_token("alice")
    assert isinstance(token, str)
    return token


async def test_a_stalled_publish_body_is_refused_with_408(
    make_mirror: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "BODY_IDLE_SECONDS", 0.5)
    client: MirrorClient = await make_mirror()
    token = await token_for(client)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = (
        "PUT /api/v1/crates/new HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {token}\r\nContent-Length: 100000\r\n\r\n"
    )
    writer.write(head.encode() + b"\x10\x00\x00\x00{")
    await writer.drain()
    started = time.monotonic()
    status, body = await asyncio.wait_for(read_answer(reader), 5)
    assert status == 408
    assert time.monotonic() - started < 2
    assert "the upload stalled" in json.loads(body)["errors"][0]["detail"]
    writer.close()


async def test_an_announced_body_over_the_limit_is_refused_before_it_is_read(
    make_mirror: Callable[..., Any],
) -> None:
    client: MirrorClient = await make_mirror()
    token = await token_for(client)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = (
        "PUT /api/v1/crates/new HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {token}\r\nContent-Length: {1 << 30}\r\n\r\n"
    )
    writer.write(head.encode())  # and not a byte of the gigabyte
    await writer.drain()
    status, body = await asyncio.wait_for(read_answer(reader), 5)
    assert status == 413
    assert "max_upload" in json.loads(body)["errors"][0]["detail"]
    writer.close()


async def test_no_body_is_read_without_a_token(make_mirror: Callable[..., Any]) -> None:
    client: MirrorClient = await make_mirror()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = "PUT /api/v1/crates/new HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    status, _ = await asyncio.wait_for(read_answer(reader), 5)
    assert status == 401
    writer.close()
