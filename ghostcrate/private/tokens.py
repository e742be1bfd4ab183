"""API tokens: how they are made, stored (only a hash), and what each may do.

A token is `gcr_` and 43 URL-safe characters (256 random bits); the database
keeps its sha256, so a leaked database gives no usable token. Scopes are
crates.io's: a token with none may do everything its user may; one with
scopes may do only those, and only to crates matching its name patterns
(crates.io's crate scopes: a name, or a name's beginning and `*`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ghostcrate.private.errors import Forbidden

PREFIX = "gcr_"
#: crates.io's endpoint scopes.
SCOPES = ("publish-new", "publish-update", "yank", "change-owners")
_TOKEN = re.compile(r"gcr_[A-Za-z0-9_-]{43}")
#: A token's crate pattern, as crates.io allows them: `*`, a name, or a name's start and `*`.
_CRATE_PATTERN = re.compile(r"\*|[A-Za-z][A-Za-z0-9_-]{0,63}\*?")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def valid_pattern(pattern: str) -> bool:
    return _CRATE_PATTERN.fullmatch(pattern) is not None


def canonical(name: str) -> str:
    """A crate name or name pattern as names are compared: lowercase, `-` equal to `_`."""
    return name.lower().replace("-", "_")


def matches(patterns: tuple[str, ...] | list[str], name: str) -> bool:
    """Whether crate `name` matches one of `patterns` (`*` is any run of characters)."""
    key = canonical(name)
    return any(fnmatchcase(key, canonical(pattern)) for pattern in patterns)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who a request acts for: a user, through one of their tokens or a session."""

    user_id: int
    user: str
    admin: bool
    #: The API token's id; None for a session (whose `session_id` is set).
    token_id: int | None
    #: Endpoint scopes; empty means every scope.
    scopes: frozenset[str] = frozenset()
    #: Crate name patterns the token is limited to; empty means every crate.
    crates: tuple[str, ...] = ()
    #: Unix time after which the token no longer works, if it expires.
    expires_at: float | None = None
    #: The session (`sid`) whose token this is; None for an API token.
    session_id: str | None = None
    #: The organisation the token is limited to (its namespace and its teams' crates).
    org: str | None = None

    @property
    def credential(self) -> str:
        """What the request authenticated with, for the log: `token 12` or `session SID`."""
        return (
            f"token {self.token_id}" if self.token_id is not None else f"session {self.session_id}"
        )

    def allows(self, scope: str, crate: str) -> bool:
        """Whether the token's scopes let it do `scope` to crate `crate`."""
        return self._refusal(scope, crate) is None

    def check(self, scope: str, crate: str) -> None:
        """Raise `Forbidden` (crates.io's 403) unless `allows(scope, crate)`, saying why."""
        refusal = self._refusal(scope, crate)
        if refusal is not None:
            raise Forbidden(refusal)

    def _refusal(self, scope: str, crate: str) -> str | None:
        if self.scopes and scope not in self.scopes:
            return (
                f"this token does not have the `{scope}` scope (it has "
                f"{', '.join(sorted(self.scopes))}): use a token created with `--scope {scope}`"
            )
        if self.crates and not matches(self.crates, crate):
            return (
                f"this token is limited to crates {', '.join(self.crates)}, not {crate}: "
                f"use a token whose `--crates` matches {crate}"
            )
        return None
