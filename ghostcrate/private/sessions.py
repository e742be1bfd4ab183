"""Sessions: short-lived signed tokens (JWT, EdDSA) refreshed with rotating refresh tokens.

A sign-in makes a session row and returns two things: a session token, a JWT
signed with the newest key of `SigningKeys` (claims `sub`, `name`, `sid`,
`iat`, `exp`, `iss` = the server's base URL, `aud` = "ghostcrate"), valid
`[auth] session_minutes`; and a refresh token, random and stored only as a
hash, valid `[auth] refresh_days`. Each refresh spends the refresh token and
returns a new pair; a refresh token used twice means it was stolen, so the
whole session is revoked (OAuth 2.0 Security BCP, refresh token rotation).
A token is valid while its signature, `exp`, `iss`, `aud` hold and its
session and user are live; lookups are remembered until the changes feed says
an account changed (logout, disable), so every worker stops a revoked session
within a second.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt

from ghostcrate.private import audit, changes
from ghostcrate.private.accounts import REMEMBER_SECONDS, User
from ghostcrate.private.db import Database, Row
from ghostcrate.private.errors import Forbidden
from ghostcrate.private.signing_keys import SigningKeys
from ghostcrate.private.tokens import Actor

log = logging.getLogger(__name__)

AUDIENCE = "ghostcrate"
ALGORITHM = "EdDSA"
REFRESH_PREFIX = "gcrr_"
_REMEMBERED = 10_000
#: A JWT in compact form: three base64url parts.
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SIGN_IN = "sign in again (POST /api/v1/session)"


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """What a sign-in or a refresh returns (the refresh token is shown only here)."""

    token: str
    refresh_token: str
    #: Seconds the session token is valid.
    expires_in: int
    #: Seconds the refresh token is valid.
    refresh_expires_in: int


def looks_like_session(token: str) -> bool:
    return _JWT.fullmatch(token) is not None


class Sessions:
    """Issues, refreshes, revokes and verifies sessions."""

    def __init__(
        self,
        db: Database,
        keys: SigningKeys,
        *,
        issuer: str,
        session_seconds: float,
        refresh_seconds: float,
        applied: Callable[[int], Awaitable[None]],
    ) -> None:
        self._db = db
        self.keys = keys
        self._issuer = issuer
        self._session_seconds = session_seconds
        self._refresh_seconds = refresh_seconds
        #: Called with the seq of a change this process made (tells every worker).
        self._applied = applied
        self._remembered: dict[str, tuple[Actor, float]] = {}

    def forget(self) -> None:
        """Drop remembered sessions and read the keys again (an account or a key changed)."""
        self._remembered.clear()
        self.keys.forget()

    async def issue(self, user: User, *, via: str = "password") -> IssuedSession:
        """A new session for `user`, signed in `via` a password (or another way)."""
        sid = secrets.token_urlsafe(16)
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        async with self._db.write() as connection:
            await connection.execute(
                "INSERT INTO sessions (id, user_id, via, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (sid, user.id, via, now, now + self._refresh_seconds),
            )
            await connection.execute(
                "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?, ?, ?)",
                (_hash(refresh), sid, now),
            )
            who = audit.origin().signed_in(user.name, f"session {sid}")
            await audit.append(connection, "sign-in", who=who, detail=f"via {via}")
        return await self._pair(user.id, user.name, sid, refresh, now)

    async def refresh(self, refresh_token: str) -> tuple[IssuedSession, User]:
        """A new pair for a refresh token, which is spent; `Forbidden` if it is not valid.

        A spent token used again revokes its session, on every worker.
        """
        now = time.time()
        #: The user whose spent refresh token came again, if one did.
        reused_by: str | None = None
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        async with self._db.write() as connection:
            async with connection.execute(
                "SELECT r.used_at, s.id AS sid, s.expires_at, s.revoked_at, u.*"
                " FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id"
                " JOIN users u ON u.id = s.user_id WHERE r.hash = ?",
                (_hash(refresh_token),),
            ) as cursor:
                row = await cursor.fetchone()
            problem = _refresh_problem(row, now)
            if row is not None and problem is None and row["used_at"] is not None:
                reused_by = row["name"]
                await connection.execute(
                    "UPDATE sessions SET revoked_at = ? WHERE id = ?", (now, row["sid"])
                )
                await audit.append(
                    connection,
                    "end-session",
                    target=row["name"],
                    detail=f"session {row['sid']}: its refresh token was used twice",
                )
                seq = await changes.record(connection, changes.ACCOUNTS)
            elif row is not None and problem is None:
                await connection.execute(
                    "UPDATE refresh_tokens SET used_at = ? WHERE hash = ?",
                    (now, _hash(refresh_token)),
                )
                await connection.execute(
                    "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?, ?, ?)",
                    (_hash(refresh), row["sid"], now),
                )
                await connection.execute(
                    "UPDATE sessions SET expires_at = ? WHERE id = ?",
                    (now + self._refresh_seconds, row["sid"]),
                )
                who = audit.origin().signed_in(row["name"], f"session {row['sid']}")
                await audit.append(connection, "refresh", who=who)
        if reused_by is not None:
            await self._applied(seq)
            log.warning("refresh token used twice; session ended", extra={"user": reused_by})
            raise Forbidden(
                "this refresh token was used before, so it may have been stolen: its session "
                f"is ended; {_SIGN_IN}"
            )
        if row is None or problem is not None:
            raise Forbidden(problem or f"this refresh token is not known here; {_SIGN_IN}")
        user = User(row["id"], row["name"], bool(row["admin"]), bool(row["disabled"]))
        return await self._pair(user.id, user.name, row["sid"], refresh, now), user

    async def revoke(self, sid: str) -> None:
        """End a session at once, on every worker."""
        async with self._db.write() as connection:
            await connection.execute(
                "UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), sid),
            )
            await audit.append(connection, "sign-out")
            seq = await changes.record(connection, changes.ACCOUNTS)
        await self._applied(seq)

    def remembered(self, token: str) -> Actor | None:
        """The actor of a session token this process verified lately, if still valid."""
        remembered = self._remembered.get(token)
        if remembered is None or remembered[1] <= time.time():
            return None
        return remembered[0]

    async def authenticate(self, token: str) -> Actor:
        """The actor a session token stands for; `Forbidden` (403) if it is not valid."""
        actor = self.remembered(token)
        if actor is not None:
            return actor
        claims = await self._verified(token)
        row = await self._db.one(
            "SELECT s.user_id, s.expires_at, s.revoked_at, u.name, u.admin, u.disabled"
            " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?",
            (claims["sid"],),
        )
        if row is None or str(row["user_id"]) != claims["sub"]:
            raise Forbidden(f"authentication failed: the session is unknown here; {_SIGN_IN}")
        if row["revoked_at"] is not None or row["expires_at"] <= time.time():
            raise Forbidden(f"authentication failed: the session has ended; {_SIGN_IN}")
        if row["disabled"]:
            raise Forbidden(
                f"authentication failed: user {row['name']} is disabled: "
                "ask an administrator of this registry"
            )
        actor = Actor(
            user_id=row["user_id"],
            user=row["name"],
            admin=bool(row["admin"]),
            token_id=None,
            expires_at=float(claims["exp"]),
            session_id=claims["sid"],
        )
        if len(self._remembered) >= _REMEMBERED:
            self._remembered.clear()
        self._remembered[token] = (actor, min(float(claims["exp"]), time.time() + REMEMBER_SECONDS))
        return actor

    async def _verified(self, token: str) -> dict[str, str]:
        """The claims of a token whose signature, expiry, issuer and audience hold."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = await self.keys.public(kid) if isinstance(kid, str) else None
            if key is None:
                raise Forbidden(
                    "authentication failed: the session token was not signed by this "
                    f"registry's keys; {_SIGN_IN}"
                )
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "sid"]},
            )
        except jwt.ExpiredSignatureError:
            raise Forbidden(
                "authentication failed: the session token has expired: get a new one with "
                "POST /api/v1/session/refresh, or sign in again"
            ) from None
        except jwt.InvalidTokenError as error:
            raise Forbidden(
                f"authentication failed: the session token is not valid ({error}); {_SIGN_IN}"
            ) from None
        if not isinstance(claims.get("sid"), str) or not isinstance(claims.get("sub"), str):
            raise Forbidden(f"authentication failed: the session token is not valid; {_SIGN_IN}")
        return {"sid": claims["sid"], "sub": claims["sub"], "exp": str(claims["exp"])}

    async def _pair(
        self, user_id: int, name: str, sid: str, refresh: str, now: float
    ) -> IssuedSession:
        kid, key = await self.keys.signing()
        claims = {
            "sub": str(user_id),
            "name": name,
            "sid": sid,
            "iat": int(now),
            "exp": math.ceil(now + self._session_seconds),
            "iss": self._issuer,
            "aud": AUDIENCE,
        }
        token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})
        return IssuedSession(
            token=token,
            refresh_token=refresh,
            expires_in=max(1, round(self._session_seconds)),
            refresh_expires_in=max(1, round(self._refresh_seconds)),
        )


def _refresh_problem(row: Row | None, now: float) -> str | None:
    """Why a refresh token's session may not be refreshed (a reuse is decided elsewhere)."""
    if row is None:
        return None
    if row["revoked_at"] is not None:
        return f"the session of this refresh token has ended; {_SIGN_IN}"
    if row["expires_at"] <= now:
        return f"this refresh token has expired; {_SIGN_IN}"
    if row["disabled"]:
        return f"user {row['name']} is disabled: ask an administrator of this registry"
    return None


def _hash(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()
