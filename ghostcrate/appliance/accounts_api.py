"""Accounts in the web API, as crates.io has them: one's own tokens, users, and administration.

`/api/v1/me/tokens` lists, creates and revokes the caller's API tokens
(crates.io's shapes; a new token's text is in the answer once). A session or a
token without limits may manage tokens: a token limited by scopes, crates or an
organisation may not, or it could make itself a wider one (rule `token-limits`).
`/api/v1/users/{login}` is shown to whoever may read private crates (others get
404, as for the crates). `/api/v1/admin/users` is for the registry's
administrators (`[auth] admin`): list users, disable or enable one; anyone else
is refused before a user is looked up, so the answer says nothing of who exists.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ghostcrate.appliance.api import may_read_private
from ghostcrate.appliance.bodies import json_object, strings
from ghostcrate.appliance.keys import POLICY, PRIVATE
from ghostcrate.appliance.session_api import signed_in
from ghostcrate.private.accounts import TokenInfo, User
from ghostcrate.private.errors import Conflict, NotFound, Refused, RegistryError
from ghostcrate.private.rights import RULE_REGISTRY_ADMIN, RULE_TOKEN
from ghostcrate.private.tokens import Actor

log = logging.getLogger(__name__)

NEW_TOKEN_BODY = (
    'expected a JSON body like {"api_token": {"name": "ci", "crate_scopes": ["acme-*"], '
    '"endpoint_scopes": ["publish-update"], "expired_at": "2030-01-01T00:00:00Z"}}'
)
#: RFC 3339's date-time (section 5.6), which `datetime.fromisoformat` then reads.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
#: The longest token name accepted (crates.io keeps names short too).
MAX_TOKEN_NAME = 64


async def list_tokens(request: web.Request) -> web.Response:
    actor = await _holder(request)
    now = time.time()
    tokens = [
        _token_json(info)
        for info in await request.app[PRIVATE].accounts.tokens(actor.user)
        if info.revoked_at is None and (info.expires_at is None or info.expires_at > now)
    ]
    return web.json_response({"api_tokens": tokens})


async def create_token(request: web.Request) -> web.Response:
    actor = await _holder(request)
    document = (await json_object(request, NEW_TOKEN_BODY)).get("api_token")
    if not isinstance(document, dict):
        raise RegistryError(NEW_TOKEN_BODY)
    name = document.get("name")
    crates, scopes = _limit(document, "crate_scopes"), _limit(document, "endpoint_scopes")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_TOKEN_NAME:
        raise RegistryError(NEW_TOKEN_BODY)
    days = _days_until(document.get("expired_at"))
    registry = request.app[PRIVATE]
    token, info = await registry.accounts.create_token(
        actor.user, name=name, scopes=tuple(scopes), crates=tuple(crates), expires_in_days=days
    )
    log.info(
        "token created",
        extra={"token_id": info.id, "user": actor.user, "credential": actor.credential},
    )
    return web.json_response(
        {"api_token": _token_json(info) | {"token": token}},
        headers={"Cache-Control": "no-store"},
    )


def _limit(document: dict[str, Any], key: str) -> list[str]:
    """A token's `crate_scopes` or `endpoint_scopes`: absent or null is no limit; anything
    else must be a list of strings, and an empty one (a limit to nothing) is refused rather
    than read as no limit."""
    value = document.get(key)
    if value is None:
        return []
    if not strings(value, allow_empty=True):
        raise RegistryError(NEW_TOKEN_BODY)
    if not value:
        raise RegistryError(f"{key} is empty: list what the token may do, or leave it out (null)")
    return list(value)


async def revoke_token(request: web.Request) -> web.Response:
    actor = await _holder(request)
    registry = request.app[PRIVATE]
    wanted = request.match_info["id"]
    mine = {
        str(info.id)
        for info in await registry.accounts.tokens(actor.user)
        if info.revoked_at is None
    }
    if wanted not in mine:  # another user's token is as absent as one that never was
        raise NotFound(f"you have no live token with id {wanted} (see GET /api/v1/me/tokens)")
    await registry.revoke_token(int(wanted))
    log.info(
        "token revoked",
        extra={"token_id": int(wanted), "user": actor.user, "credential": actor.credential},
    )
    return web.json_response({})


async def show_user(request: web.Request) -> web.Response:
    login = request.match_info["login"]
    hidden = NotFound(f"no user {login!r} here")
    if not await may_read_private(request):
        raise hidden
    user = await request.app[PRIVATE].accounts.user(login)
    if user is None:
        raise hidden
    return web.json_response(
        {"user": {"id": user.id, "login": user.name, "name": user.name, "kind": "user"}}
    )


async def list_users(request: web.Request) -> web.Response:
    await _administrator(request)
    users = await request.app[PRIVATE].accounts.users()
    return web.json_response({"users": [_admin_user_json(user) for user in users]})


async def disable_user(request: web.Request) -> web.Response:
    return await _set_disabled(request, disabled=True)


async def enable_user(request: web.Request) -> web.Response:
    return await _set_disabled(request, disabled=False)


async def _set_disabled(request: web.Request, *, disabled: bool) -> web.Response:
    actor = await _administrator(request)
    login = request.match_info["login"]
    if disabled and login.lower() == actor.user.lower():
        raise Conflict("you cannot disable yourself: ask another administrator")
    registry = request.app[PRIVATE]
    seq = await registry.accounts.set_disabled(login, disabled=disabled)
    await registry.apply(seq)  # every worker refuses (or accepts) them before this answer
    user = await registry.accounts.user(login)
    assert user is not None
    log.info(
        "user disabled" if disabled else "user enabled",
        extra={"login": user.name, "user": actor.user, "credential": actor.credential},
    )
    return web.json_response({"user": _admin_user_json(user)})


async def _holder(request: web.Request) -> Actor:
    """The caller, managing their own account: a session, or a token without limits."""
    actor = await signed_in(request)
    if actor.token_id is not None and (actor.scopes or actor.crates or actor.org):
        raise Refused(
            "this token is limited (scopes, crates or organisation), so it may not manage "
            f"tokens: use a session or a token without limits (rule: {RULE_TOKEN})",
            RULE_TOKEN,
        )
    return actor


async def _administrator(request: web.Request) -> Actor:
    actor = await _holder(request)
    if not request.app[POLICY].admin.allows(actor, request.remote):
        raise Refused(
            f"you ({actor.user}) may not administer users: that is for the registry's "
            f"administrators ([auth] admin) (rule: {RULE_REGISTRY_ADMIN})",
            RULE_REGISTRY_ADMIN,
        )
    return replace(actor, admin=True)


def _days_until(value: object) -> float | None:
    """`expired_at` (RFC 3339, in the future) as days from now; None: never expires."""
    if value is None:
        return None
    problem = "expired_at must be an RFC 3339 date and time in the future, or null"
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise RegistryError(problem)
    try:
        moment = datetime.fromisoformat(value.upper())  # 3.11 reads only "T" and "Z"
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp() - time.time()
    except (ValueError, OverflowError, OSError):
        raise RegistryError(problem) from None
    if seconds <= 0:
        raise RegistryError(problem)
    return seconds / 86400


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _token_json(info: TokenInfo) -> dict[str, object]:
    """A token as crates.io lists it (`crate_scopes`/`endpoint_scopes` null: no limit)."""
    return {
        "id": info.id,
        "name": info.name,
        "created_at": _iso(info.created_at),
        "last_used_at": None,
        "expired_at": _iso(info.expires_at),
        "crate_scopes": list(info.crates) or None,
        "endpoint_scopes": list(info.scopes) or None,
    }


def _admin_user_json(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "login": user.name,
        "name": user.name,
        "admin": user.admin,
        "disabled": user.disabled,
    }
