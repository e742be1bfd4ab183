"""Private crates in the registry database: versions, index files, yanks, owners, search."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiosqlite

from ghostcrate.cargo.semver import InvalidVersion, Version
from ghostcrate.private import audit, changes, webhooks
from ghostcrate.private.carry import CarriedVersion, CarryError
from ghostcrate.private.db import Database, Row
from ghostcrate.private.errors import Conflict, NotFound, RegistryError
from ghostcrate.private.lookalikes import lookalike
from ghostcrate.private.orgs import rows_of, standing, team_of
from ghostcrate.private.rights import CHANGE_OWNERS, YANK, Standing, decide, decide_team_owner
from ghostcrate.private.tokens import Actor, canonical

#: Crate metadata kept from the newest version, for search and the crate's API page.
ABOUT_FIELDS = ("description", "repository", "homepage", "documentation")

#: One row of a query, on whichever connection the caller reads through.
Query = Callable[[str, tuple[object, ...]], Awaitable[Row | None]]


@dataclass(frozen=True, slots=True)
class IndexBody:
    """A private crate's index file: one JSON line per version, oldest first."""

    body: bytes
    #: When its newest line was added or changed (Unix time), for Last-Modified.
    changed_at: float


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A validated publish, ready to be recorded."""

    name: str
    version: str
    cksum: str
    size: int
    entry: dict[str, object]
    keywords: tuple[str, ...]
    license: str | None
    about: dict[str, str | None]


def same_crate(name: str, published: str) -> str:
    """The refusal of `name` when crate `published` differs from it only in case or -/_."""
    return (
        f"crate `{name}` is already published here as `{published}`: names that differ only "
        f"in case or '-'/'_' are the same crate; publish it as `{published}` or choose "
        "another name"
    )


def looks_like(name: str, published: str) -> str:
    """The refusal of a new crate `name` that looks like the private crate `published`."""
    return (
        f"crate name `{name}` looks like the existing private crate `{published}` (names are "
        "compared with case, '-'/'_' and look-alike characters folded: 0/o, 1/l/i, rn/m, "
        "vv/w); choose a clearly different name"
    )


class Crates:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def names(self) -> dict[str, str]:
        """Every private crate: canonical name -> name as published."""
        rows = await self._db.all("SELECT canonical, name FROM crates")
        return {row["canonical"]: row["name"] for row in rows}

    async def index_body(self, name: str) -> IndexBody | None:
        """The index file of the crate whose lowercase name is `name.lower()`, if private."""
        rows = await self._db.all(
            "SELECT c.name, v.entry, v.yanked, v.created_at FROM versions v"
            " JOIN crates c ON c.id = v.crate_id WHERE c.canonical = ? ORDER BY v.id",
            (canonical(name),),
        )
        if not rows or rows[0]["name"].lower() != name.lower():
            return None
        lines = []
        for row in rows:
            entry = json.loads(row["entry"])
            entry["yanked"] = bool(row["yanked"])
            lines.append(json.dumps(entry, separators=(",", ":")).encode())
        changed_at = await self._db.one(
            "SELECT max(at) FROM changes WHERE kind = ? AND lower(name) = lower(?)",
            (changes.CRATE, rows[0]["name"]),
        )
        at = changed_at[0] if changed_at is not None and changed_at[0] is not None else 0.0
        return IndexBody(b"\n".join(lines) + b"\n", max(at, rows[-1]["created_at"]))

    async def cksum(self, name: str, version: str) -> str | None:
        """The checksum of a private version, if `name` (any case) has it."""
        row = await self._db.one(
            "SELECT c.name, v.cksum FROM versions v JOIN crates c ON c.id = v.crate_id"
            " WHERE c.canonical = ? AND v.num = ?",
            (canonical(name), version),
        )
        if row is None or row["name"].lower() != name.lower():
            return None
        return str(row["cksum"])

    async def cksums(self) -> set[str]:
        return {row[0] for row in await self._db.all("SELECT cksum FROM versions")}

    async def crate(self, name: str) -> Row | None:
        return await self._db.one("SELECT * FROM crates WHERE canonical = ?", (canonical(name),))

    async def versions(self, name: str) -> list[Row]:
        return await self._db.all(
            "SELECT v.*, u.name AS publisher FROM versions v JOIN crates c ON c.id = v.crate_id"
            " LEFT JOIN users u ON u.id = v.published_by WHERE c.canonical = ? ORDER BY v.id",
            (canonical(name),),
        )

    async def owner_names(self, name: str) -> list[Row]:
        return await self._db.all(
            "SELECT u.id, u.name FROM owners o JOIN users u ON u.id = o.user_id"
            " JOIN crates c ON c.id = o.crate_id WHERE c.canonical = ? ORDER BY u.name",
            (canonical(name),),
        )

    async def standing(self, actor: Actor, name: str) -> Standing:
        """What `rights.decide` needs to know of `actor` and crate `name`."""
        return await standing(self._db.all, actor, name)

    # --- writes -------------------------------------------------------------

    async def add_version(self, new: NewVersion, actor: Actor) -> int:
        """Record a published version (and its crate, if new) and its change; the change's seq.

        The caller has checked everything; here only what a concurrent publish could
        have changed since is checked again, inside the transaction.
        """
        now = time.time()
        async with self._db.write() as connection:
            crate = await _one(
                connection, "SELECT * FROM crates WHERE canonical = ?", (canonical(new.name),)
            )
            if crate is None:
                async with connection.execute("SELECT name FROM crates") as cursor:
                    similar = lookalike(new.name, [row[0] async for row in cursor])
                if similar is not None:
                    raise Conflict(looks_like(new.name, similar))
                cursor = await connection.execute(
                    "INSERT INTO crates (name, canonical, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?)",
                    (new.name, canonical(new.name), now, now),
                )
                assert cursor.lastrowid is not None
                crate_id = cursor.lastrowid
                await connection.execute(
                    "INSERT INTO owners (crate_id, user_id) VALUES (?, ?)",
                    (crate_id, actor.user_id),
                )
            else:
                crate_id = crate["id"]
                if crate["name"] != new.name:
                    raise Conflict(same_crate(new.name, crate["name"]))
            taken = await _one(
                connection,
                "SELECT num FROM versions WHERE crate_id = ? AND num_no_build = ?",
                (crate_id, new.version.partition("+")[0]),
            )
            if taken is not None:
                raise RegistryError(
                    f"crate {new.name}@{taken['num']} already exists: "
                    "publish a new version (build metadata does not make a new one)",
                    status=409,
                )
            await connection.execute(
                "INSERT INTO versions (crate_id, num, num_no_build, cksum, size, entry,"
                " published_by, created_at, license) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    crate_id,
                    new.version,
                    new.version.partition("+")[0],
                    new.cksum,
                    new.size,
                    json.dumps(new.entry, separators=(",", ":")),
                    actor.user_id,
                    now,
                    new.license,
                ),
            )
            await connection.execute(
                "UPDATE crates SET updated_at = ?, description = ?, repository = ?,"
                " homepage = ?, documentation = ?, keywords = ? WHERE id = ?",
                (
                    now,
                    *(new.about.get(field) for field in ABOUT_FIELDS),
                    " ".join(new.keywords),
                    crate_id,
                ),
            )
            await audit.append(connection, "publish", crate=new.name, version=new.version)
            await webhooks.enqueue(connection, "publish", new.name, new.version, actor)
            return await changes.record(connection, changes.CRATE, new.name, new.version)

    async def set_yanked(self, name: str, version: str, actor: Actor, *, yanked: bool) -> int:
        """Yank or unyank a version as an owner (or an admin); the change's seq."""
        async with self._db.write() as connection:
            crate = await self._owned(connection, name, actor, YANK)
            row = await _one(
                connection,
                "SELECT id FROM versions WHERE crate_id = ? AND num = ?",
                (crate["id"], version),
            )
            if row is None:
                raise NotFound(f"crate {crate['name']} has no version {version}")
            await connection.execute(
                "UPDATE versions SET yanked = ? WHERE id = ?", (int(yanked), row["id"])
            )
            action = "yank" if yanked else "unyank"
            await audit.append(connection, action, crate=crate["name"], version=version)
            event = "yank" if yanked else "unyank"
            await webhooks.enqueue(connection, event, crate["name"], version, actor)
            return await changes.record(connection, changes.CRATE, crate["name"], version)

    async def change_owners(
        self, name: str, users: list[str], actor: Actor, *, add: bool
    ) -> tuple[list[str], int]:
        """Add or remove owners by user name or team login (`ORG:TEAM`); their names as
        stored, and the change's seq."""
        async with self._db.write() as connection:
            crate = await self._owned(connection, name, actor, CHANGE_OWNERS)
            found: list[str] = []
            for login in users:
                if ":" in login:
                    found.append(
                        await _change_team_owner(connection, crate["id"], login, actor, add=add)
                    )
                    continue
                user = await _one(
                    connection, "SELECT id, name FROM users WHERE lower(name) = lower(?)", (login,)
                )
                if user is None:
                    raise NotFound(f"could not find user with login `{login}`")
                found.append(user["name"])
                if add:
                    await connection.execute(
                        "INSERT OR IGNORE INTO owners (crate_id, user_id) VALUES (?, ?)",
                        (crate["id"], user["id"]),
                    )
                else:
                    await connection.execute(
                        "DELETE FROM owners WHERE crate_id = ? AND user_id = ?",
                        (crate["id"], user["id"]),
                    )
            left = await _one(
                connection, "SELECT count(*) AS n FROM owners WHERE crate_id = ?", (crate["id"],)
            )
            if left is not None and left["n"] == 0:
                raise RegistryError("cannot remove all individual owners of a crate")
            await audit.append(
                connection,
                "add-owners" if add else "remove-owners",
                crate=crate["name"],
                target=", ".join(found),
            )
            event = "owner_add" if add else "owner_remove"
            await webhooks.enqueue(connection, event, crate["name"], None, actor, owners=found)
            seq = await changes.record(connection, changes.OWNERS, crate["name"])
            return found, seq

    async def _owned(
        self, connection: aiosqlite.Connection, name: str, actor: Actor, action: str
    ) -> Row:
        """The crate `name`, if `rights.decide` lets `actor` do `action` to it."""
        crate = await _one(
            connection, "SELECT * FROM crates WHERE canonical = ?", (canonical(name),)
        )
        if crate is None or crate["name"].lower() != name.lower():
            raise NotFound(f"crate `{name}` does not exist in this registry")
        decide(actor, action, await standing(rows_of(connection), actor, crate["name"])).require()
        return crate

    # --- across the air gap --------------------------------------------------

    async def carried_versions(self) -> list[CarriedVersion]:
        """Every private version as a bundle carries it, oldest first."""
        rows = await self._db.all(
            "SELECT c.name, c.description, c.repository, c.homepage, c.documentation,"
            " c.keywords, v.num, v.cksum, v.size, v.entry, v.yanked, v.created_at,"
            " v.license, u.name AS publisher FROM versions v"
            " JOIN crates c ON c.id = v.crate_id LEFT JOIN users u ON u.id = v.published_by"
            " ORDER BY v.id"
        )
        owners: dict[str, list[str]] = {}
        for row in await self._db.all(
            "SELECT c.name AS crate, u.name FROM owners o JOIN users u ON u.id = o.user_id"
            " JOIN crates c ON c.id = o.crate_id ORDER BY u.name"
        ):
            owners.setdefault(row["crate"], []).append(row["name"])
        return [
            CarriedVersion(
                name=row["name"],
                vers=row["num"],
                cksum=row["cksum"],
                size=row["size"],
                entry=row["entry"],
                yanked=bool(row["yanked"]),
                owners=tuple(owners.get(row["name"], ())),
                published_by=row["publisher"],
                published_at=row["created_at"],
                license=row["license"],
                about={field: row[field] for field in ABOUT_FIELDS},
                keywords=tuple(row["keywords"].split()),
            )
            for row in rows
        ]

    async def new_of(self, carried: list[CarriedVersion]) -> list[CarriedVersion]:
        """Those of `carried` not here yet; raises `CarryError` on a clash (see `_new_of`)."""
        return await _new_of(self._db.one, carried)

    async def add_carried(self, carried: list[CarriedVersion]) -> tuple[list[CarriedVersion], int]:
        """Register those of `carried` not here yet, in one transaction; they, and the seq of
        the last change (0 if none).

        A new crate is owned by those of its carried owners that are users here (by
        name); by nobody if none is, and then only administrators may change it.
        """
        async with self._db.write() as connection:

            async def query(sql: str, params: tuple[object, ...]) -> Row | None:
                return await _one(connection, sql, params)

            added = await _new_of(query, carried)
            seq = 0
            now = time.time()
            for version in added:
                crate = await query(
                    "SELECT id FROM crates WHERE canonical = ?", (canonical(version.name),)
                )
                if crate is None:
                    cursor = await connection.execute(
                        "INSERT INTO crates (name, canonical, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?)",
                        (version.name, canonical(version.name), now, now),
                    )
                    assert cursor.lastrowid is not None
                    crate_id = cursor.lastrowid
                    for login in version.owners:
                        await connection.execute(
                            "INSERT OR IGNORE INTO owners (crate_id, user_id)"
                            " SELECT ?, id FROM users WHERE lower(name) = lower(?)",
                            (crate_id, login),
                        )
                else:
                    crate_id = crate["id"]
                publisher = await query(
                    "SELECT id FROM users WHERE lower(name) = lower(?)", (version.published_by,)
                )
                await connection.execute(
                    "INSERT INTO versions (crate_id, num, num_no_build, cksum, size, entry,"
                    " yanked, published_by, created_at, license)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        crate_id,
                        version.vers,
                        version.vers.partition("+")[0],
                        version.cksum,
                        version.size,
                        version.entry,
                        int(version.yanked),
                        None if publisher is None else publisher["id"],
                        version.published_at,
                        version.license,
                    ),
                )
                await connection.execute(
                    "UPDATE crates SET updated_at = ?, description = ?, repository = ?,"
                    " homepage = ?, documentation = ?, keywords = ? WHERE id = ?",
                    (
                        now,
                        *(version.about.get(field) for field in ABOUT_FIELDS),
                        " ".join(version.keywords),
                        crate_id,
                    ),
                )
                await audit.append(connection, "import", crate=version.name, version=version.vers)
                seq = await changes.record(connection, changes.CRATE, version.name, version.vers)
            return added, seq

    # --- reading for people -------------------------------------------------

    async def search(self, query: str, limit: int) -> tuple[list[dict[str, str]], int]:
        """Crates whose name, description or keywords contain `query`: exact name first."""
        words = query.strip()
        like = "%" + _escape_like(words.lower()) + "%"
        rows = await self._db.all(
            "SELECT * FROM crates WHERE canonical LIKE ? ESCAPE '\\' OR"
            " lower(coalesce(description, '')) LIKE ? ESCAPE '\\' OR"
            " lower(keywords) LIKE ? ESCAPE '\\'"
            " ORDER BY canonical = ? DESC, canonical",
            ("%" + _escape_like(canonical(words)) + "%", like, like, canonical(words)),
        )
        found = []
        for row in rows[:limit]:
            versions = await self.versions(row["name"])
            newest = max_version(
                [v["num"] for v in versions], [v["num"] for v in versions if v["yanked"]]
            )
            found.append(
                {
                    "name": row["name"],
                    "max_version": newest or "0.0.0",
                    "description": row["description"] or "",
                }
            )
        return found, len(rows)


def max_version(numbers: list[str], yanked: list[str]) -> str | None:
    """The highest version in `numbers`, preferring releases and versions not in `yanked`."""
    parsed = []
    for number in numbers:
        try:
            parsed.append((number not in yanked, Version.parse(number), number))
        except InvalidVersion:
            continue
    if not parsed:
        return None
    return max(parsed, key=lambda item: (item[0], not item[1].pre.text, item[1]))[2]


async def _new_of(query: Query, carried: list[CarriedVersion]) -> list[CarriedVersion]:
    """Those of `carried` not here yet. A version here with the same checksum is skipped;
    one with another checksum, or a name here (or in `carried`) in another spelling, is a
    clash that refuses all of them."""
    new: list[CarriedVersion] = []
    spellings: dict[str, str] = {}
    numbers: set[tuple[str, str]] = set()
    for version in carried:
        key = canonical(version.name)
        number = version.vers.partition("+")[0]
        crate = await query("SELECT id, name FROM crates WHERE canonical = ?", (key,))
        spelling = spellings.setdefault(key, crate["name"] if crate else version.name)
        if spelling != version.name:
            raise CarryError(
                f"private crate {version.name} clashes with {spelling}: names that differ "
                "only in case or '-'/'_' are the same crate"
            )
        if (key, number) in numbers:
            raise CarryError(f"private crate {version.name} {number} is carried twice")
        numbers.add((key, number))
        here = None
        if crate is not None:
            here = await query(
                "SELECT num, cksum FROM versions WHERE crate_id = ? AND num_no_build = ?",
                (crate["id"], number),
            )
        if here is None:
            new.append(version)
        elif here["cksum"] != version.cksum:
            raise CarryError(
                f"private crate {version.name}@{here['num']} is already here with another "
                f"checksum ({here['cksum']}; the bundle's is {version.cksum}): a version "
                "never changes, so one of the two registries published different bytes"
            )
    return new


async def _change_team_owner(
    connection: aiosqlite.Connection, crate_id: int, login: str, actor: Actor, *, add: bool
) -> str:
    """Add or remove the team `ORG:TEAM` as an owner of the crate; its login as stored."""
    team = await team_of(rows_of(connection), login, actor.user_id)
    if add:
        decide_team_owner(actor, team.login, team.role, in_team=team.in_team).require()
        await connection.execute(
            "INSERT OR IGNORE INTO team_owners (crate_id, team_id) VALUES (?, ?)",
            (crate_id, team.id),
        )
    else:
        await connection.execute(
            "DELETE FROM team_owners WHERE crate_id = ? AND team_id = ?", (crate_id, team.id)
        )
    return team.login


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _one(
    connection: aiosqlite.Connection, sql: str, params: tuple[object, ...]
) -> Row | None:
    async with connection.execute(sql, params) as cursor:
        row: Row | None = await cursor.fetchone()
        return row
