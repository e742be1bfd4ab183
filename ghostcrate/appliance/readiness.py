"""`/readyz`: whether this worker can do its job, as JSON, for load balancers and operators.

Readiness fails (503) when something the appliance needs is broken: the
registry database, a writable `data_dir`, free disk space above `[server]
min_free_bytes`, and the S3 bucket when `[s3]` is set. The upstream is reported
(its breaker, its last answer) but never fails readiness: a mirror whose upstream
is down still serves what it has. Each check has `CHECK_SECONDS`; they run at
the same time. Who may read it follows `[auth] read_mirror` (and `required`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ghostcrate.appliance.keys import CACHE, MIRROR, POLICY, PRIVATE, SETTINGS
from ghostcrate.appliance.policy import token_of
from ghostcrate.appliance.replies import Reply

#: How long one check may take before it counts as failed.
CHECK_SECONDS = 2.0

Check = dict[str, object]


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    await app[PRIVATE].sync()
    token = token_of(request.headers.get("Authorization"))
    refused = await app[POLICY].read(token, request.remote, private=False)
    if refused is not None:
        return _response(refused)
    settings = app[SETTINGS]
    checks: dict[str, Callable[[], Awaitable[Check]]] = {
        "database": lambda: _database(app),
        "data_dir": lambda: _writable(settings.data_dir),
        "disk": lambda: _disk(settings.data_dir, settings.server.min_free_bytes),
    }
    shared = app[CACHE].shared
    if shared is not None:
        checks["s3"] = lambda: _s3(shared.probe)
    results = await asyncio.gather(*(_timed(check) for check in checks.values()))
    report = dict(zip(checks, results, strict=True))
    ready = all(result["ok"] for result in results)
    body = {
        "status": "ready" if ready else "not ready",
        "checks": report,
        "upstream": {"mode": settings.upstream.mode, **app[MIRROR].upstream.state()},
    }
    return web.json_response(
        body, status=200 if ready else 503, headers={"Cache-Control": "no-store"}
    )


async def _timed(check: Callable[[], Awaitable[Check]]) -> Check:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            result = await check()
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {CHECK_SECONDS:g} s"}
    except Exception as error:
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return {**result, "ms": round((time.perf_counter() - started) * 1000, 2)}


async def _database(app: web.Application) -> Check:
    await app[PRIVATE].db.one("SELECT 1")
    return {"ok": True}


async def _writable(data_dir: Path) -> Check:
    def write() -> None:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".readyz-") as probe:
            probe.write(b"ready?")
            probe.flush()
            os.fsync(probe.fileno())

    await asyncio.get_running_loop().run_in_executor(None, write)
    return {"ok": True}


async def _disk(data_dir: Path, minimum: int) -> Check:
    usage = await asyncio.get_running_loop().run_in_executor(None, shutil.disk_usage, data_dir)
    return {"ok": usage.free >= minimum, "free_bytes": usage.free, "min_free_bytes": minimum}


async def _s3(probe: Callable[[], Awaitable[str | None]]) -> Check:
    error = await probe()
    return {"ok": True} if error is None else {"ok": False, "error": error}


def _response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, content_type="application/json")
