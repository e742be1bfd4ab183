"""Putting the fast lane (and HTTP/2) in front of aiohttp's runner."""

from __future__ import annotations

import asyncio
from typing import cast

from aiohttp import web

from ghostcrate.appliance.fastlane import FastLane, Lane
from ghostcrate.appliance.h2lane import upgrade_to_h2c


class FastLaneServer:
    """Stands in for aiohttp's `web.Server` as the protocol factory of the listening sockets."""

    def __init__(self, inner: web.Server, lane: Lane) -> None:
        self._inner = inner
        #: What the fast-lane connections of this server share.
        self.lane = lane

    def __call__(self) -> FastLane:
        return FastLane(self.lane)

    def pre_shutdown(self) -> None:
        self.lane.close_idle()
        self._inner.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        await asyncio.gather(self.lane.drain(timeout), self._inner.shutdown(timeout))


class FastLaneRunner(web.AppRunner):
    """aiohttp's `AppRunner`, with the fast lane in front of every connection it accepts."""

    async def _make_server(self) -> web.Server:
        # `_make_server` is the hook aiohttp's own runners implement; the app has
        # started (cache and mirror open) when it returns.
        inner = await super()._make_server()
        lane = Lane(self.app, inner, upgrade_to_h2c)
        return cast(web.Server, FastLaneServer(inner, lane))
