"""One sign-in: the redirect to the provider, then the callback's checks and exchange.

OpenID Connect's authorization code flow (Core 1.0 section 3.1) with PKCE
(RFC 7636, S256): `state` (one-time, kept in the registry database so any worker
can finish the login) ties the callback to a login this registry began, the
verifier ties the code to it, and the ID token must be signed by one of the
provider's keys, by the expected issuer, for this client, unexpired, and carry
the login's `nonce`. GitHub has no ID token: its user and organisations come
from its API with the access token. Every refusal is a 4xx naming what failed.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet

from ghostcrate.appliance.sso.providers import (
    Provider,
    ProviderUnavailable,
    parse_object,
)
from ghostcrate.private.errors import Forbidden, RegistryError
from ghostcrate.private.identities import Identities

log = logging.getLogger(__name__)

#: Seconds between the redirect to the provider and the callback, at most.
LOGIN_SECONDS = 600.0
#: Seconds of clock difference allowed with the provider for `exp`, `iat` and `nbf`.
LEEWAY_SECONDS = 60
#: Signature algorithms accepted for ID tokens (never `none`, never HMAC with the secret).
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
_LONGEST_ANSWER = 1 << 20
_AGAIN = "sign in again from the start"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in."""

    subject: str
    #: The name to register the user under (a login, a preferred user name or an e-mail).
    name: str
    #: What is kept of the claims (or GitHub's profile), including `groups`.
    claims: dict[str, Any]
    groups: tuple[str, ...]


class SignInRefused(RegistryError):
    """The callback cannot be accepted (400), naming what failed."""


async def begin(
    provider: Provider, identities: Identities, http: aiohttp.ClientSession
) -> tuple[str, str]:
    """The provider's authorization URL for a new login (kept for `LOGIN_SECONDS`), and its
    `state`, which the browser keeps in a cookie (see `finish`)."""
    endpoints = await provider.endpoints(http)
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43-128
    await identities.begin_login(provider.name, state, nonce, verifier, LOGIN_SECONDS)
    query = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": provider.redirect_uri,
        "scope": " ".join(provider.scopes),
        "state": state,
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    if not provider.github:
        query["nonce"] = nonce
    separator = "&" if "?" in endpoints.authorization else "?"
    return endpoints.authorization + separator + urlencode(query), state


async def finish(
    provider: Provider,
    identities: Identities,
    http: aiohttp.ClientSession,
    query: Mapping[str, str],
    browser_state: str | None,
) -> Identity:
    """Check the callback's `query` and exchange its code: who signed in.

    `browser_state` is the `state` the browser's cookie holds: a callback must come from
    the browser that began the login, so that nobody can have another person's browser
    finish a login of theirs (login CSRF, RFC 6749 section 10.12).
    """
    if "error" in query:
        description = query.get("error_description", "")
        raise SignInRefused(
            f"{provider.name} did not sign you in: {query['error']}"
            + (f" ({description})" if description else "")
        )
    state, code = query.get("state"), query.get("code")
    if not state:
        raise SignInRefused(f"the callback has no `state`: {_AGAIN}")
    pending = await identities.take_login(provider.name, state)
    if pending is None:
        raise SignInRefused(
            f"the callback's `state` is not one of a login begun here (unknown, used already, "
            f"or older than {LOGIN_SECONDS / 60:g} minutes): {_AGAIN}"
        )
    if not hmac.compare_digest((browser_state or "").encode(), state.encode()):
        raise SignInRefused(
            "this browser did not begin this login (its sign-in cookie is missing or is of "
            f"another login): {_AGAIN}"
        )
    if not code:
        raise SignInRefused(f"the callback has no `code`: {_AGAIN}")
    tokens = await _exchange(provider, http, code, pending.verifier)
    if provider.github:
        return await _github_identity(provider, http, tokens)
    id_token = tokens.get("id_token")
    if not isinstance(id_token, str):
        raise ProviderUnavailable(f"{provider.name}'s token endpoint answered without an ID token")
    claims = await verify_id_token(provider, http, id_token, pending.nonce)
    return _oidc_identity(provider, claims)


async def _exchange(
    provider: Provider, http: aiohttp.ClientSession, code: str, verifier: str
) -> dict[str, Any]:
    """The token endpoint's answer to the code and the PKCE verifier."""
    endpoints = await provider.endpoints(http)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": provider.redirect_uri,
        "code_verifier": verifier,
    }
    auth = None
    if endpoints.basic_auth:
        auth = aiohttp.BasicAuth(provider.client_id, provider.secret)
    else:
        form |= {"client_id": provider.client_id, "client_secret": provider.secret}
    try:
        async with http.post(
            endpoints.token, data=form, auth=auth, headers={"Accept": "application/json"}
        ) as response:
            body = await response.content.read(_LONGEST_ANSWER)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ProviderUnavailable(
            f"{provider.name}'s token endpoint cannot be reached: {error!r}"
        ) from None
    answer = parse_object(body, f"{provider.name}'s token endpoint's answer (HTTP {status})")
    if status != 200 or "error" in answer:
        refusal = answer.get("error", f"HTTP {status}")
        description = answer.get("error_description", "")
        log.warning("sso code refused", extra={"provider": provider.name, "error": str(refusal)})
        raise SignInRefused(
            f"{provider.name} refused the authorization code ({refusal}"
            + (f": {description}" if description else "")
            + f"); a code is good for one sign-in only: {_AGAIN}"
        )
    return answer


async def verify_id_token(
    provider: Provider, http: aiohttp.ClientSession, id_token: str, nonce: str
) -> dict[str, Any]:
    """The ID token's claims, once its signature, issuer, audience, times and nonce hold."""
    endpoints = await provider.endpoints(http)
    keys = await provider.keys(http)
    try:
        token = _decode(id_token, keys)
    except InvalidKeyIdError:  # a key the provider rolled over to since the JWKS was fetched
        try:
            token = _decode(id_token, await provider.keys(http, again=True))
        except InvalidKeyIdError:
            raise SignInRefused(
                "the ID token is signed with a key the provider does not publish (JWKS): "
                "it was not issued by this provider"
            ) from None
    claims = CodeIDToken(
        token.claims,
        token.header,
        options={
            "iss": {"essential": True, "values": sorted(endpoints.issuers)},
            "aud": {"essential": True, "value": provider.client_id},
        },
        params={"nonce": nonce, "client_id": provider.client_id},
    )
    try:
        claims.validate(now=int(time.time()), leeway=LEEWAY_SECONDS)
    except ExpiredTokenError:
        raise SignInRefused(f"the ID token from {provider.name} has expired: {_AGAIN}") from None
    except ClaimError as error:
        raise SignInRefused(_claim_refusal(provider, error, token.claims)) from None
    return dict(token.claims)


def _decode(id_token: str, keys: KeySet) -> jwt.Token:
    try:
        return jwt.decode(id_token, keys, algorithms=ALGORITHMS)
    except InvalidKeyIdError:
        raise
    except BadSignatureError:
        raise SignInRefused(
            "the ID token's signature does not verify with the provider's keys (JWKS): "
            "it was not issued by this provider"
        ) from None
    except (JoseError, ValueError) as error:
        raise SignInRefused(f"the ID token cannot be read: {error}") from None


def _claim_refusal(provider: Provider, error: ClaimError, claims: Mapping[str, Any]) -> str:
    claim = getattr(error, "claim", None) or str(error)
    if claim == "aud":
        return (
            f"the ID token is for audience {claims.get('aud')!r}, not this registry's "
            f"client_id {provider.client_id!r}"
        )
    if claim == "iss":
        return f"the ID token's issuer {claims.get('iss')!r} is not {provider.name}'s"
    if claim == "nonce":
        return f"the ID token's nonce is not the one this login sent: {_AGAIN}"
    return f"the ID token's claim {claim!r} is not acceptable ({error})"


def _oidc_identity(provider: Provider, claims: dict[str, Any]) -> Identity:
    subject = str(claims["sub"])
    name = next(
        (
            str(claims[key])
            for key in ("preferred_username", "email", "upn")
            if isinstance(claims.get(key), str) and claims[key]
        ),
        subject,
    )
    groups = _groups(claims.get(provider.settings.groups_claim))
    kept = {key: claims[key] for key in ("email", "name", "preferred_username") if key in claims}
    return Identity(subject, name, kept | {"groups": list(groups)}, groups)


def _groups(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    return ()


async def _github_identity(
    provider: Provider, http: aiohttp.ClientSession, tokens: dict[str, Any]
) -> Identity:
    """GitHub's user and organisations (by login), read with the access token."""
    access = tokens.get("access_token")
    if not isinstance(access, str):
        raise ProviderUnavailable(f"{provider.name}'s token endpoint answered without a token")
    authorization = {"Authorization": f"Bearer {access}"}
    user = await _github_get(provider, http, "/user", authorization)
    orgs = await _github_get(provider, http, "/user/orgs", authorization)
    if not isinstance(user, dict) or "id" not in user or not isinstance(orgs, list):
        raise ProviderUnavailable(f"{provider.name}'s API answered an unexpected shape")
    login = str(user.get("login") or user["id"])
    groups = tuple(str(org["login"]) for org in orgs if isinstance(org, dict) and "login" in org)
    kept = {"login": login, "name": user.get("name"), "email": user.get("email")}
    return Identity(str(user["id"]), login, kept | {"groups": list(groups)}, groups)


async def _github_get(
    provider: Provider, http: aiohttp.ClientSession, path: str, headers: dict[str, str]
) -> Any:
    url = provider.api_url + path
    headers = headers | {"Accept": "application/vnd.github+json"}
    try:
        async with http.get(url, headers=headers) as response:
            body = await response.content.read(_LONGEST_ANSWER)
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ProviderUnavailable(f"GitHub's API cannot be reached at {url}: {error!r}") from None
    if status != 200:
        raise ProviderUnavailable(f"GitHub's API answered {url} with HTTP {status}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ProviderUnavailable(f"GitHub's API answered {url} with something not JSON") from None


def check_allowed(provider: Provider, identity: Identity) -> None:
    """Refuse a user outside `allowed_groups`, when it is set."""
    allowed = provider.settings.allowed_groups
    if allowed and not set(allowed) & set(identity.groups):
        raise Forbidden(
            f"{identity.name} is not in a group allowed to sign in here through "
            f"{provider.name} ([[auth.oidc]] allowed_groups)"
        )
