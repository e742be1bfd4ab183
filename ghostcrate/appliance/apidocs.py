"""`/api/openapi.json` and the interactive documentation at `/api/docs`.

The page is Swagger UI, whose scripts and style sheet come from the
`swagger-ui-py` package and are served from here: the page reaches no other
host, and its Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib.resources import files
from pathlib import Path

from aiohttp import web

from ghostcrate.appliance.openapi import document_bytes
from ghostcrate.private.errors import NotFound

#: Only what the page loads, so that no other file of either directory is ever served.
_ASSETS = {
    "swagger-ui-bundle.js": ("swagger_ui", "static", "text/javascript"),
    "swagger-ui.css": ("swagger_ui", "static", "text/css"),
    "favicon-32x32.png": ("swagger_ui", "static", "image/png"),
    "docs.js": ("ghostcrate.appliance", "docs_page", "text/javascript"),
}
#: Scripts and styles from this origin only (nothing inline: the page's own script is
#: docs.js); Swagger UI draws its icons as data: images.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=document_bytes(),
        content_type="application/json",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def docs_page(request: web.Request) -> web.Response:
    body = await _read(_file("ghostcrate.appliance", "docs_page", "index.html"))
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)


async def docs_asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    found = _ASSETS.get(name)
    if found is None:
        raise NotFound(f"no such file of the API documentation: {name!r}")
    package, folder, content_type = found
    body = await _read(_file(package, folder, name))
    return web.Response(
        body=body,
        content_type=content_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def _file(package: str, folder: str, name: str) -> Path:
    return Path(str(files(package).joinpath(folder, name)))


async def _read(path: Path) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(None, _contents, path)


@cache
def _contents(path: Path) -> bytes:
    """A file of an installed package: it does not change while the process runs."""
    return path.read_bytes()
