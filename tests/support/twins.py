"""The same mirror twice, in front of the same upstream: behind the fast lane, and under aiohttp.

What the fast lane answers must be what aiohttp answers (or it must hand the
connection to aiohttp): these send the same bytes to both and compare.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiohttp.test_utils import BaseTestServer, TestServer

from ghostcrate.appliance.app import create_app
from ghostcrate.appliance.fastlane import Lane
from ghostcrate.appliance.runner import FastLaneServer
from tests.conftest import FastLaneTestServer, mirror_settings
from tests.support.rawhttp import Exchange, exchange


@dataclass(frozen=True)
class Twins:
    #: The app behind the fast lane, as `ghostcrate serve` runs it.
    fast: TestServer
    #: The same app under plain aiohttp.
    plain: TestServer

    async def send(self, data: bytes, *, quiet: float = 0.3) -> tuple[Exchange, Exchange]:
        """Send `data` on a new connection to each; what each sent back."""
        assert self.fast.port is not None
        assert self.plain.port is not None
        fast, plain = await asyncio.gather(
            exchange(self.fast.host, self.fast.port, data, quiet=quiet),
            exchange(self.plain.host, self.plain.port, data, quiet=quiet),
        )
        return fast, plain


@asynccontextmanager
async def twin_servers(directory: Path, upstream_url: str, **server: Any) -> AsyncIterator[Twins]:
    """Both servers, with their own data directories; `server` sets [server] keys."""
    fast = FastLaneTestServer(
        create_app(mirror_settings(directory / "fast", upstream_url, server=server))
    )
    plain = TestServer(
        create_app(mirror_settings(directory / "plain", upstream_url, server=server))
    )
    await fast.start_server()
    try:
        await plain.start_server()
        try:
            yield Twins(fast, plain)
        finally:
            await plain.close()
    finally:
        await fast.close()


def lane_of(server: BaseTestServer) -> Lane:
    """The fast lane of a `FastLaneTestServer`."""
    assert server.runner is not None
    return cast(FastLaneServer, server.runner.server).lane
