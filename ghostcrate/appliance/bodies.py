"""Request bodies of the JSON API: one object, or a 400 that shows what was expected."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ghostcrate.private.errors import RegistryError


def strings(value: object, *, allow_empty: bool = False) -> bool:
    """Whether a JSON value is a list of non-empty strings (and not empty, unless allowed)."""
    return (
        isinstance(value, list)
        and (allow_empty or bool(value))
        and all(isinstance(item, str) and item for item in value)
    )


async def json_object(request: web.Request, expected: str) -> dict[str, Any]:
    """The body as a JSON object; `RegistryError(expected)` (400) if it is not one."""
    try:
        document = await request.json()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json can follow
        raise RegistryError(expected) from None
    if not isinstance(document, dict):
        raise RegistryError(expected)
    return document
