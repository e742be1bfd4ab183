"""Request bodies of the JSON API: one object, or a 400 that shows what was expected."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ghostcrate.private.errors import RegistryError


async def json_object(request: web.Request, expected: str) -> dict[str, Any]:
    """The body as a JSON object; `RegistryError(expected)` (400) if it is not one."""
    try:
        document = await request.json()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json can follow
        raise RegistryError(expected) from None
    if not isinstance(document, dict):
        raise RegistryError(expected)
    return document
