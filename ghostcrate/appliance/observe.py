"""Per-request bookkeeping: a request id for logs and clients, and the HTTP metrics."""

from __future__ import annotations

import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from ghostcrate.appliance.keys import METRICS
from ghostcrate.appliance.logs import REQUEST_ID

_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    offered = request.headers.get("X-Request-Id", "")
    request_id = offered if _CLIENT_ID.fullmatch(offered) else uuid.uuid4().hex[:16]
    REQUEST_ID.set(request_id)
    metrics = request.app[METRICS]
    route = _route_name(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
    except web.HTTPException as error:
        status = error.status
        raise
    else:
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    finally:
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        metrics.requests.labels(route, str(status)).inc()
