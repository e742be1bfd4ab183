"""aiohttp request handlers: the mirror's routes (through `replies`), health and metrics.

The fast lane answers nearly all index and download requests itself; these
views answer the ones it hands over (and every request in a bare aiohttp app).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ghostcrate.appliance.fileresponse import ZeroCopyFileResponse
from ghostcrate.appliance.keys import METRICS, OUTCOME, POLICY, REGISTRY, REPLIES
from ghostcrate.appliance.metrics import exposition
from ghostcrate.appliance.policy import refused_read, token_of
from ghostcrate.appliance.replies import (
    CONFIG_ROUTE,
    DOWNLOAD_ROUTE,
    HEALTHZ,
    INDEX_ROUTE,
    Reply,
    not_modified,
)


async def index_config(request: web.Request) -> web.StreamResponse:
    """config.json: where cargo downloads crates and finds the web API."""
    refused = await _refused(request, CONFIG_ROUTE)
    return respond(request, refused or request.app[REPLIES].config)


async def index_file(request: web.Request) -> web.StreamResponse:
    refused = await _refused(request, INDEX_ROUTE)
    if refused is not None:
        return respond(request, refused)
    return respond(request, await request.app[REPLIES].index_file(request.match_info["path"]))


async def download(request: web.Request) -> web.StreamResponse:
    refused = await _refused(request, DOWNLOAD_ROUTE)
    if refused is not None:
        return respond(request, refused)
    replies = request.app[REPLIES]
    reply = await replies.download(request.match_info["name"], request.match_info["version"])
    return respond(request, reply)


async def _refused(request: web.Request, route: str) -> Reply | None:
    """What `[auth]` answers instead, as the lanes do (`Lane._refused`)."""
    policy = request.app[POLICY]
    if policy.open_reads:
        return None
    token = token_of(request.headers.get("Authorization"))
    return await refused_read(
        policy, request.app[REPLIES], route, request.path, token=token, remote=request.remote
    )


def respond(request: web.Request, reply: Reply) -> web.StreamResponse:
    request[OUTCOME] = reply.outcome
    headers = {}
    if reply.cache_control is not None:
        headers["Cache-Control"] = reply.cache_control
    if reply.file is not None:  # conditional requests, ranges and HEAD as FileResponse does them
        file_bytes = request.app[METRICS].file_bytes
        headers["Content-Type"] = reply.content_type
        return ZeroCopyFileResponse(
            reply.file,
            on_sent=lambda method, count: file_bytes.labels(method).inc(count),
            headers=headers,
        )
    if reply.etag is not None:
        headers["ETag"] = reply.etag
    if reply.last_modified is not None:
        headers["Last-Modified"] = reply.last_modified
    conditions = request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
    if not_modified(reply, *conditions):
        return web.Response(status=304, headers=headers)
    return web.Response(
        status=reply.status, body=reply.body, headers=headers, content_type=reply.content_type
    )


async def healthz(request: web.Request) -> web.Response:
    """Liveness, as the lanes answer it (`HEALTHZ`); never refused by `[auth]`."""
    return web.Response(
        body=HEALTHZ.body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    request.app[METRICS].batches.flush()  # this process's latest; other workers flush each second
    body = exposition(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
