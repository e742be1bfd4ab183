"""Single sign-on in the registry database: logins in progress, and who each identity is.

A login in progress (its `state`, `nonce` and PKCE verifier) is kept here rather
than in one worker's memory, because the provider may send the browser back to
another worker; it can be taken once only, and only until it expires. Only the
sha256 of `state` is stored. An identity is a provider's subject, linked to the
user its first sign-in registered.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import aiosqlite

from ghostcrate.private import audit, changes
from ghostcrate.private.accounts import User
from ghostcrate.private.db import Database, Row

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")
#: How many `name-2`, `name-3`, ... are tried before a random suffix.
_NUMBERED = 20


@dataclass(frozen=True, slots=True)
class PendingLogin:
    nonce: str
    verifier: str


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: User
    #: The first sign-in of this identity registered `user`.
    registered: bool
    #: The changes feed's seq of the registration, or None.
    seq: int | None


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class Identities:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def begin_login(
        self, provider: str, state: str, nonce: str, verifier: str, ttl: float
    ) -> None:
        """Keep a login begun for `provider` for `ttl` seconds (and drop expired ones)."""
        now = time.time()
        async with self._db.write() as connection:
            await connection.execute("DELETE FROM sso_logins WHERE expires_at <= ?", (now,))
            await connection.execute(
                "INSERT INTO sso_logins (state_hash, provider, nonce, verifier, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (_state_hash(state), provider, nonce, verifier, now + ttl),
            )

    async def take_login(self, provider: str, state: str) -> PendingLogin | None:
        """The login begun with `state` for `provider`, removed so it cannot be taken again;
        None if there is none (never begun, taken already, expired, or another provider's)."""
        async with (
            self._db.write() as connection,
            connection.execute(
                "DELETE FROM sso_logins WHERE state_hash = ? AND provider = ?"
                " RETURNING nonce, verifier, expires_at",
                (_state_hash(state), provider),
            ) as cursor,
        ):
            row: Row | None = await cursor.fetchone()
        if row is None or row["expires_at"] <= time.time():
            return None
        return PendingLogin(row["nonce"], row["verifier"])

    async def sign_in(
        self, provider: str, subject: str, name: str, claims: dict[str, Any]
    ) -> SignedIn:
        """The user linked to `provider`'s `subject`, registered (named after `name`) on
        the first sign-in; the claims are kept either way."""
        now = time.time()
        kept = json.dumps(claims, sort_keys=True)
        async with self._db.write() as connection:
            async with connection.execute(
                "SELECT u.* FROM identities i JOIN users u ON u.id = i.user_id"
                " WHERE i.provider = ? AND i.subject = ?",
                (provider, subject),
            ) as cursor:
                row: Row | None = await cursor.fetchone()
            if row is not None:
                await connection.execute(
                    "UPDATE identities SET claims = ?, signed_in_at = ?"
                    " WHERE provider = ? AND subject = ?",
                    (kept, now, provider, subject),
                )
                user = User(row["id"], row["name"], bool(row["admin"]), bool(row["disabled"]))
                return SignedIn(user, registered=False, seq=None)
            chosen = await _free_name(connection, name, provider)
            cursor = await connection.execute(
                "INSERT INTO users (name, admin, created_at) VALUES (?, 0, ?)", (chosen, now)
            )
            assert cursor.lastrowid is not None
            await connection.execute(
                "INSERT INTO identities (provider, subject, user_id, claims, created_at,"
                " signed_in_at) VALUES (?, ?, ?, ?, ?, ?)",
                (provider, subject, cursor.lastrowid, kept, now, now),
            )
            await audit.append(connection, "register-user", target=chosen, detail=f"via {provider}")
            seq = await changes.record(connection, changes.ACCOUNTS)
        return SignedIn(User(cursor.lastrowid, chosen, False, False), registered=True, seq=seq)

    async def claims(self, provider: str, subject: str) -> dict[str, Any] | None:
        """The claims kept from the identity's last sign-in."""
        row = await self._db.one(
            "SELECT claims FROM identities WHERE provider = ? AND subject = ?",
            (provider, subject),
        )
        return None if row is None else dict(json.loads(row["claims"]))


def user_name_from(wanted: str) -> str:
    """`wanted` (a login, or an e-mail address's local part) as a valid user name."""
    local = wanted.split("@", 1)[0]
    name = _NOT_IN_NAMES.sub("-", local).strip("._-")[:48]
    return name or "user"


async def _free_name(connection: aiosqlite.Connection, wanted: str, provider: str) -> str:
    """`wanted` as a user name nobody has: a name taken by another user (a local account,
    or someone of another provider) is never reused, which would hand over that account."""
    base = user_name_from(wanted)
    candidates = [base, f"{base}-{provider}"[:64]]
    candidates += [f"{base}-{provider}-{n}"[:64] for n in range(2, _NUMBERED)]
    for candidate in candidates:
        async with connection.execute(
            "SELECT 1 FROM users WHERE lower(name) = lower(?)", (candidate,)
        ) as cursor:
            if await cursor.fetchone() is None:
                return candidate
    return f"{base}-{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:8]}"
