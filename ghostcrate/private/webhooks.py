"""Webhooks in the registry database: the receivers, and the outbox of their deliveries.

`enqueue` is called inside the write transaction of a publish, yank, unyank or
owner change, so a delivery is recorded exactly when its change is (a
transactional outbox); the appliance's deliverer sends it later. A webhook is
an organisation's (told of the crates in its namespace or owned by its teams)
or the config's (`[[webhooks.endpoints]]`, told of every crate; its secret
stays in the config). Deliveries are signed with `sign`: HMAC-SHA256 over
`TIMESTAMP.BODY`, as docs/webhooks.md shows receivers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiosqlite

from ghostcrate.config.model import WEBHOOK_EVENTS, WebhookEndpointSettings
from ghostcrate.private import audit
from ghostcrate.private.db import Database, Row
from ghostcrate.private.errors import NotFound, RegistryError
from ghostcrate.private.orgs import rows_of, split_team
from ghostcrate.private.tokens import Actor, canonical, matches
from ghostcrate.private.webhook_targets import Targets, check_target

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
#: The header with the signature, `t=UNIX,v1=HEX` (Stripe's scheme).
SIGNATURE_HEADER = "X-GhostCrate-Signature"
EVENT_HEADER = "X-GhostCrate-Event"
DELIVERY_HEADER = "X-GhostCrate-Delivery"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def check_events(events: list[str]) -> list[str]:
    """`events` if each is known and there is one; else a 400 naming the known ones."""
    unknown = [event for event in events if event not in WEBHOOK_EVENTS]
    if unknown or not events:
        raise RegistryError(
            f"unknown webhook event(s) {', '.join(unknown) or '(none given)'}: "
            f"events are {', '.join(WEBHOOK_EVENTS)}"
        )
    return list(dict.fromkeys(events))


async def enqueue(
    connection: aiosqlite.Connection,
    event: str,
    crate: str,
    version: str | None,
    actor: Actor,
    *,
    owners: list[str] | None = None,
) -> None:
    """Record a delivery of `event` to every webhook that wants it, in the caller's
    transaction. An organisation's webhooks are told of the crates in its namespace or
    owned by its teams, and of owner changes naming one of its teams."""
    rows = rows_of(connection)
    orgs = {org.lower() for org in await crate_orgs(connection, crate)}
    for login in owners or ():
        team = split_team(login)
        if team is not None:
            orgs.add(team[0].lower())
    hooks = await rows(
        "SELECT w.id, w.events, o.name AS org FROM webhooks w LEFT JOIN orgs o"
        " ON o.id = w.org_id WHERE w.removed_at IS NULL ORDER BY w.id",
        (),
    )
    now = time.time()
    for hook in hooks:
        if event not in hook["events"].split() or (
            hook["org"] is not None and hook["org"].lower() not in orgs
        ):
            continue
        delivery = str(uuid.uuid4())
        body: dict[str, object] = {
            "event": event,
            "crate": crate,
            "version": version,
            "actor": actor.user,
            "time": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "delivery": delivery,
        }
        if owners is not None:
            body["owners"] = owners
        await connection.execute(
            "INSERT INTO webhook_deliveries (webhook_id, delivery, event, crate, version, body,"
            " state, next_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (hook["id"], delivery, event, crate, version, json.dumps(body), PENDING, now, now),
        )


async def crate_orgs(connection: aiosqlite.Connection, crate: str) -> set[str]:
    """The organisations crate `crate` belongs to: by namespace, or by an owning team."""
    rows = rows_of(connection)
    found = {
        org["name"]
        for org in await rows("SELECT name, namespaces FROM orgs", ())
        if matches(json.loads(org["namespaces"]), crate)
    }
    teams = await rows(
        "SELECT DISTINCT o.name FROM team_owners w JOIN teams t ON t.id = w.team_id"
        " JOIN orgs o ON o.id = t.org_id JOIN crates c ON c.id = w.crate_id"
        " WHERE c.canonical = ?",
        (canonical(crate),),
    )
    return found | {row["name"] for row in teams}


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    #: The organisation's name, or None for one of the config's.
    org: str | None
    #: The config's name of it (None for an organisation's).
    name: str | None
    url: str
    events: tuple[str, ...]
    created_at: float

    @property
    def owner(self) -> str:
        """Whose it is: `org:ACME` or `config:NAME`."""
        return f"org:{self.org}" if self.org is not None else f"config:{self.name}"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "org": self.org,
            "url": self.url,
            "events": list(self.events),
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Due:
    """The oldest pending delivery of one webhook, with what sending it needs."""

    id: int
    webhook_id: int
    delivery: str
    event: str
    body: bytes
    attempts: int
    next_at: float
    url: str
    org: str | None
    name: str | None
    secret: str | None


_WEBHOOK = (
    "SELECT w.id, o.name AS org, w.name, w.url, w.events, w.created_at FROM webhooks w"
    " LEFT JOIN orgs o ON o.id = w.org_id WHERE w.removed_at IS NULL"
)


class Webhooks:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self, org: str, url: str, events: list[str], targets: Targets
    ) -> tuple[Webhook, str]:
        """A new webhook of `org`; it and its signing secret (shown only now)."""
        events = check_events(events)
        await check_target(url, targets)
        secret = "whsec_" + secrets.token_urlsafe(32)
        async with self._db.write() as connection:
            found = await rows_of(connection)(
                "SELECT id, name FROM orgs WHERE lower(name) = lower(?)", (org,)
            )
            if not found:
                raise NotFound(f"no organisation {org!r} (see `ghostcrate org list`)")
            cursor = await connection.execute(
                "INSERT INTO webhooks (org_id, url, secret, events, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (found[0]["id"], url, secret, " ".join(events), time.time()),
            )
            assert cursor.lastrowid is not None
            webhook_id = cursor.lastrowid
            await audit.append(
                connection,
                "add-webhook",
                org=found[0]["name"],
                target=url,
                detail=f"webhook {webhook_id}: {' '.join(events)}",
            )
        return await self.webhook(webhook_id), secret

    async def webhook(self, webhook_id: int, org: str | None = None) -> Webhook:
        """The webhook `webhook_id` (of `org`, when given); else `NotFound`."""
        row = await self._db.one(_WEBHOOK + " AND w.id = ?", (webhook_id,))
        if row is None or (org is not None and (row["org"] or "").lower() != org.lower()):
            where = f" of organisation {org}" if org is not None else ""
            raise NotFound(f"no webhook {webhook_id}{where} (see the list of webhooks)")
        return _webhook(row)

    async def webhooks(self, org: str | None = None) -> list[Webhook]:
        """The webhooks of `org`, or every webhook."""
        if org is None:
            rows = await self._db.all(_WEBHOOK + " ORDER BY w.id")
        else:
            rows = await self._db.all(
                _WEBHOOK + " AND lower(o.name) = lower(?) ORDER BY w.id", (org,)
            )
        return [_webhook(row) for row in rows]

    async def remove(self, webhook_id: int, org: str | None = None) -> Webhook:
        """Remove a webhook; its deliveries not made yet are dead (kept in the log)."""
        webhook = await self.webhook(webhook_id, org)
        now = time.time()
        async with self._db.write() as connection:
            await connection.execute(
                "UPDATE webhooks SET removed_at = ? WHERE id = ?", (now, webhook_id)
            )
            await _bury_pending(connection, webhook_id, now)
            await audit.append(
                connection,
                "remove-webhook",
                org=webhook.org,
                target=webhook.url,
                detail=f"webhook {webhook_id}",
            )
        return webhook

    async def sync_config(self, endpoints: list[WebhookEndpointSettings]) -> None:
        """Make the config's webhooks those of `[[webhooks.endpoints]]` (by name)."""
        now = time.time()
        async with self._db.write() as connection:
            rows = rows_of(connection)
            current = {
                row["name"]: row
                for row in await rows("SELECT * FROM webhooks WHERE name IS NOT NULL", ())
            }
            for endpoint in endpoints:
                events = " ".join(endpoint.events)
                row = current.pop(endpoint.name, None)
                if row is None:
                    await connection.execute(
                        "INSERT INTO webhooks (name, url, events, created_at) VALUES (?, ?, ?, ?)",
                        (endpoint.name, endpoint.url, events, now),
                    )
                elif (row["url"], row["events"], row["removed_at"]) != (endpoint.url, events, None):
                    await connection.execute(
                        "UPDATE webhooks SET url = ?, events = ?, removed_at = NULL WHERE id = ?",
                        (endpoint.url, events, row["id"]),
                    )
            for row in current.values():
                if row["removed_at"] is None:
                    await connection.execute(
                        "UPDATE webhooks SET removed_at = ? WHERE id = ?", (now, row["id"])
                    )
                    await _bury_pending(connection, row["id"], now)

    async def deliveries(self, webhook_id: int, limit: int = 100) -> list[dict[str, object]]:
        """The delivery log of a webhook, newest first."""
        rows = await self._db.all(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?",
            (webhook_id, limit),
        )
        return [_delivery(row) for row in rows]

    async def retry(self, webhook_id: int | None, deliveries: list[str]) -> int:
        """Re-drive dead deliveries: those named (of `webhook_id`, if given), or with none
        named all of `webhook_id`'s. They are pending again with their attempts counted
        afresh; how many. A named one that is not dead is `NotFound`."""
        now = time.time()
        redrive = (
            "UPDATE webhook_deliveries SET state = ?, attempts = 0, next_at = ?, done_at = NULL"
            " WHERE state = ? AND webhook_id IN (SELECT id FROM webhooks WHERE removed_at IS NULL)"
        )
        async with self._db.write() as connection:
            if not deliveries:
                cursor = await connection.execute(
                    redrive + " AND webhook_id = ?", (PENDING, now, DEAD, webhook_id)
                )
                retried = cursor.rowcount
                detail = f"webhook {webhook_id}: {retried} dead deliveries"
            else:
                for delivery in deliveries:
                    cursor = await connection.execute(
                        redrive + " AND delivery = ? AND webhook_id = coalesce(?, webhook_id)",
                        (PENDING, now, DEAD, delivery, webhook_id),
                    )
                    if cursor.rowcount == 0:
                        raise NotFound(
                            f"no dead delivery {delivery} of a webhook that is still there"
                        )
                retried = len(deliveries)
                detail = "deliveries " + " ".join(deliveries)
            await audit.append(connection, "retry-webhook", detail=detail)
            return retried

    # --- for the deliverer -----------------------------------------------------

    async def prune(self, before: float) -> int:
        """Forget the deliveries delivered before `before` (Unix time); how many."""
        async with self._db.write() as connection:
            cursor = await connection.execute(
                "DELETE FROM webhook_deliveries WHERE state = ? AND done_at < ?",
                (DELIVERED, before),
            )
            return cursor.rowcount

    async def due(self) -> list[Due]:
        """The oldest pending delivery of each webhook (due now or later)."""
        rows = await self._db.all(
            "SELECT d.id, d.webhook_id, d.delivery, d.event, d.body, d.attempts, d.next_at,"
            " w.url, o.name AS org, w.name, w.secret FROM webhook_deliveries d"
            " JOIN webhooks w ON w.id = d.webhook_id LEFT JOIN orgs o ON o.id = w.org_id"
            " WHERE d.id IN (SELECT min(id) FROM webhook_deliveries WHERE state = ?"
            " GROUP BY webhook_id)",
            (PENDING,),
        )
        return [
            Due(
                row["id"],
                row["webhook_id"],
                row["delivery"],
                row["event"],
                row["body"].encode(),
                row["attempts"],
                row["next_at"],
                row["url"],
                row["org"],
                row["name"],
                row["secret"],
            )
            for row in rows
        ]

    async def attempted(
        self,
        due: Due,
        *,
        status: int | None,
        error: str | None,
        retry_at: float | None,
    ) -> str:
        """Record one attempt: delivered (no `error`), else pending until `retry_at`, or dead
        (`retry_at` None). The delivery's state now."""
        now = time.time()
        state = DELIVERED if error is None else (PENDING if retry_at is not None else DEAD)
        async with self._db.write() as connection:
            await connection.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1,"
                " last_status = ?, last_error = ?, last_attempt_at = ?, next_at = ?,"
                " done_at = ? WHERE id = ? AND state = ?",
                (
                    state,
                    status,
                    error,
                    now,
                    retry_at if retry_at is not None else now,
                    None if state == PENDING else now,
                    due.id,
                    PENDING,
                ),
            )
        return state


async def _bury_pending(connection: aiosqlite.Connection, webhook_id: int, now: float) -> None:
    await connection.execute(
        "UPDATE webhook_deliveries SET state = ?, last_error = 'webhook removed', done_at = ?"
        " WHERE webhook_id = ? AND state = ?",
        (DEAD, now, webhook_id, PENDING),
    )


def _webhook(row: Row) -> Webhook:
    return Webhook(
        row["id"],
        row["org"],
        row["name"],
        row["url"],
        tuple(row["events"].split()),
        row["created_at"],
    )


def _delivery(row: Row) -> dict[str, object]:
    return {
        "delivery": row["delivery"],
        "event": row["event"],
        "crate": row["crate"],
        "version": row["version"],
        "state": row["state"],
        "attempts": row["attempts"],
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "created_at": _iso(row["created_at"]),
        "last_attempt_at": _iso(row["last_attempt_at"]),
        "next_at": _iso(row["next_at"]) if row["state"] == PENDING else None,
        "done_at": _iso(row["done_at"]),
    }


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
