"""Sign-in for the API and the web: sessions, their refresh and logout, and `GET /api/v1/me`.

`POST /api/v1/session` takes `{"name": ..., "password": ...}` (`login` is an
alias of `name`) and answers `{"token", "refresh_token", "expires_in",
"refresh_expires_in", "user"}`; the token goes in `Authorization: Bearer`.
Refusals are crates.io-style errors: 403 for a wrong sign-in, a token that is
not valid, or an API token where a session is needed; 429 with `Retry-After`
when sign-ins are throttled.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ghostcrate.appliance.bodies import json_object
from ghostcrate.appliance.keys import POLICY, PRIVATE
from ghostcrate.appliance.policy import token_of
from ghostcrate.private import audit
from ghostcrate.private.accounts import User
from ghostcrate.private.errors import Forbidden, RegistryError, Unauthorized
from ghostcrate.private.passwords import MAX_LENGTH
from ghostcrate.private.sessions import IssuedSession
from ghostcrate.private.tokens import Actor

log = logging.getLogger(__name__)

SIGN_IN_BODY = 'expected a JSON body like {"name": "alice", "password": "..."}'
REFRESH_BODY = 'expected a JSON body like {"refresh_token": "gcrr_..."}'
NOT_SIGNED_IN = (
    "this needs a session token or an API token in the Authorization header: "
    "sign in with POST /api/v1/session"
)


async def sign_in(request: web.Request) -> web.Response:
    document = await json_object(request, SIGN_IN_BODY)
    name = document.get("name", document.get("login"))
    password = document.get("password")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise RegistryError(SIGN_IN_BODY)
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        raise RegistryError(SIGN_IN_BODY)
    audit.origin().target = name  # a refused sign-in is recorded with the name it tried
    registry = request.app[PRIVATE]
    await registry.sync()  # signs with the newest key, even one rotated a moment ago
    issued, user = await registry.logins.login(name, password, request.remote)
    return _session_response(issued, user)


async def refresh(request: web.Request) -> web.Response:
    document = await json_object(request, REFRESH_BODY)
    token = document.get("refresh_token")
    if not isinstance(token, str) or not token or len(token) > 256:
        raise RegistryError(REFRESH_BODY)
    registry = request.app[PRIVATE]
    await registry.sync()
    issued, user = await registry.sessions.refresh(token)
    log.info("session refreshed", extra={"user": user.name, "remote": request.remote})
    return _session_response(issued, user)


async def sign_out(request: web.Request) -> web.Response:
    actor = await signed_in(request)
    if actor.session_id is None:
        raise Forbidden(
            "this is an API token, not a session token: revoke it with `ghostcrate token revoke`"
        )
    await request.app[PRIVATE].sessions.revoke(actor.session_id)
    log.info("signed out", extra={"user": actor.user, "remote": request.remote})
    return web.json_response({"ok": True})


async def me(request: web.Request) -> web.Response:
    """The signed-in user, in crates.io's shape."""
    actor = await signed_in(request)
    return web.json_response({"user": _user_json(actor.user_id, actor.user, admin=actor.admin)})


async def signed_in(request: web.Request) -> Actor:
    """Who the credential stands for (401 without one, 403 if it is not valid), after this
    worker has applied what other workers changed (a session ended, a token revoked)."""
    await request.app[PRIVATE].sync()
    token = token_of(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized(NOT_SIGNED_IN)
    return await request.app[POLICY].authenticate(token)


def _session_response(issued: IssuedSession, user: User) -> web.Response:
    return web.json_response(
        {
            "token": issued.token,
            "refresh_token": issued.refresh_token,
            "expires_in": issued.expires_in,
            "refresh_expires_in": issued.refresh_expires_in,
            "user": _user_json(user.id, user.name, admin=user.admin),
        },
        headers={"Cache-Control": "no-store"},
    )


def _user_json(user_id: int, name: str, *, admin: bool) -> dict[str, object]:
    return {"id": user_id, "login": name, "name": name, "admin": admin}
