"""Putting the fast lane (and HTTP/2) in front of aiohttp's runner."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ghostcrate.appliance.errors import error_response
from ghostcrate.appliance.fastlane import FastLane, Lane
from ghostcrate.appliance.h2lane import upgrade_to_h2c

log = logging.getLogger(__name__)


class ClientErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering a request it cannot parse (a header with a
    NUL, a bad request line) in cargo's error form, logged as the client's error it is:
    aiohttp logs each at level error with a traceback, which anyone could fill a log with."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        reason = (message or str(exc) or "malformed").strip().splitlines()[0].rstrip(":")
        log.info("bad HTTP request", extra={"remote": request.remote, "detail": reason})
        response = error_response(status, f"bad HTTP request: {reason}")
        response.force_close()
        return response


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

        def handler() -> RequestHandler:
            # What `web.Server.__call__` makes, of our class.
            return ClientErrorHandler(inner, loop=inner._loop, **inner._kwargs)

        lane = Lane(self.app, handler, upgrade_to_h2c)
        return cast(web.Server, FastLaneServer(inner, lane))
