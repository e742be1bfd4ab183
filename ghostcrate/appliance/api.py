"""cargo's web API for the private registry: publish, yank, owners, search, crate metadata.

Each view authenticates (where the route needs it), hands the work to the
registry, and answers in crates.io's shapes. Refusals are `RegistryError`s,
which the `cargo_errors` middleware turns into cargo's error format.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ghostcrate.appliance.bodies import json_object
from ghostcrate.appliance.keys import POLICY, PRIVATE, REPLIES, SETTINGS
from ghostcrate.appliance.policy import token_of
from ghostcrate.private.errors import NotFound, PublishRejected, RegistryError
from ghostcrate.private.publish import NO_WARNINGS
from ghostcrate.private.tokens import Actor

log = logging.getLogger(__name__)

#: The two length fields around the metadata and the `.crate`.
LENGTH_FIELDS = 8
#: Seconds a publish body may go without a byte before it is refused.
BODY_IDLE_SECONDS = 60.0
#: crates.io's default and largest page of search results.
SEARCH_DEFAULT, SEARCH_MAX = 10, 100


async def actor_of(request: web.Request) -> Actor:
    """Who a write acts for: a valid token whose user `[auth] publish` lets write.

    The changes feed is applied first, so a token revoked a moment ago, even by
    another process, is refused here although this worker remembered it.
    """
    await request.app[PRIVATE].sync()
    token = token_of(request.headers.get("Authorization"))
    return await request.app[POLICY].writer(token, request.remote)


async def may_read_private(request: web.Request) -> bool:
    """Whether the reader may see private crates (a bad or missing required token raises)."""
    await request.app[PRIVATE].sync()
    token = token_of(request.headers.get("Authorization"))
    return await request.app[POLICY].may_read_private(token, request.remote)


async def publish(request: web.Request) -> web.Response:
    actor = await actor_of(request)
    limits = request.app[SETTINGS].private
    body = await _read_body(request, limits.max_upload + limits.max_metadata + LENGTH_FIELDS)
    registry = request.app[PRIVATE]
    new = await registry.publish(body, actor, request.app[REPLIES])
    log.info(
        "published",
        extra={
            "crate": new.name,
            "version": new.version,
            "cksum": new.cksum,
            "user": actor.user,
            "credential": actor.credential,
        },
    )
    return web.json_response({"warnings": NO_WARNINGS})


async def publish_only(request: web.Request) -> web.Response:
    """405 for any other method: as on crates.io, `/api/v1/crates/new` is not crate `new`."""
    raise web.HTTPMethodNotAllowed(request.method, ["PUT"])


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to be longer than `limit`.

    A client that sends nothing for `BODY_IDLE_SECONDS` is refused with 408, as nginx's
    `client_body_timeout` does: a slow sender does not hold the route for ever.
    """
    too_large = PublishRejected(
        f"the upload is larger than this registry accepts ({limit >> 20} MiB with metadata); "
        "see [private] max_upload and max_metadata",
        status=413,
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    while True:
        try:
            async with asyncio.timeout(BODY_IDLE_SECONDS):
                chunk = await request.content.readany()
        except TimeoutError:
            raise PublishRejected(
                f"the upload stalled: nothing came for {BODY_IDLE_SECONDS:g} s", status=408
            ) from None
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise too_large


async def yank(request: web.Request) -> web.Response:
    return await _set_yanked(request, yanked=True)


async def unyank(request: web.Request) -> web.Response:
    return await _set_yanked(request, yanked=False)


async def _set_yanked(request: web.Request, *, yanked: bool) -> web.Response:
    actor = await actor_of(request)
    name, version = request.match_info["name"], request.match_info["version"]
    await request.app[PRIVATE].set_yanked(name, version, actor, yanked=yanked)
    log.info(
        "yanked" if yanked else "unyanked",
        extra={
            "crate": name,
            "version": version,
            "user": actor.user,
            "credential": actor.credential,
        },
    )
    return web.json_response({"ok": True})


async def list_owners(request: web.Request) -> web.Response:
    registry = request.app[PRIVATE]
    name = request.match_info["name"]
    if not await may_read_private(request):
        raise NotFound(f"crate `{name}` does not exist in this registry")
    await registry.info(name)  # 404 unless it is a private crate
    owners = await registry.crates.owner_names(name)
    users = [
        {"id": row["id"], "login": row["name"], "name": row["name"], "kind": "user"}
        for row in owners
    ]
    teams = [
        {"id": number, "login": team.login, "name": team.name, "kind": "team"}
        for number, team in enumerate(await registry.orgs.team_owners(name), start=1)
    ]
    return web.json_response({"users": users + teams})


async def add_owners(request: web.Request) -> web.Response:
    return await _change_owners(request, add=True)


async def remove_owners(request: web.Request) -> web.Response:
    return await _change_owners(request, add=False)


async def _change_owners(request: web.Request, *, add: bool) -> web.Response:
    actor = await actor_of(request)
    users = await _user_list(request)
    name = request.match_info["name"]
    found = await request.app[PRIVATE].change_owners(name, users, actor, add=add)
    log.info(
        "owners added" if add else "owners removed",
        extra={"crate": name, "owners": found, "user": actor.user, "credential": actor.credential},
    )
    who = ", ".join(found)
    message = (
        f"user(s) {who} added as owner(s) of crate {name}"
        if add
        else f"user(s) {who} removed as owner(s) of crate {name}"
    )
    return web.json_response({"ok": True, "msg": message})


async def _user_list(request: web.Request) -> list[str]:
    expected = 'expected a JSON body like {"users": ["alice"]}'
    users = (await json_object(request, expected)).get("users")
    if (
        not isinstance(users, list)
        or not users
        or not all(isinstance(user, str) and user for user in users)
    ):
        raise RegistryError(expected)
    return users


async def search(request: web.Request) -> web.Response:
    query = request.query.get("q", "")
    try:
        per_page = int(request.query.get("per_page", SEARCH_DEFAULT))
    except ValueError:
        raise RegistryError("per_page must be a whole number from 1 to 100") from None
    per_page = min(max(per_page, 1), SEARCH_MAX)
    private = await may_read_private(request)
    found = await request.app[REPLIES].search(query, per_page, include_private=private)
    return web.json_response(found)


async def crate_info(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not await may_read_private(request):
        raise NotFound(f"crate `{name}` does not exist in this registry")
    return web.json_response(await request.app[PRIVATE].info(name))


async def me(request: web.Request) -> web.Response:
    """The URL `cargo login` shows: how to get a token here."""
    return web.Response(
        text="Ask an administrator of this GhostCrate for a token "
        "(`ghostcrate token create --user NAME`), then run `cargo login --registry <name>`.\n"
    )
