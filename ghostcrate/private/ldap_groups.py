"""`[auth.ldap] groups`: the org roles and team memberships a user's directory groups give,
applied at each LDAP sign-in.

The mapping manages only what it made (recorded in `ldap_roles` and `ldap_teams`):
a membership the directory gives is added (or its role changed, if the mapping
made it); one the mapping made and the directory no longer gives is removed. A
role or team membership an administrator set by hand is never changed or
removed. A team implies membership of its organisation (as `member`, unless a
group gives a role there); when several groups give roles in one organisation,
the strongest wins. A managed role is kept (and the log says why) while the user
is in a team of that organisation by hand, or when they are its last owner.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ghostcrate.private import audit, changes
from ghostcrate.private.db import Database
from ghostcrate.private.ldap_directory import common_name, normal_dn
from ghostcrate.private.orgs import Rows, rows_of
from ghostcrate.private.rights import MEMBER, OWNER, ROLES

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Wanted:
    """What the directory's groups give: lowercase org -> role, and (org, team) pairs."""

    roles: dict[str, str] = field(default_factory=dict)
    teams: set[tuple[str, str]] = field(default_factory=set)
    #: The groups that matched the mapping, for the log.
    groups: list[str] = field(default_factory=list)


def wanted(mapping: Mapping[str, list[str]], groups: Iterable[str]) -> Wanted:
    """The memberships `groups` (DNs) give under `mapping` (keys: CNs or DNs)."""
    keys = {
        (normal_dn(key) if "=" in key else key.lower()): targets for key, targets in mapping.items()
    }
    found = Wanted()
    for group in groups:
        names = {normal_dn(group), common_name(group)}
        matched = [keys[name] for name in names if name is not None and name in keys]
        if not matched:
            continue
        found.groups.append(group)
        for targets in matched:
            for target in targets:
                org, _, second = target.lower().partition(":")
                if second in ROLES:
                    _give_role(found.roles, org, second)
                else:
                    found.teams.add((org, second))
    for org, _ in found.teams:
        found.roles.setdefault(org, MEMBER)
    return found


def _give_role(roles: dict[str, str], org: str, role: str) -> None:
    held = roles.get(org)
    if held is None or ROLES.index(role) < ROLES.index(held):
        roles[org] = role


class GroupMapping:
    def __init__(self, db: Database, mapping: Mapping[str, list[str]]) -> None:
        self._db = db
        self._mapping = mapping

    async def apply(self, user_id: int, user: str, groups: Iterable[str]) -> int | None:
        """Bring `user`'s mapped memberships in line with `groups`; the change's seq, or
        None when nothing changed. Each change is logged (`directory membership`)."""
        want = wanted(self._mapping, groups)
        async with self._db.write() as connection:
            rows = rows_of(connection)
            step = _Step(rows, user_id, user)
            await step.load(want)
            await step.add_roles()
            await step.add_teams()
            await step.remove_teams()
            await step.remove_roles()
            if not step.changed:
                return None
            await audit.append(connection, "directory-groups", target=user)
            return await changes.record(connection, changes.ACCOUNTS)


class _Step:
    """One sign-in's reconciliation, inside one write transaction."""

    def __init__(self, rows: Rows, user_id: int, user: str) -> None:
        self._rows = rows
        self._user_id = user_id
        self._user = user
        self.changed = False
        self._want_roles: dict[int, tuple[str, str]] = {}  # org id -> (org, role)
        self._want_teams: dict[int, str] = {}  # team id -> ORG:TEAM
        self._managed_roles: dict[int, str] = {}
        self._managed_teams: set[int] = set()
        self._roles: dict[int, str] = {}
        self._teams: set[int] = set()
        self._org_names: dict[int, str] = {}

    async def _do(self, sql: str, params: tuple[object, ...]) -> None:
        await self._rows(sql, params)
        self.changed = True

    async def load(self, want: Wanted) -> None:
        rows, uid = self._rows, self._user_id
        orgs = {row["name"].lower(): row for row in await rows("SELECT id, name FROM orgs", ())}
        for org, role in want.roles.items():
            if org not in orgs:
                log.warning(
                    "ldap mapping names an unknown organisation",
                    extra={"user": self._user, "org": org, "groups": want.groups},
                )
                continue
            self._want_roles[orgs[org]["id"]] = (orgs[org]["name"], role)
        for org, team in sorted(want.teams):
            found = await rows(
                "SELECT t.id, o.name AS org, t.name FROM teams t JOIN orgs o ON o.id = t.org_id"
                " WHERE lower(o.name) = ? AND lower(t.name) = ?",
                (org, team),
            )
            if not found:
                log.warning(
                    "ldap mapping names an unknown team",
                    extra={"user": self._user, "team": f"{org}:{team}", "groups": want.groups},
                )
                continue
            self._want_teams[found[0]["id"]] = f"{found[0]['org']}:{found[0]['name']}"
        self._org_names = {row["id"]: row["name"] for row in orgs.values()}
        for row in await rows("SELECT org_id, role FROM ldap_roles WHERE user_id = ?", (uid,)):
            self._managed_roles[row["org_id"]] = row["role"]
        for row in await rows("SELECT team_id FROM ldap_teams WHERE user_id = ?", (uid,)):
            self._managed_teams.add(row["team_id"])
        for row in await rows("SELECT org_id, role FROM org_members WHERE user_id = ?", (uid,)):
            self._roles[row["org_id"]] = row["role"]
        for row in await rows("SELECT team_id FROM team_members WHERE user_id = ?", (uid,)):
            self._teams.add(row["team_id"])

    def _log(self, change: str, **about: object) -> None:
        log.info("directory membership", extra={"user": self._user, "change": change, **about})

    async def add_roles(self) -> None:
        uid = self._user_id
        for org_id, (org, role) in self._want_roles.items():
            held = self._roles.get(org_id)
            if held is None:
                await self._do(
                    "INSERT INTO org_members (org_id, user_id, role) VALUES (?, ?, ?)",
                    (org_id, uid, role),
                )
                self._log("role added", org=org, role=role)
            elif org_id not in self._managed_roles:
                if held != role:
                    self._log("role kept (set by hand)", org=org, role=held, mapped=role)
                continue
            elif held != role:
                await self._do(
                    "UPDATE org_members SET role = ? WHERE org_id = ? AND user_id = ?",
                    (role, org_id, uid),
                )
                self._log("role changed", org=org, role=role, was=held)
            if self._managed_roles.get(org_id) != role:
                await self._do(
                    "DELETE FROM ldap_roles WHERE user_id = ? AND org_id = ?", (uid, org_id)
                )
                await self._do(
                    "INSERT INTO ldap_roles (user_id, org_id, role) VALUES (?, ?, ?)",
                    (uid, org_id, role),
                )
            self._roles[org_id] = role

    async def add_teams(self) -> None:
        uid = self._user_id
        for team_id, login in self._want_teams.items():
            if team_id in self._teams:
                continue  # there already: by hand (left alone) or by the mapping
            await self._do(
                "INSERT INTO team_members (team_id, user_id) VALUES (?, ?)", (team_id, uid)
            )
            await self._rows(
                "INSERT INTO ldap_teams (user_id, team_id) VALUES (?, ?)", (uid, team_id)
            )
            self._teams.add(team_id)
            self._log("team added", team=login)

    async def remove_teams(self) -> None:
        uid = self._user_id
        for team_id in sorted(self._managed_teams - set(self._want_teams)):
            if team_id in self._teams:
                named = await self._rows(
                    "SELECT o.name AS org, t.name FROM teams t JOIN orgs o ON o.id = t.org_id"
                    " WHERE t.id = ?",
                    (team_id,),
                )
                await self._do(
                    "DELETE FROM team_members WHERE team_id = ? AND user_id = ?", (team_id, uid)
                )
                self._teams.discard(team_id)
                self._log("team removed", team=f"{named[0]['org']}:{named[0]['name']}")
            await self._do(
                "DELETE FROM ldap_teams WHERE user_id = ? AND team_id = ?", (uid, team_id)
            )

    async def remove_roles(self) -> None:
        uid = self._user_id
        for org_id in sorted(set(self._managed_roles) - set(self._want_roles)):
            org = self._org_names.get(org_id, str(org_id))
            held = self._roles.get(org_id)
            if held is not None and await self._keep(org_id, org, held):
                continue
            if held is not None:
                await self._do(
                    "DELETE FROM org_members WHERE org_id = ? AND user_id = ?", (org_id, uid)
                )
                self._log("role removed", org=org, role=held)
            await self._do("DELETE FROM ldap_roles WHERE user_id = ? AND org_id = ?", (uid, org_id))

    async def _keep(self, org_id: int, org: str, held: str) -> bool:
        """Whether a managed role the groups no longer give must stay, saying why."""
        in_teams = await self._rows(
            "SELECT 1 FROM team_members m JOIN teams t ON t.id = m.team_id"
            " WHERE m.user_id = ? AND t.org_id = ?",
            (self._user_id, org_id),
        )
        if in_teams:
            self._log("role kept (in a team of it by hand)", org=org, role=held)
            return True
        if held == OWNER:
            owners = await self._rows(
                "SELECT count(*) AS n FROM org_members WHERE org_id = ? AND role = ?",
                (org_id, OWNER),
            )
            if owners[0]["n"] <= 1:
                log.warning(
                    "directory membership",
                    extra={"user": self._user, "change": "role kept (last owner)", "org": org},
                )
                return True
        return False
