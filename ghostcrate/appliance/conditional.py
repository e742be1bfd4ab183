"""Answer clients' conditional GETs for in-memory bodies (RFC 9110, section 13)."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from aiohttp import web


def not_modified(request: web.Request, etag: str, last_modified: str | None) -> bool:
    """Whether a 304 answers this request. If-None-Match wins over If-Modified-Since."""
    if_none_match = request.if_none_match
    if if_none_match is not None:
        # Weak comparison, as RFC 9110 13.1.2 asks for If-None-Match.
        value = etag.strip('"')
        return any(tag.value in (value, "*") for tag in if_none_match)
    since = request.if_modified_since
    if since is not None and last_modified is not None:
        try:
            return parsedate_to_datetime(last_modified) <= since
        except (TypeError, ValueError):
            return False
    return False


def cacheable_response(
    request: web.Request, body: bytes, etag: str, last_modified: str | None, content_type: str
) -> web.Response:
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if last_modified is not None:
        headers["Last-Modified"] = last_modified
    if not_modified(request, etag, last_modified):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers, content_type=content_type)
