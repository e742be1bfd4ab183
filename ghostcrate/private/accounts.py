"""Users and their API tokens in the registry database."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import aiosqlite

from ghostcrate.private import audit, changes
from ghostcrate.private.db import Database, Row
from ghostcrate.private.errors import Conflict, Forbidden, NotFound, RegistryError
from ghostcrate.private.passwords import Passwords, password_problem
from ghostcrate.private.tokens import (
    SCOPES,
    Actor,
    looks_like_token,
    new_token,
    token_hash,
    valid_pattern,
)

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: How long a worker trusts a token it has looked up; revocations reach it sooner,
#: through the changes feed, so this only bounds memory and clock drift of expiry.
REMEMBER_SECONDS = 60.0
_REMEMBERED = 10_000
#: The `identities` provider of the users LDAP sign-in registered (their password is
#: the directory's).
LDAP_PROVIDER = "ldap"
_NEW_TOKEN = (
    "ask an administrator for a new one (`ghostcrate token create`) "
    "and run `cargo login --registry <name>`"
)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    admin: bool
    disabled: bool


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    user: str
    name: str
    scopes: tuple[str, ...]
    crates: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    #: The organisation the token is limited to, if any.
    org: str | None = None


class Accounts:
    """Users and tokens; token lookups are remembered until the changes feed says otherwise."""

    def __init__(self, db: Database, passwords: Passwords | None = None) -> None:
        self._db = db
        self.passwords = passwords or Passwords()
        self._remembered: dict[str, tuple[Actor, float]] = {}

    def forget(self) -> None:
        """Drop every remembered token (a token or user changed somewhere)."""
        self._remembered.clear()

    # --- users --------------------------------------------------------------

    async def add_user(
        self, name: str, *, admin: bool = False, password: str | None = None
    ) -> tuple[User, int]:
        """A new user (who may sign in if given a password), and the change's seq."""
        if not _USER_NAME.fullmatch(name):
            raise RegistryError(
                f"invalid user name {name!r}: use letters, digits, '.', '-' and '_', "
                "starting with a letter or digit, at most 64 characters"
            )
        hashed = await self._hash(password) if password is not None else None
        async with self._db.write() as connection:
            if await _user_row(connection, name) is not None:
                raise Conflict(f"user {name!r} already exists")
            cursor = await connection.execute(
                "INSERT INTO users (name, admin, created_at, password_hash) VALUES (?, ?, ?, ?)",
                (name, int(admin), time.time(), hashed),
            )
            detail = "administrator" if admin else None
            await audit.append(connection, "add-user", target=name, detail=detail)
            seq = await changes.record(connection, changes.ACCOUNTS)
        assert cursor.lastrowid is not None
        return User(cursor.lastrowid, name, admin, False), seq

    async def user(self, name: str) -> User | None:
        row = await self._db.one("SELECT * FROM users WHERE lower(name) = lower(?)", (name,))
        return _user(row) if row is not None else None

    async def users(self) -> list[User]:
        return [_user(row) for row in await self._db.all("SELECT * FROM users ORDER BY name")]

    async def password_hash(self, name: str) -> tuple[User, str | None] | None:
        """A user and their password hash (None: they have no password), if they exist."""
        row = await self._db.one("SELECT * FROM users WHERE lower(name) = lower(?)", (name,))
        return (_user(row), row["password_hash"]) if row is not None else None

    async def set_password(self, name: str, password: str) -> int:
        """Set a user's password and end their sessions; the change's seq."""
        hashed = await self._hash(password)
        async with self._db.write() as connection:
            user = await _existing(connection, name)
            async with connection.execute(
                "SELECT 1 FROM identities WHERE user_id = ? AND provider = ?",
                (user["id"], LDAP_PROVIDER),
            ) as cursor:
                from_directory = await cursor.fetchone() is not None
            if from_directory:
                raise Conflict(
                    f"user {user['name']} signs in with their directory (LDAP) password: "
                    "change it in the directory"
                )
            await connection.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (hashed, user["id"])
            )
            await connection.execute(
                "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                (time.time(), user["id"]),
            )
            await audit.append(connection, "set-password", target=user["name"])
            return await changes.record(connection, changes.ACCOUNTS)

    async def rehash(self, user_id: int, old: str, password: str) -> None:
        """Store a hash made with today's parameters in place of `old` (made with older ones)."""
        hashed = await self.passwords.hash(password)
        async with self._db.write() as connection:
            await connection.execute(
                "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
                (hashed, user_id, old),
            )

    async def set_disabled(self, name: str, *, disabled: bool) -> int:
        """Disable (or enable again) a user: their tokens and sessions stop (or start again)
        working on every worker; the change's seq."""
        return await self._set_flag(name, "disabled", disabled)

    async def set_admin(self, name: str, *, admin: bool) -> int:
        """Make a user an administrator, or no longer one; the change's seq."""
        return await self._set_flag(name, "admin", admin)

    async def _set_flag(self, name: str, column: str, value: bool) -> int:
        assert column in ("disabled", "admin")
        async with self._db.write() as connection:
            user = await _existing(connection, name)
            await connection.execute(
                f"UPDATE users SET {column} = ? WHERE id = ?",
                (int(value), user["id"]),
            )
            action = _FLAG_ACTIONS[column, value]
            await audit.append(connection, action, target=user["name"])
            return await changes.record(connection, changes.ACCOUNTS)

    async def _hash(self, password: str) -> str:
        problem = password_problem(password)
        if problem is not None:
            raise RegistryError(problem)
        return await self.passwords.hash(password)

    # --- tokens -------------------------------------------------------------

    async def create_token(
        self,
        user: str,
        *,
        name: str = "cargo",
        scopes: tuple[str, ...] = (),
        crates: tuple[str, ...] = (),
        expires_in_days: float | None = None,
        org: str | None = None,
    ) -> tuple[str, TokenInfo]:
        """A new token for `user`: the token itself (shown once) and what is stored of it."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise RegistryError(
                f"unknown scope {', '.join(unknown)}: scopes are {', '.join(SCOPES)}"
            )
        invalid = [pattern for pattern in crates if not valid_pattern(pattern)]
        if invalid:
            raise RegistryError(
                f"invalid crate pattern {', '.join(invalid)}: use a crate name, "
                "or the start of one and `*` (e.g. 'acme-*'), as crates.io does"
            )
        if expires_in_days is not None and expires_in_days <= 0:
            raise RegistryError("--expires must be a positive number of days")
        found = await self.user(user)
        if found is None:
            raise NotFound(f"no user {user!r}: add it first with `ghostcrate user add {user}`")
        org_row = None
        if org is not None:
            org_row = await self._db.one(
                "SELECT id, name FROM orgs WHERE lower(name) = lower(?)", (org,)
            )
            if org_row is None:
                raise NotFound(f"no organisation {org!r} (see `ghostcrate org list`)")
        token = new_token()
        now = time.time()
        expires_at = now + expires_in_days * 86400 if expires_in_days is not None else None
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "INSERT INTO tokens (user_id, name, hash, scopes, crates, created_at, expires_at,"
                " org_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    found.id,
                    name,
                    token_hash(token),
                    json.dumps(list(scopes)),
                    json.dumps(list(crates)),
                    now,
                    expires_at,
                    None if org_row is None else org_row["id"],
                ),
            )
            assert cursor.lastrowid is not None
            await audit.append(
                connection,
                "create-token",
                target=found.name,
                org=None if org_row is None else org_row["name"],
                detail=f"token {cursor.lastrowid} ({_token_limits(scopes, crates)})",
            )
        assert cursor.lastrowid is not None
        info = TokenInfo(
            cursor.lastrowid,
            found.name,
            name,
            scopes,
            crates,
            now,
            expires_at,
            None,
            None if org_row is None else org_row["name"],
        )
        return token, info

    async def tokens(self, user: str | None = None) -> list[TokenInfo]:
        sql = (
            "SELECT t.*, u.name AS user, o.name AS org FROM tokens t"
            " JOIN users u ON u.id = t.user_id LEFT JOIN orgs o ON o.id = t.org_id"
        )
        params: tuple[str, ...] = ()
        if user is not None:
            sql += " WHERE lower(u.name) = lower(?)"
            params = (user,)
        rows = await self._db.all(sql + " ORDER BY t.id", params)
        return [_token_info(row) for row in rows]

    async def revoke_token(self, token_id: int) -> int:
        """Revoke a token; the change's seq. `NotFound` if there is no such live token."""
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no live token with id {token_id} (see `ghostcrate token list`)")
            owner = await _one_value(
                connection,
                "SELECT u.name FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?",
                token_id,
            )
            await audit.append(connection, "revoke-token", target=owner, detail=f"token {token_id}")
            return await changes.record(connection, changes.ACCOUNTS)

    def remembered(self, token: str) -> Actor | None:
        """The actor of a token this process looked up lately, if it is still valid."""
        remembered = self._remembered.get(token)
        if remembered is None:
            return None
        actor, until = remembered
        now = time.time()
        if until <= now or (actor.expires_at is not None and actor.expires_at <= now):
            return None
        return actor

    async def authenticate(self, token: str) -> Actor:
        """The actor a token stands for; `Forbidden` (crates.io's 403) if it is not valid."""
        now = time.time()
        remembered = self._remembered.get(token)
        if remembered is not None and remembered[1] > now:
            actor = remembered[0]
        else:
            actor = await self._look_up(token)
            if len(self._remembered) >= _REMEMBERED:
                self._remembered.clear()
            self._remembered[token] = (actor, now + REMEMBER_SECONDS)
        if actor.expires_at is not None and actor.expires_at <= now:
            raise Forbidden(
                f"authentication failed: the token expired at {_utc(actor.expires_at)}: "
                f"{_NEW_TOKEN}"
            )
        return actor

    async def _look_up(self, token: str) -> Actor:
        if not looks_like_token(token):
            raise Forbidden(f"authentication failed: this is not a GhostCrate token: {_NEW_TOKEN}")
        row = await self._db.one(
            "SELECT t.*, u.name AS user, u.admin, u.disabled, o.name AS org FROM tokens t"
            " JOIN users u ON u.id = t.user_id LEFT JOIN orgs o ON o.id = t.org_id"
            " WHERE t.hash = ?",
            (token_hash(token),),
        )
        if row is None:
            raise Forbidden(
                "authentication failed: the token is unknown here (mistyped, or for another "
                f"registry?): {_NEW_TOKEN}"
            )
        if row["revoked_at"] is not None:
            raise Forbidden(
                f"authentication failed: the token was revoked at {_utc(row['revoked_at'])}: "
                f"{_NEW_TOKEN}"
            )
        if row["disabled"]:
            raise Forbidden(
                f"authentication failed: user {row['user']} is disabled: "
                "ask an administrator of this registry"
            )
        return Actor(
            user_id=row["user_id"],
            user=row["user"],
            admin=bool(row["admin"]),
            token_id=row["id"],
            scopes=frozenset(json.loads(row["scopes"])),
            crates=tuple(json.loads(row["crates"])),
            expires_at=row["expires_at"],
            org=row["org"],
        )


#: The audit action of setting a user's flag (column, value).
_FLAG_ACTIONS = {
    ("disabled", True): "disable-user",
    ("disabled", False): "enable-user",
    ("admin", True): "promote",
    ("admin", False): "demote",
}


def _token_limits(scopes: tuple[str, ...], crates: tuple[str, ...]) -> str:
    return f"scopes {','.join(scopes) or 'all'}; crates {','.join(crates) or 'all'}"


async def _one_value(connection: aiosqlite.Connection, sql: str, param: object) -> str | None:
    async with connection.execute(sql, (param,)) as cursor:
        row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def _user_row(connection: aiosqlite.Connection, name: str) -> Row | None:
    async with connection.execute(
        "SELECT * FROM users WHERE lower(name) = lower(?)", (name,)
    ) as cursor:
        row: Row | None = await cursor.fetchone()
        return row


async def _existing(connection: aiosqlite.Connection, name: str) -> Row:
    row = await _user_row(connection, name)
    if row is None:
        raise NotFound(f"no user {name!r}: add it first with `ghostcrate user add {name}`")
    return row


def _user(row: Row) -> User:
    return User(row["id"], row["name"], bool(row["admin"]), bool(row["disabled"]))


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _token_info(row: Row) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        user=row["user"],
        name=row["name"],
        scopes=tuple(json.loads(row["scopes"])),
        crates=tuple(json.loads(row["crates"])),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        org=row["org"],
    )
