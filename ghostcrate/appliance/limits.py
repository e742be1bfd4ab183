"""Request rate limits (`[limits]`) per route class, per token, user and client address.

Only the web API is limited: `route_class` puts each /api/ request in one
class (publish, login, search, api); cargo's download route and everything
outside /api/ (the index, /healthz, /metrics) is never counted. The fast lane
and the h2 lane answer index and download hits themselves and never reach
this; what they hand on (the API) comes through aiohttp and this middleware,
with the client's own address (the h2 relay reports it as the peer).

A request is checked against its class's address rate first (before any
authentication, so a flood without tokens stops here), then its token's (the
key is a salted hash of the token), then its user's: the user comes from the
token cache of `Policy`, or, for a token this worker has not seen lately,
from the same lookup the route does next (which then finds it cached), so the
limits add no database read. A refusal by a later check gives back what the
earlier ones spent, so a refused request costs no budget. The budgets live in
`LimitTable`, shared by every worker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Counter

from ghostcrate.appliance.errors import audit_failure
from ghostcrate.appliance.limit_table import LimitTable
from ghostcrate.appliance.policy import Policy, token_of
from ghostcrate.appliance.replies import error_reply
from ghostcrate.config.model import LimitsSettings
from ghostcrate.config.rates import Rate, parse_rate
from ghostcrate.private.errors import RegistryError

log = logging.getLogger(__name__)

CLASSES = ("publish", "login", "search", "api")
KINDS = ("per_address", "per_token", "per_user")
DOWNLOAD = "/api/v1/crates/{name}/{version}/download"
_LOGIN = {
    ("POST", "/api/v1/session"),
    ("POST", "/api/v1/session/refresh"),
    ("GET", "/api/v1/sso/{provider}/login"),
    ("GET", "/api/v1/sso/{provider}/callback"),
}
_WHOSE = {"per_address": "from {}", "per_token": "with this token", "per_user": "by user {}"}


def route_class(method: str, path: str, route: str | None) -> str | None:
    """The class of a request (`route`: its canonical route, None if none matched), or None
    for one that is not limited."""
    if not path.startswith("/api/") or route == DOWNLOAD:
        return None
    method = "GET" if method == "HEAD" else method
    if (method, route) == ("PUT", "/api/v1/crates/new"):
        return "publish"
    if (method, route) in _LOGIN:
        return "login"
    if (method, route) == ("GET", "/api/v1/crates"):
        return "search"
    return "api"


@dataclass(frozen=True, slots=True)
class _Spent:
    fingerprint: int
    rate: Rate


class RateLimits:
    """The configured rates, checked against the shared table."""

    def __init__(
        self, settings: LimitsSettings, table: LimitTable, policy: Policy, refused: Counter
    ) -> None:
        self._table = table
        self._policy = policy
        self._refused = refused
        #: (class, kind) -> the rate, and its text as configured (for the 429's detail).
        self._rates: dict[tuple[str, str], tuple[Rate, str]] = {}
        for name in CLASSES if settings.enabled else ():
            for kind in KINDS:
                text = getattr(getattr(settings, name), kind)
                rate = parse_rate(text)
                if rate is not None:
                    self._rates[(name, kind)] = (rate, text)

    async def refusal(self, request: web.Request) -> web.Response | None:
        """None if the request is within its budgets (and now counted), else the 429."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        name = route_class(request.method, request.path, route)
        if name is None:
            return None
        spent: list[_Spent] = []
        for kind in KINDS:
            configured = self._rates.get((name, kind))
            if configured is None:
                continue
            rate, text = configured
            key, whose = await self._key(request, kind)
            if key is None:
                continue
            fingerprint = self._table.fingerprint(f"{name}\0{kind}\0{key}")
            wait = self._table.take(fingerprint, rate, time.time())
            if wait:
                for done in spent:
                    self._table.give_back(done.fingerprint, done.rate)
                return self._refuse(
                    request, name=name, kind=kind, rate=text, wait=wait, whose=whose
                )
            spent.append(_Spent(fingerprint, rate))
        return None

    async def _key(self, request: web.Request, kind: str) -> tuple[str | None, str]:
        """The key a request is counted under for `kind`, and how to name its owner."""
        if kind == "per_address":
            return request.remote, request.remote or ""
        token = token_of(request.headers.get("Authorization"))
        if token is None or kind == "per_token":
            return token, ""
        actor = self._policy.remembered(token)
        if actor is None:
            with contextlib.suppress(RegistryError):  # the route says what is wrong with it
                actor = await self._policy.authenticate(token)
        return (None, "") if actor is None else (str(actor.user_id), actor.user)

    def _refuse(
        self, request: web.Request, *, name: str, kind: str, rate: str, wait: float, whose: str
    ) -> web.Response:
        seconds = max(1, math.ceil(wait))
        limit = f"[limits.{name}] {kind}"
        self._refused.labels(name, kind).inc()
        log.warning(
            "rate limited",
            extra={
                "limit": f"{name}.{kind}",
                "retry_after": seconds,
                "method": request.method,
                "path": request.path,
                "remote": request.remote,
                **({"user": whose} if kind == "per_user" else {}),
            },
        )
        reply = error_reply(
            429,
            f"too many {name} requests {_WHOSE[kind].format(whose)}: the limit is {rate} "
            f"({limit}); try again in {seconds} s",
        )
        audit_failure(request, f"limits.{name}.{kind}", f"over {limit} = {rate}")
        return web.Response(
            status=429,
            body=reply.body,
            content_type=reply.content_type,
            headers={"Retry-After": str(seconds)},
        )
