"""A webhook receiver on 127.0.0.1 that records every request, and an independent verifier.

The receiver answers with the statuses queued in `answers` (then 200), after
`delay` seconds (a 3xx redirects to `/redirected`, which counts who follows);
`verify` checks a signature as docs/webhooks.md tells receivers to, written
here without GhostCrate's code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.threaded import ThreadedServer


@dataclass(frozen=True)
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class WebhookReceiver(ThreadedServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(port=port)
        self.received: list[Received] = []
        #: Statuses to answer, in order; 200 once they are used up.
        self.answers: list[int] = []
        #: Seconds to wait before answering.
        self.delay = 0.0
        #: Requests that followed a redirect (an answer 3xx says Location: /redirected).
        self.redirected = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_route("*", "/redirected", self._redirected)
        return app

    async def _redirected(self, request: web.Request) -> web.Response:
        with self._lock:
            self.redirected += 1
        return web.Response(status=200)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.received.append(Received(time.time(), dict(request.headers), body))
            status = self.answers.pop(0) if self.answers else 200
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"Location": "/redirected"} if 300 <= status < 400 else {}
        return web.Response(status=status, text="ok" if status < 300 else "no", headers=headers)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """The first `count` requests, once they have come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} webhook requests, got {len(self.received)}")


def verify(secret: str, received: Received, tolerance: float = 300.0) -> bool:
    """Whether the request is signed with `secret` and its timestamp is recent."""
    header = received.headers.get("X-GhostCrate-Signature", "")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if "t" not in parts or "v1" not in parts:
        return False
    if abs(time.time() - int(parts["t"])) > tolerance:
        return False
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])
