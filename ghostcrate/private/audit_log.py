"""Reading the audit log: filtered records in order, and the walk that checks its chain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ghostcrate.private.audit import FIELDS, GENESIS, record_hash
from ghostcrate.private.db import Database
from ghostcrate.private.tokens import canonical

#: Records read at a time.
PAGE = 1000
TRIGGERS = ("audit_no_update", "audit_no_delete")


@dataclass(frozen=True, slots=True)
class Filters:
    #: ISO-8601 UTC time (as `at` is written): records at or after it.
    since: str | None = None
    #: The acting user or the user acted on.
    user: str | None = None
    crate: str | None = None


async def records(db: Database, filters: Filters = Filters()) -> AsyncIterator[dict[str, Any]]:
    """The records that match `filters`, oldest first, each a dict of every column."""
    conditions, params = ["id > ?"], []
    if filters.since is not None:
        conditions.append("at >= ?")
        params.append(filters.since)
    if filters.user is not None:
        conditions.append("(lower(actor) = ? OR lower(target) = ?)")
        params += [filters.user.lower()] * 2
    if filters.crate is not None:
        conditions.append("lower(replace(crate, '-', '_')) = ?")
        params.append(canonical(filters.crate))
    where = " AND ".join(conditions)
    last = 0
    while True:
        rows = await db.all(
            f"SELECT * FROM audit WHERE {where} ORDER BY id LIMIT {PAGE}", (last, *params)
        )
        for row in rows:
            yield dict(row)
        if len(rows) < PAGE:
            return
        last = rows[-1]["id"]


@dataclass(frozen=True, slots=True)
class Verdict:
    records: int
    #: The newest record's hash: kept elsewhere, it shows later whether the log was rewritten.
    head: str
    #: What is wrong, the first broken record first; empty if the chain is whole.
    problems: tuple[str, ...]


async def verify(db: Database) -> Verdict:
    """Walk the chain from the first record; name the first one removed, edited or added."""
    previous, expected, count = GENESIS, 1, 0
    problems: list[str] = []
    async for row in records(db):
        problem = _broken(row, expected, previous)
        if problem is not None:
            problems.append(problem)
            break
        previous, expected, count = row["hash"], row["id"] + 1, count + 1
    if not problems:
        top = await db.one("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")
        highest = int(top[0]) if top is not None and top[0] is not None else 0
        if highest >= expected:
            problems.append(
                f"records {expected} to {highest} are missing: removed after the last one kept"
            )
    present = {row[0] for row in await db.all("SELECT name FROM sqlite_master")}
    missing = [name for name in TRIGGERS if name not in present]
    if missing:
        problems.append(
            f"the append-only triggers are gone ({', '.join(missing)}): "
            "someone changed the database by hand"
        )
    return Verdict(count, previous, tuple(problems))


def _broken(row: dict[str, Any], expected: int, previous: str) -> str | None:
    """What is wrong at `row`, the next record after one whose hash is `previous`."""
    number = row["id"]
    if number != expected:
        return f"records {expected} to {number - 1} are missing: removed (record {number} follows)"
    if row["prev_hash"] != previous and number == 1:
        return "record 1 was edited or inserted by hand: it does not start the chain"
    if row["prev_hash"] != previous:
        return (
            f"record {number} does not follow record {number - 1}'s hash: "
            f"record {number - 1} was edited or replaced, or record {number} inserted"
        )
    if record_hash(row["prev_hash"], {key: row[key] for key in FIELDS}) != row["hash"]:
        return f"record {number} was edited or inserted by hand: its hash does not match it"
    return None
