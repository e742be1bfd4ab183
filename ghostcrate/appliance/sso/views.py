"""The single sign-on routes: `GET /api/v1/sso/{provider}/login` and `.../callback`."""

from __future__ import annotations

import logging

from aiohttp import web

from ghostcrate.appliance.keys import PRIVATE, SSO
from ghostcrate.appliance.sso import flow
from ghostcrate.appliance.sso.roles import apply_org_roles
from ghostcrate.private.errors import Forbidden

log = logging.getLogger(__name__)


#: The cookie that ties a login to the browser that began it (it holds the login's state).
COOKIE = "ghostcrate_sso"


async def login(request: web.Request) -> web.Response:
    """Send the browser to the provider, with a new login's `state`, `nonce` and PKCE."""
    sso = request.app[SSO]
    provider = sso.provider(request.match_info["provider"])
    url, state = await flow.begin(provider, request.app[PRIVATE].identities, sso.http)
    response = web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE,
        state,
        max_age=int(flow.LOGIN_SECONDS),
        path=f"/api/v1/sso/{provider.name}/",
        httponly=True,
        secure=provider.redirect_uri.startswith("https://"),
        samesite="Lax",  # sent on the provider's redirect back, a top-level navigation
    )
    return response


async def callback(request: web.Request) -> web.Response:
    """Finish a login: a session for who signed in (registered on the first sign-in)."""
    sso = request.app[SSO]
    provider = sso.provider(request.match_info["provider"])
    registry = request.app[PRIVATE]
    identity = await flow.finish(
        provider, registry.identities, sso.http, request.query, request.cookies.get(COOKIE)
    )
    flow.check_allowed(provider, identity)
    signed_in = await registry.sign_in(
        provider.name, identity.subject, identity.name, identity.claims
    )
    user = signed_in.user
    if user.disabled:
        raise Forbidden(f"user {user.name} is disabled: ask an administrator of this registry")
    roles = await apply_org_roles(
        registry, provider.name, provider.settings.org_roles, user, identity.groups
    )
    issued = await registry.sessions.issue(user, via=f"sso:{provider.name}")
    log.info(
        "signed in",
        extra={
            "provider": provider.name,
            "user": user.name,
            "registered": signed_in.registered,
            "org_roles": roles,
        },
    )
    # The answer of POST /api/v1/session.
    response = web.json_response(
        {
            "token": issued.token,
            "refresh_token": issued.refresh_token,
            "expires_in": issued.expires_in,
            "refresh_expires_in": issued.refresh_expires_in,
            "user": {"id": user.id, "login": user.name, "name": user.name, "admin": user.admin},
        },
        headers={"Cache-Control": "no-store"},
    )
    response.del_cookie(COOKIE, path=f"/api/v1/sso/{provider.name}/")
    return response
