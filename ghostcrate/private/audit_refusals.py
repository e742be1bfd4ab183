"""Refusals and failed writes for the audit log, coalesced and bounded.

Anyone can send refused requests as fast as the network carries them; one
database transaction each would let them take the write lock from publishes.
So a refusal is counted in memory, under a key of everything but its time and
request id, and every `flush_seconds` each key becomes one record with its
`count` (the first one's time, request id and detail), all in one transaction.
At most `max_records` keys are kept per interval; refusals beyond them are
summed into one `coalesced` record. A worker therefore writes at most
`max_records + 1` refusal records per interval, whatever the flood.
What a failed (or cancelled) flush did not write is kept for the next one; a
worker killed between two flushes loses that interval's refusals.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from ghostcrate.private import audit
from ghostcrate.private.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refusal:
    """What makes two refusals the same record."""

    action: str
    outcome: str
    rule: str | None
    remote: str | None
    user: str | None
    credential: str | None
    crate: str | None = None
    version: str | None = None
    org: str | None = None
    team: str | None = None
    target: str | None = None


@dataclass(slots=True)
class _Pending:
    at: str
    request_id: str | None
    detail: str | None
    count: int = field(default=1)


class RefusalLog:
    def __init__(self, db: Database, *, flush_seconds: float, max_records: int) -> None:
        self._db = db
        self.flush_seconds = flush_seconds
        self._max = max_records
        self._pending: dict[Refusal, _Pending] = {}
        self._overflow = 0

    def note(self, refusal: Refusal, *, request_id: str | None, detail: str | None) -> None:
        """Count one refusal (no I/O: it is written at the next flush)."""
        pending = self._pending.get(refusal)
        if pending is not None:
            pending.count += 1
        elif len(self._pending) < self._max:
            self._pending[refusal] = _Pending(audit.now_iso(), request_id, audit.clip(detail))
        else:
            self._overflow += 1

    async def flush(self) -> int:
        """Write what was counted since the last flush; how many records."""
        pending, overflow = self._pending, self._overflow
        if not pending and not overflow:
            return 0
        self._pending, self._overflow = {}, 0
        try:
            await self._write(pending, overflow)
        except BaseException:  # kept for the next flush (bounded as ever)
            self._keep(pending, overflow)
            raise
        return len(pending) + bool(overflow)

    def _keep(self, pending: dict[Refusal, _Pending], overflow: int) -> None:
        """Put back what a failed flush did not write, before what was counted since."""
        newer, self._pending = self._pending, pending
        self._overflow += overflow
        for refusal, seen in newer.items():
            kept = self._pending.get(refusal)
            if kept is not None:
                kept.count += seen.count
            elif len(self._pending) < self._max:
                self._pending[refusal] = seen
            else:
                self._overflow += seen.count

    async def _write(self, pending: dict[Refusal, _Pending], overflow: int) -> None:
        async with self._db.write() as connection:
            for refusal, seen in pending.items():
                await audit.append(
                    connection,
                    refusal.action,
                    who=audit.Origin(
                        refusal.remote, seen.request_id, refusal.user, refusal.credential
                    ),
                    outcome=refusal.outcome,
                    at=seen.at,
                    count=seen.count,
                    crate=refusal.crate,
                    version=refusal.version,
                    org=refusal.org,
                    team=refusal.team,
                    target=refusal.target,
                    rule=refusal.rule,
                    detail=seen.detail,
                )
            if overflow:
                await audit.append(
                    connection,
                    "coalesced",
                    who=audit.Origin(),
                    outcome=audit.REFUSED,
                    count=overflow,
                    detail=f"{overflow} more refusals in {self.flush_seconds:g} s, beyond "
                    f"{self._max} distinct records ([audit] refusal_records)",
                )

    async def run(self) -> None:
        """Forever: flush every `flush_seconds` (a failed flush is logged and tried again)."""
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:
                log.exception("could not write refusals to the audit log")
