"""The organisations' web API: `/api/v1/orgs`, their members and their teams.

Reading needs what reading private crates needs (`[auth] read_private`);
writing needs a token `[auth] publish` allows, and then `rights.decide_org`:
the registry's administrators, and an organisation's owners and admins (only
owners make or remove owners). Creating an organisation is for the registry's
administrators. Every write is seen by every worker before its answer leaves.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ghostcrate.appliance.api import actor_of, may_read_private
from ghostcrate.appliance.bodies import json_object, strings
from ghostcrate.appliance.keys import PRIVATE
from ghostcrate.private.errors import NotFound, Refused, RegistryError
from ghostcrate.private.orgs import Org
from ghostcrate.private.registry import Registry
from ghostcrate.private.rights import (
    MANAGE_MEMBERS,
    MANAGE_OWNERS,
    OWNER,
    RULE_REGISTRY_ADMIN,
    decide_org,
)
from ghostcrate.private.tokens import Actor

log = logging.getLogger(__name__)

_MEMBERS_BODY = 'expected a JSON body like {"users": [{"login": "bob", "role": "member"}]}'
_USERS_BODY = 'expected a JSON body like {"users": ["bob"]}'


async def list_orgs(request: web.Request) -> web.Response:
    await _reader(request)
    orgs = await request.app[PRIVATE].orgs.orgs()
    return web.json_response({"orgs": [org.as_json() for org in orgs]})


async def add_org(request: web.Request) -> web.Response:
    actor = await actor_of(request)
    document = await json_object(request, 'expected a JSON body like {"name": "acme", ...}')
    name, namespaces = document.get("name"), document.get("namespaces", [])
    owner = document.get("owner")
    if (
        not isinstance(name, str)
        or not strings(namespaces, allow_empty=True)
        or not (owner is None or isinstance(owner, str))
    ):
        raise RegistryError(
            'expected a JSON body like {"name": "acme", "namespaces": ["acme-*"], "owner": "alice"}'
        )
    if not actor.admin:
        raise Refused(
            f"you ({actor.user}) may not create organisations: that is for the registry's "
            f"administrators ([auth] admin) (rule: {RULE_REGISTRY_ADMIN})",
            RULE_REGISTRY_ADMIN,
        )
    registry = request.app[PRIVATE]
    await registry.apply(await registry.orgs.add_org(name, tuple(namespaces), owner))
    log.info(
        "org added",
        extra={
            "org": name,
            "namespaces": namespaces,
            "user": actor.user,
            "credential": actor.credential,
        },
    )
    org = await registry.orgs.org(name)
    return web.json_response(org.as_json(), status=201)


async def show_org(request: web.Request) -> web.Response:
    return web.json_response((await _readable_org(request)).as_json())


async def list_members(request: web.Request) -> web.Response:
    org = await _readable_org(request)
    return web.json_response({"members": org.as_json()["members"]})


async def set_members(request: web.Request) -> web.Response:
    actor = await actor_of(request)
    registry = request.app[PRIVATE]
    org = await registry.orgs.org(request.match_info["org"])
    members = _members(await json_object(request, _MEMBERS_BODY))
    current = {user.lower(): role for user, role in org.members}
    touches_owners = any(
        role == OWNER or current.get(user.lower()) == OWNER for user, role in members
    )
    await require_right(registry, actor, org, MANAGE_OWNERS if touches_owners else MANAGE_MEMBERS)
    await registry.apply(await registry.orgs.set_members(org.name, members))
    log.info(
        "org members set",
        extra={
            "org": org.name,
            "members": members,
            "user": actor.user,
            "credential": actor.credential,
        },
    )
    return web.json_response((await registry.orgs.org(org.name)).as_json())


async def remove_members(request: web.Request) -> web.Response:
    actor = await actor_of(request)
    registry = request.app[PRIVATE]
    org = await registry.orgs.org(request.match_info["org"])
    users = _logins(await json_object(request, _USERS_BODY))
    current = {user.lower(): role for user, role in org.members}
    touches_owners = any(current.get(user.lower()) == OWNER for user in users)
    await require_right(registry, actor, org, MANAGE_OWNERS if touches_owners else MANAGE_MEMBERS)
    await registry.apply(await registry.orgs.remove_members(org.name, users))
    log.info(
        "org members removed",
        extra={"org": org.name, "users": users, "user": actor.user, "credential": actor.credential},
    )
    return web.json_response((await registry.orgs.org(org.name)).as_json())


async def list_teams(request: web.Request) -> web.Response:
    org = await _readable_org(request)
    return web.json_response({"teams": org.as_json()["teams"]})


async def add_team(request: web.Request) -> web.Response:
    actor = await actor_of(request)
    registry = request.app[PRIVATE]
    org = await registry.orgs.org(request.match_info["org"])
    document = await json_object(request, 'expected a JSON body like {"name": "platform"}')
    team = document.get("name")
    if not isinstance(team, str):
        raise RegistryError('expected a JSON body like {"name": "platform"}')
    await require_right(registry, actor, org, MANAGE_MEMBERS)
    await registry.apply(await registry.orgs.add_team(org.name, team))
    log.info(
        "team added",
        extra={"org": org.name, "team": team, "user": actor.user, "credential": actor.credential},
    )
    return web.json_response((await registry.orgs.org(org.name)).as_json(), status=201)


async def remove_team(request: web.Request) -> web.Response:
    actor = await actor_of(request)
    registry = request.app[PRIVATE]
    org = await registry.orgs.org(request.match_info["org"])
    team = request.match_info["team"]
    await require_right(registry, actor, org, MANAGE_MEMBERS)
    await registry.apply(await registry.orgs.remove_team(org.name, team))
    log.info(
        "team removed",
        extra={"org": org.name, "team": team, "user": actor.user, "credential": actor.credential},
    )
    return web.json_response((await registry.orgs.org(org.name)).as_json())


async def add_team_members(request: web.Request) -> web.Response:
    return await _team_members(request, add=True)


async def remove_team_members(request: web.Request) -> web.Response:
    return await _team_members(request, add=False)


async def _team_members(request: web.Request, *, add: bool) -> web.Response:
    actor = await actor_of(request)
    registry = request.app[PRIVATE]
    org = await registry.orgs.org(request.match_info["org"])
    team = request.match_info["team"]
    users = _logins(await json_object(request, _USERS_BODY))
    await require_right(registry, actor, org, MANAGE_MEMBERS)
    await registry.apply(await registry.orgs.set_team_members(org.name, team, users, add=add))
    log.info(
        "team members added" if add else "team members removed",
        extra={
            "org": org.name,
            "team": team,
            "users": users,
            "user": actor.user,
            "credential": actor.credential,
        },
    )
    return web.json_response((await registry.orgs.org(org.name)).as_json())


async def _reader(request: web.Request) -> None:
    if not await may_read_private(request):
        raise NotFound("organisations are shown only to readers of private crates here")


async def _readable_org(request: web.Request) -> Org:
    await _reader(request)
    return await request.app[PRIVATE].orgs.org(request.match_info["org"])


async def require_right(registry: Registry, actor: Actor, org: Org, action: str) -> None:
    """Refuse (`Refused`, with its rule) an `action` the actor's role in `org` does not allow."""
    role = await registry.orgs.role(org.name, actor.user_id)
    decide_org(actor, action, org.name, role).require()


def _members(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(login, role) of `{"users": [{"login": "bob", "role": "member"}]}` (role default member)."""
    users = document.get("users")
    if not isinstance(users, list) or not users:
        raise RegistryError(_MEMBERS_BODY)
    members = []
    for user in users:
        login = user.get("login") if isinstance(user, dict) else None
        role = user.get("role", "member") if isinstance(user, dict) else None
        if not isinstance(login, str) or not login or not isinstance(role, str):
            raise RegistryError(_MEMBERS_BODY)
        members.append((login, role))
    return members


def _logins(document: dict[str, Any]) -> list[str]:
    """The logins of `{"users": ["bob"]}` (or of `[{"login": "bob"}]`)."""
    users = document.get("users")
    if isinstance(users, list):
        users = [user.get("login") if isinstance(user, dict) else user for user in users]
    if not strings(users):
        raise RegistryError(_USERS_BODY)
    assert isinstance(users, list)
    return users
