"""Who may do what (`[auth]`), decided in one place for the lanes, aiohttp and the API.

Reads are checked twice over: `quick` answers from memory (a token this
process has looked up before, the client's address) so that a cache hit in
the fast lane stays a dictionary lookup; whatever it cannot allow goes to
`read`, which looks the token up and says why a request is refused. A reader
who may not read private crates is told that they do not exist (404).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from functools import lru_cache

from prometheus_client import Counter

from ghostcrate.appliance.logs import REQUEST_ID
from ghostcrate.appliance.namespace import MergedReplies
from ghostcrate.appliance.replies import Reply, error_reply
from ghostcrate.config.model import AuthSettings
from ghostcrate.private import audit
from ghostcrate.private.accounts import Accounts
from ghostcrate.private.audit_refusals import Refusal, RefusalLog
from ghostcrate.private.errors import Refused, RegistryError, Unauthorized
from ghostcrate.private.sessions import Sessions, looks_like_session
from ghostcrate.private.tokens import Actor

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TOKEN_NEEDED = (
    "this action requires a token: ask an administrator for one "
    "(`ghostcrate token create`) and run `cargo login --registry <name>`"
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One `[auth]` list: who it lets through."""

    anonymous: bool
    token: bool
    admin: bool
    users: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, values: list[str]) -> Rule:
        words = set(values)
        users = [v.removeprefix("user:").lower() for v in values if v.startswith("user:")]
        return cls(
            anonymous="anonymous" in words,
            token="token" in words,
            admin="admin" in words,
            users=frozenset(users),
            networks=tuple(
                ipaddress.ip_network(v, strict=False)
                for v in values
                if v not in ("anonymous", "token", "admin") and not v.startswith("user:")
            ),
        )

    @property
    def wants_token(self) -> bool:
        """Whether some reader gets in only with a token."""
        return not self.anonymous and (self.token or self.admin or bool(self.users))

    def allows(self, actor: Actor | None, remote: str | None) -> bool:
        if self.anonymous:
            return True
        if actor is not None and (
            self.token or (self.admin and actor.admin) or actor.user.lower() in self.users
        ):
            return True
        return bool(self.networks) and _in(remote, self.networks)


class Policy:
    def __init__(
        self,
        settings: AuthSettings,
        accounts: Accounts,
        sessions: Sessions,
        failures: Counter,
        refusals: RefusalLog,
    ) -> None:
        """`failures` counts, and `refusals` audits, the reads refused here (raised
        refusals are counted and audited where they are answered, in `errors.cargo_errors`)."""
        self._failures = failures
        self._refusals = refusals
        self.required = settings.required
        self.read_mirror = Rule.parse(settings.read_mirror)
        self.read_private = Rule.parse(settings.read_private)
        self.publish = Rule.parse(settings.publish)
        self.admin = Rule.parse(settings.admin)
        self._accounts = accounts
        self._sessions = sessions
        #: config.json says `auth-required`, the only way to make cargo send its token when
        #: it reads the index: when `required`, or when a read rule names token holders.
        self.tokens_wanted = self.required or any(
            rule.wants_token for rule in (self.read_mirror, self.read_private)
        )
        #: Every read is allowed without looking at the request: the lanes skip the checks.
        self.open_reads = (
            not self.required and self.read_mirror.anonymous and (self.read_private.anonymous)
        )

    def quick(self, token: str | None, remote: str | None, *, private: bool | None) -> bool:
        """Whether a read is allowed on what this process remembers (False: ask `read`).

        `private` None is config.json: anyone may read it unless `required`.
        """
        actor = self.remembered(token) if token else None
        if self.required and actor is None:
            return False
        if private is None:
            return True
        return (self.read_private if private else self.read_mirror).allows(actor, remote)

    async def read(
        self,
        token: str | None,
        remote: str | None,
        *,
        private: bool | None,
        hidden: Reply | None = None,
        path: str | None = None,
    ) -> Reply | None:
        """None if the read is allowed, else the reply that refuses it (see `quick`).

        `hidden`: the reply for a private crate the reader may not see (as if it did not
        exist). `path`: what was asked, for the audit log.
        """
        where = (remote, path)
        actor = None
        if token:
            try:
                actor = await self.authenticate(token)
            except RegistryError as error:
                return self._refused(
                    error_reply(error.status, error.detail), where, None, "authentication"
                )
        if self.required and actor is None:
            return self._refused(error_reply(401, TOKEN_NEEDED), where, None, "auth-required")
        if private is None or (self.read_private if private else self.read_mirror).allows(
            actor, remote
        ):
            return None
        if private:
            reply = hidden or error_reply(404, "no such crate here")
            return self._refused(reply, where, actor, "auth-read_private", "hidden")
        return self._refused(_refusal(actor), where, actor, "auth-read_mirror")

    def _refused(
        self,
        reply: Reply,
        where: tuple[str | None, str | None],
        actor: Actor | None,
        rule: str,
        reason: str | None = None,
    ) -> Reply:
        """Count and audit a read's refusal; `where`: the client's address and the path."""
        self._failures.labels(reason or failure_reason(reply.status)).inc()
        remote, path = where
        user, credential = (None, None) if actor is None else (actor.user, actor.credential)
        request_id = REQUEST_ID.get()
        self._refusals.note(
            Refusal("read", audit.REFUSED, rule, remote, user, credential),
            request_id=None if request_id == "-" else request_id,
            detail=path,
        )
        return reply

    async def actor(self, token: str | None, remote: str | None) -> Actor | None:
        """Who a token stands for (None without one; refused if bad or required)."""
        if not token:
            if self.required:
                raise Unauthorized(TOKEN_NEEDED)
            return None
        return await self.authenticate(token)

    async def authenticate(self, token: str) -> Actor:
        """Who an API token (`gcr_...`) or a session token (a JWT) stands for; `Forbidden`
        if it is not valid. The request's audit records name them from now on."""
        if looks_like_session(token):
            actor = await self._sessions.authenticate(token)
        else:
            actor = await self._accounts.authenticate(token)
        audit.identify(actor.user, actor.credential)
        return actor

    def remembered(self, token: str) -> Actor | None:
        """Who a token stands for, if this process looked it up lately (no database read)."""
        if looks_like_session(token):
            return self._sessions.remembered(token)
        return self._accounts.remembered(token)

    async def writer(self, token: str | None, remote: str | None) -> Actor:
        """The actor of a write (publish, yank, owners), checked against `[auth] publish`."""
        actor = await self.actor(token, remote)
        if actor is None:
            raise Unauthorized(TOKEN_NEEDED)
        if not self.publish.allows(actor, remote):
            raise Refused(
                f"user {actor.user} may not publish here ([auth] publish)", "auth-publish"
            )
        return replace(actor, admin=self.admin.allows(actor, remote))

    async def may_read_private(self, token: str | None, remote: str | None) -> bool:
        """For the API's reading routes (crate metadata, owners, search)."""
        actor = await self.actor(token, remote)
        return self.read_private.allows(actor, remote)


def _refusal(actor: Actor | None) -> Reply:
    if actor is None:
        return error_reply(401, "reading crates here needs a token ([auth] read_mirror)")
    return error_reply(403, f"user {actor.user} may not read crates here ([auth] read_mirror)")


async def refused_read(
    policy: Policy,
    replies: MergedReplies,
    route: str,
    path: str,
    *,
    token: str | None,
    remote: str | None,
) -> Reply | None:
    """What `[auth]` answers instead of a read of `route`, the same in every front end."""
    await replies.registry.sync()
    private = replies.is_private(route, path)
    hidden = replies.absent(route, path) if private else None
    return await policy.read(token, remote, private=private, hidden=hidden, path=path)


def failure_reason(status: int) -> str:
    """The `ghostcrate_auth_failures_total` reason of a refusal's status."""
    return "unauthenticated" if status == 401 else "forbidden"


def token_of(authorization: str | None) -> str | None:
    """The token in an Authorization header: cargo sends it bare; `Bearer ` is allowed."""
    if authorization is None:
        return None
    return authorization.strip().removeprefix("Bearer ").strip() or None


@lru_cache(maxsize=4096)
def _address(remote: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(remote)
    except ValueError:
        return None


def _in(remote: str | None, networks: tuple[Network, ...]) -> bool:
    address = _address(remote) if remote is not None else None
    return address is not None and any(address in network for network in networks)
