"""Organisations in the registry database: namespaces, members with roles, teams.

An organisation claims crate names by patterns (`acme-*`, the syntax of a
token's `--crates`); its teams may own crates beside their user owners. What
each role may do is `rights.RIGHTS`; `standing` reads what `rights.decide`
needs about one actor and one crate. Every write records `changes.ACCOUNTS`,
so every worker forgets the tokens it remembered (an org-scoped token's reach
changes with the org).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosqlite

from ghostcrate.private import audit, changes
from ghostcrate.private.db import Database, Row
from ghostcrate.private.errors import Conflict, NotFound, RegistryError
from ghostcrate.private.rights import OWNER, ROLES, Standing
from ghostcrate.private.tokens import Actor, canonical, matches, valid_pattern

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: All rows of a query, on whichever connection the caller reads through.
Rows = Callable[[str, tuple[object, ...]], Awaitable[list[Row]]]


@dataclass(frozen=True, slots=True)
class Team:
    org: str
    name: str
    members: tuple[str, ...]

    @property
    def login(self) -> str:
        """How cargo names it: `cargo owner --add ORG:TEAM`."""
        return f"{self.org}:{self.name}"


@dataclass(frozen=True, slots=True)
class Org:
    name: str
    namespaces: tuple[str, ...]
    #: (user, role), by user name.
    members: tuple[tuple[str, str], ...] = ()
    teams: tuple[Team, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "namespaces": list(self.namespaces),
            "members": [{"login": user, "role": role} for user, role in self.members],
            "teams": [
                {"name": team.name, "login": team.login, "members": list(team.members)}
                for team in self.teams
            ],
        }


def split_team(login: str) -> tuple[str, str] | None:
    """(org, team) of a team's login `ORG:TEAM` (or crates.io's `github:ORG:TEAM`)."""
    parts = login.split(":")
    if len(parts) == 3 and parts[0].lower() == "github":
        parts = parts[1:]
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def overlap(first: str, second: str) -> bool:
    """Whether some crate name matches both patterns (each a name, or a start and `*`)."""
    a, b = canonical(first), canonical(second)
    if a.endswith("*") and b.endswith("*"):
        return a[:-1].startswith(b[:-1]) or b[:-1].startswith(a[:-1])
    if a.endswith("*"):
        return b.startswith(a[:-1])
    if b.endswith("*"):
        return a.startswith(b[:-1])
    return a == b


async def standing(rows: Rows, actor: Actor, name: str) -> Standing:
    """What `rights.decide` needs to know about `actor` and crate `name`."""
    crate = await rows("SELECT id, name FROM crates WHERE canonical = ?", (canonical(name),))
    namespace_org = namespace = None
    for org in await rows("SELECT name, namespaces FROM orgs ORDER BY name", ()):
        found = [p for p in json.loads(org["namespaces"]) if matches([p], name)]
        if found:
            namespace_org, namespace = org["name"], found[0]
            break
    roles = {
        row["name"].lower(): row["role"]
        for row in await rows(
            "SELECT o.name, m.role FROM org_members m JOIN orgs o ON o.id = m.org_id"
            " WHERE m.user_id = ?",
            (actor.user_id,),
        )
    }
    if not crate:
        return Standing(name, False, namespace_org=namespace_org, namespace=namespace, roles=roles)
    crate_id = crate[0]["id"]
    owner = await rows(
        "SELECT 1 FROM owners WHERE crate_id = ? AND user_id = ?", (crate_id, actor.user_id)
    )
    teams = await rows(
        "SELECT o.name AS org, EXISTS (SELECT 1 FROM team_members tm WHERE"
        " tm.team_id = t.id AND tm.user_id = ?) AS mine FROM team_owners w"
        " JOIN teams t ON t.id = w.team_id JOIN orgs o ON o.id = t.org_id WHERE w.crate_id = ?",
        (actor.user_id, crate_id),
    )
    return Standing(
        crate[0]["name"],
        True,
        owner=bool(owner),
        namespace_org=namespace_org,
        namespace=namespace,
        team_orgs=frozenset(row["org"] for row in teams),
        roles=roles,
        in_team=frozenset(
            row["org"].lower() for row in teams if row["mine"] and row["org"].lower() in roles
        ),
    )


def rows_of(connection: aiosqlite.Connection) -> Rows:
    """`Rows` inside a write transaction on `connection`."""

    async def query(sql: str, params: tuple[object, ...]) -> list[Row]:
        async with connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    return query


class Orgs:
    """Organisations, their members and teams, and the crates their teams own."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def orgs(self) -> list[Org]:
        names = await self._db.all("SELECT name FROM orgs ORDER BY lower(name)")
        return [await self.org(row["name"]) for row in names]

    async def org(self, name: str) -> Org:
        """The organisation `name` (any case), with its members and teams; else `NotFound`."""
        row = await self._db.one("SELECT * FROM orgs WHERE lower(name) = lower(?)", (name,))
        if row is None:
            raise NotFound(f"no organisation {name!r} (see `ghostcrate org list`)")
        members = await self._db.all(
            "SELECT u.name, m.role FROM org_members m JOIN users u ON u.id = m.user_id"
            " WHERE m.org_id = ? ORDER BY lower(u.name)",
            (row["id"],),
        )
        return Org(
            row["name"],
            tuple(json.loads(row["namespaces"])),
            tuple((member["name"], member["role"]) for member in members),
            tuple(await self._teams(row["id"], row["name"])),
        )

    async def _teams(self, org_id: int, org: str) -> list[Team]:
        teams = await self._db.all(
            "SELECT id, name FROM teams WHERE org_id = ? ORDER BY lower(name)", (org_id,)
        )
        found = []
        for team in teams:
            members = await self._db.all(
                "SELECT u.name FROM team_members m JOIN users u ON u.id = m.user_id"
                " WHERE m.team_id = ? ORDER BY lower(u.name)",
                (team["id"],),
            )
            found.append(Team(org, team["name"], tuple(m["name"] for m in members)))
        return found

    async def role(self, org: str, user_id: int) -> str | None:
        """`user_id`'s role in `org` (None if not a member); `NotFound` if there is no org."""
        row = await self._db.one(
            "SELECT o.id, m.role FROM orgs o LEFT JOIN org_members m"
            " ON m.org_id = o.id AND m.user_id = ? WHERE lower(o.name) = lower(?)",
            (user_id, org),
        )
        if row is None:
            raise NotFound(f"no organisation {org!r} (see `ghostcrate org list`)")
        return None if row["role"] is None else str(row["role"])

    async def team_owners(self, crate: str) -> list[Team]:
        """The teams that own crate `crate` (without their members)."""
        rows = await self._db.all(
            "SELECT o.name AS org, t.name FROM team_owners w JOIN teams t ON t.id = w.team_id"
            " JOIN orgs o ON o.id = t.org_id JOIN crates c ON c.id = w.crate_id"
            " WHERE c.canonical = ? ORDER BY lower(o.name), lower(t.name)",
            (canonical(crate),),
        )
        return [Team(row["org"], row["name"], ()) for row in rows]

    # --- writes (each returns the change's seq) ---------------------------------

    async def add_org(
        self, name: str, namespaces: tuple[str, ...] = (), owner: str | None = None
    ) -> int:
        """A new organisation claiming `namespaces`, with `owner` as its first owner."""
        _check_name("organisation", name)
        for pattern in namespaces:
            if not valid_pattern(pattern) or pattern == "*":
                raise RegistryError(
                    f"invalid namespace {pattern!r}: use a crate name, or the start of one "
                    "and `*` (e.g. 'acme-*')"
                )
        async with self._db.write() as connection:
            rows = rows_of(connection)
            if await rows("SELECT 1 FROM orgs WHERE lower(name) = lower(?)", (name,)):
                raise Conflict(f"organisation {name!r} already exists")
            for other in await rows("SELECT name, namespaces FROM orgs", ()):
                for theirs in json.loads(other["namespaces"]):
                    for pattern in namespaces:
                        if overlap(pattern, theirs):
                            raise Conflict(
                                f"namespace {pattern} overlaps {theirs} of organisation "
                                f"{other['name']}: a crate name belongs to one organisation"
                            )
            owner_id = await _user_id(rows, owner) if owner is not None else None
            cursor = await connection.execute(
                "INSERT INTO orgs (name, namespaces, created_at) VALUES (?, ?, ?)",
                (name, json.dumps(list(namespaces)), time.time()),
            )
            if owner_id is not None:
                await connection.execute(
                    "INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, ?)",
                    (cursor.lastrowid, owner_id, OWNER),
                )
            detail = f"namespaces {', '.join(namespaces) or '-'}"
            await audit.append(connection, "add-org", org=name, target=owner, detail=detail)
            return await changes.record(connection, changes.ACCOUNTS)

    async def set_members(self, org: str, members: list[tuple[str, str]]) -> int:
        """Add each (user, role) to `org`, or change their role; all or none."""
        for _, role in members:
            if role not in ROLES:
                raise RegistryError(f"unknown role {role!r}: roles are {', '.join(ROLES)}")
        async with self._db.write() as connection:
            rows = rows_of(connection)
            org_id = await _org_id(rows, org)
            before = await _owners(rows, org_id)
            for user, role in members:
                user_id = await _user_id(rows, user)
                await connection.execute(
                    "DELETE FROM org_members WHERE org_id = ? AND user_id = ?", (org_id, user_id)
                )
                await connection.execute(
                    "INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, ?)",
                    (org_id, user_id, role),
                )
                await audit.append(
                    connection, "set-member", org=org, target=user, detail=f"role {role}"
                )
            await _keep_an_owner(rows, org, org_id, before)
            return await changes.record(connection, changes.ACCOUNTS)

    async def remove_members(self, org: str, users: list[str]) -> int:
        """Remove `users` from `org` and from its teams; all or none."""
        async with self._db.write() as connection:
            rows = rows_of(connection)
            org_id = await _org_id(rows, org)
            before = await _owners(rows, org_id)
            for user in users:
                user_id = await _user_id(rows, user)
                cursor = await connection.execute(
                    "DELETE FROM org_members WHERE org_id = ? AND user_id = ?", (org_id, user_id)
                )
                if cursor.rowcount == 0:
                    raise NotFound(f"{user} is not a member of organisation {org}")
                await connection.execute(
                    "DELETE FROM team_members WHERE user_id = ? AND team_id IN"
                    " (SELECT id FROM teams WHERE org_id = ?)",
                    (user_id, org_id),
                )
                await audit.append(connection, "remove-member", org=org, target=user)
            await _keep_an_owner(rows, org, org_id, before)
            return await changes.record(connection, changes.ACCOUNTS)

    async def add_team(self, org: str, team: str) -> int:
        _check_name("team", team)
        async with self._db.write() as connection:
            rows = rows_of(connection)
            org_id = await _org_id(rows, org)
            if await rows(
                "SELECT 1 FROM teams WHERE org_id = ? AND lower(name) = lower(?)", (org_id, team)
            ):
                raise Conflict(f"team {org}:{team} already exists")
            await connection.execute(
                "INSERT INTO teams (org_id, name, created_at) VALUES (?, ?, ?)",
                (org_id, team, time.time()),
            )
            await audit.append(connection, "add-team", org=org, team=team)
            return await changes.record(connection, changes.ACCOUNTS)

    async def remove_team(self, org: str, team: str) -> int:
        """Remove a team: its members lose what they had through it, its crates that owner."""
        async with self._db.write() as connection:
            rows = rows_of(connection)
            team_id = await _team_id(rows, org, team)
            for table in ("team_members", "team_owners"):
                await connection.execute(f"DELETE FROM {table} WHERE team_id = ?", (team_id,))
            await connection.execute("DELETE FROM teams WHERE id = ?", (team_id,))
            await audit.append(connection, "remove-team", org=org, team=team)
            return await changes.record(connection, changes.ACCOUNTS)

    async def set_team_members(self, org: str, team: str, users: list[str], *, add: bool) -> int:
        """Add `users` (members of `org`) to the team, or remove them from it; all or none."""
        async with self._db.write() as connection:
            rows = rows_of(connection)
            team_id = await _team_id(rows, org, team)
            for user in users:
                user_id = await _user_id(rows, user)
                if add:
                    if not await rows(
                        "SELECT 1 FROM org_members m JOIN teams t ON t.org_id = m.org_id"
                        " WHERE t.id = ? AND m.user_id = ?",
                        (team_id, user_id),
                    ):
                        raise RegistryError(
                            f"{user} is not a member of organisation {org}: add them first "
                            f"with `ghostcrate org member add {org} {user} --role member`"
                        )
                    await connection.execute(
                        "INSERT OR IGNORE INTO team_members (team_id, user_id) VALUES (?, ?)",
                        (team_id, user_id),
                    )
                    await audit.append(
                        connection, "add-team-member", org=org, team=team, target=user
                    )
                    continue
                cursor = await connection.execute(
                    "DELETE FROM team_members WHERE team_id = ? AND user_id = ?",
                    (team_id, user_id),
                )
                if cursor.rowcount == 0:
                    raise NotFound(f"{user} is not in team {org}:{team}")
                await audit.append(
                    connection, "remove-team-member", org=org, team=team, target=user
                )
            return await changes.record(connection, changes.ACCOUNTS)


@dataclass(frozen=True, slots=True)
class TeamOf:
    """A team as one user sees it: whether they are in it, and their role in its org."""

    id: int
    login: str
    in_team: bool
    role: str | None


async def team_of(rows: Rows, login: str, user_id: int) -> TeamOf:
    """The team `ORG:TEAM` as user `user_id` sees it; `NotFound` if there is none."""
    parts = split_team(login)
    if parts is None:
        raise NotFound(f"could not find team with login `{login}`: a team is ORG:TEAM")
    found = await rows(
        "SELECT t.id, o.name AS org, t.name, m.role, EXISTS (SELECT 1 FROM team_members tm"
        " WHERE tm.team_id = t.id AND tm.user_id = ?) AS mine FROM teams t"
        " JOIN orgs o ON o.id = t.org_id"
        " LEFT JOIN org_members m ON m.org_id = o.id AND m.user_id = ?"
        " WHERE lower(o.name) = lower(?) AND lower(t.name) = lower(?)",
        (user_id, user_id, *parts),
    )
    if not found:
        raise NotFound(f"could not find team with login `{login}`")
    row = found[0]
    return TeamOf(row["id"], f"{row['org']}:{row['name']}", bool(row["mine"]), row["role"])


def _check_name(what: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise RegistryError(
            f"invalid {what} name {name!r}: use letters, digits, '.', '-' and '_', "
            "starting with a letter or digit, at most 64 characters"
        )


async def _org_id(rows: Rows, org: str) -> int:
    found = await rows("SELECT id FROM orgs WHERE lower(name) = lower(?)", (org,))
    if not found:
        raise NotFound(f"no organisation {org!r} (see `ghostcrate org list`)")
    return int(found[0]["id"])


async def _user_id(rows: Rows, user: str) -> int:
    found = await rows("SELECT id FROM users WHERE lower(name) = lower(?)", (user,))
    if not found:
        raise NotFound(f"no user {user!r}: add it first with `ghostcrate user add {user}`")
    return int(found[0]["id"])


async def _team_id(rows: Rows, org: str, team: str) -> int:
    org_id = await _org_id(rows, org)
    found = await rows(
        "SELECT id FROM teams WHERE org_id = ? AND lower(name) = lower(?)", (org_id, team)
    )
    if not found:
        raise NotFound(f"no team {org}:{team} (see `ghostcrate team list {org}`)")
    return int(found[0]["id"])


async def _owners(rows: Rows, org_id: int) -> int:
    found = await rows(
        "SELECT count(*) AS n FROM org_members WHERE org_id = ? AND role = ?", (org_id, OWNER)
    )
    return int(found[0]["n"])


async def _keep_an_owner(rows: Rows, org: str, org_id: int, before: int) -> None:
    """Refuse (the caller's transaction rolls back) to leave `org` without an owner."""
    if before and not await _owners(rows, org_id):
        raise Conflict(
            f"that would leave organisation {org} without an owner: make another member "
            "its owner first"
        )
