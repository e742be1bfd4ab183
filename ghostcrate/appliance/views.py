"""Request handlers: the sparse index, crate downloads, health and metrics."""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ghostcrate.appliance.conditional import cacheable_response
from ghostcrate.appliance.fileresponse import ZeroCopyFileResponse
from ghostcrate.appliance.keys import METRICS, MIRROR_CRATES, MIRROR_INDEX, REGISTRY, SETTINGS
from ghostcrate.appliance.metrics import exposition
from ghostcrate.cargo.names import CrateName, InvalidName, is_version, parse_index_path
from ghostcrate.proxy import NotFound
from ghostcrate.proxy.indexfile import body_etag

CRATE_CONTENT_TYPE = "application/gzip"


async def index_config(request: web.Request) -> web.Response:
    """config.json: where cargo downloads crates and finds the web API."""
    base = request.app[SETTINGS].server.base_url
    body = json.dumps({"dl": f"{base}/api/v1/crates", "api": base}).encode()
    return cacheable_response(
        request, body, body_etag(body), "Thu, 01 Jan 1970 00:00:00 GMT", "application/json"
    )


async def index_file(request: web.Request) -> web.Response:
    path = request.match_info["path"]
    try:
        name = parse_index_path(path)
    except InvalidName as error:
        raise NotFound(f"no index file here: {error}") from None
    offer = await request.app[MIRROR_INDEX].offered(name)
    if offer is None:
        raise NotFound(f"crate '{name}' does not exist (or, offline, has nothing cached)")
    return cacheable_response(request, offer.body, offer.etag, offer.last_modified, "text/plain")


async def download(request: web.Request) -> web.StreamResponse:
    version = request.match_info["version"]
    try:
        name = CrateName(request.match_info["name"])
    except InvalidName as error:
        raise NotFound(str(error)) from None
    if not is_version(version):
        raise NotFound(f"invalid version {version!r}: crate versions are SemVer, like 1.2.3")
    crates = request.app[MIRROR_CRATES]
    path = await crates.cached(name, version) or await crates.fetch(name, version)
    file_bytes = request.app[METRICS].file_bytes
    return ZeroCopyFileResponse(
        path,
        on_sent=lambda method, count: file_bytes.labels(method).inc(count),
        headers={
            "Content-Type": CRATE_CONTENT_TYPE,
            "Cache-Control": "public, max-age=31536000, immutable",
        },
    )


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = exposition(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
