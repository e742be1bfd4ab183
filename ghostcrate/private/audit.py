"""The audit log: who did what, from where, with which outcome, in a hash chain.

Every write appends its record with `append`, inside the write's own
transaction, so a write is never without its record (and a rolled-back write
leaves none). Who and from where come from `ORIGIN`, which the appliance sets
for each request (address, request id, then the authenticated user and
credential) and the command line sets for the operator.

Each record's `hash` is sha256 of the previous record's hash and the
canonical JSON of its own fields (`record_hash`). Appends happen under the
database's write lock (`Database.write`: a file lock across processes, then
`BEGIN IMMEDIATE`), so the workers of one server extend one chain.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

#: The `prev_hash` of the first record.
GENESIS = "0" * 64
#: The fields each record's hash covers, in the table's order (all but `hash`).
FIELDS = (
    "id",
    "at",
    "actor",
    "credential",
    "remote",
    "request_id",
    "action",
    "crate",
    "version",
    "org",
    "team",
    "target",
    "outcome",
    "rule",
    "detail",
    "count",
    "prev_hash",
)
OK, REFUSED, ERROR = "ok", "refused", "error"
#: Longest text kept in a field: a client chooses some of them (paths, names).
LONGEST = 300


@dataclass(slots=True)
class Origin:
    """Who acts and from where: one per request (or command), filled in as it is learnt."""

    remote: str | None = None
    request_id: str | None = None
    #: The registry user; None before authentication (and for the command line).
    user: str | None = None
    #: `token 12`, `session SID`, `cli OSUSER`, `system`.
    credential: str | None = None
    #: Whom a request names before it is authenticated (the login of a sign-in).
    target: str | None = None

    @classmethod
    def command_line(cls) -> Origin:
        return cls(credential=f"cli {_os_user()}")

    def signed_in(self, user: str, credential: str) -> Origin:
        """The same request, as the user it has just signed in."""
        return Origin(self.remote, self.request_id, user, credential, self.target)


ORIGIN: ContextVar[Origin | None] = ContextVar("audit_origin", default=None)


def origin() -> Origin:
    """This request's (or command's) origin; where none was set, GhostCrate's own
    (credential `system`)."""
    found = ORIGIN.get()
    if found is None:
        found = Origin(credential="system")
        ORIGIN.set(found)
    return found


def identify(user: str, credential: str) -> None:
    """The request has authenticated: its records name `user` and `credential`."""
    found = origin()
    found.user, found.credential = user, credential


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= LONGEST else text[: LONGEST - 1] + "…"


def canonical_json(fields: Mapping[str, Any]) -> str:
    """The record's fields as hashed: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(
        {key: fields[key] for key in FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def record_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


async def append(
    connection: aiosqlite.Connection,
    action: str,
    *,
    who: Origin | None = None,
    outcome: str = OK,
    at: str | None = None,
    count: int = 1,
    **what: str | None,
) -> None:
    """Add a record inside the caller's write transaction.

    `who`: instead of this request's origin (a sign-in's new session, a refusal
    written later). `what`: crate, version, org, team, target, rule, detail.
    """
    source = who if who is not None else origin()
    async with connection.execute(
        "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'audit'),"
        " (SELECT hash FROM audit ORDER BY id DESC LIMIT 1)"
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    fields: dict[str, Any] = {
        "id": int(row[0] or 0) + 1,
        "at": at or now_iso(),
        "actor": source.user,
        "credential": source.credential,
        "remote": source.remote,
        "request_id": source.request_id,
        "action": action,
        "outcome": outcome,
        "count": count,
        "prev_hash": row[1] or GENESIS,
    }
    for key in ("crate", "version", "org", "team", "target", "rule", "detail"):
        fields[key] = clip(what.pop(key, None))
    if what:
        raise TypeError(f"unknown audit fields: {', '.join(sorted(what))}")
    fields["hash"] = record_hash(fields["prev_hash"], fields)
    columns = (*FIELDS, "hash")
    await connection.execute(
        f"INSERT INTO audit ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        tuple(fields[column] for column in columns),
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
