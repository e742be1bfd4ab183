"""`ghostcrate audit`: read, export and verify the audit log, beside a running server.

Records go to standard output, one a line (readable, or JSON lines with
`--format jsonl`), oldest first; `--verify` walks the hash chain and names the
first record removed, edited or added by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from ghostcrate.appliance import exitcodes
from ghostcrate.config import Settings
from ghostcrate.private.audit_log import Filters, records, verify
from ghostcrate.private.db import Database
from ghostcrate.private.registry import registry_database

_RELATIVE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class BadSince(ValueError):
    """`--since` is neither an ISO date/time nor a relative one like 24h."""


def since(text: str, now: datetime | None = None) -> str:
    """`--since` as the log writes times (ISO-8601 UTC): `24h`, `7d`, or an ISO date/time
    (without a zone: UTC)."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative is not None:
        amount, unit = int(relative[1]), _UNITS[relative[2]]
        moment = (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise BadSince(
                f"--since {text!r}: give an ISO date or time (2026-12-01, "
                "2026-12-01T08:00, 2026-12-01T08:00+01:00) or a span back from now "
                "(30m, 24h, 7d, 2w)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    stamp = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


async def run_audit(settings: Settings, args: argparse.Namespace) -> int:
    path = registry_database(settings)
    if not path.is_file():
        print(f"ghostcrate audit: there is no registry database at {path}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        filters = Filters(
            since=None if args.since is None else since(args.since),
            user=args.user,
            crate=args.crate,
        )
    except BadSince as error:
        print(f"ghostcrate audit: {error}", file=sys.stderr)
        return exitcodes.USAGE
    async with Database.open(path) as db:
        if args.verify:
            return await _verify(db)
        found = records(db, filters)
        if args.output is None:
            try:
                await _write(found, sys.stdout, args.format)
            except BrokenPipeError:  # `| head`: the reader has all it wants
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return exitcodes.OK
        partial = args.output.with_name(f".{args.output.name}.{os.getpid()}.tmp")
        try:
            with partial.open("w", encoding="utf-8") as out:
                await _write(found, out, args.format)
            partial.replace(args.output)
        finally:
            partial.unlink(missing_ok=True)
    return exitcodes.OK


async def _verify(db: Database) -> int:
    verdict = await verify(db)
    if verdict.problems:
        for problem in verdict.problems:
            print(f"ghostcrate audit: {problem}", file=sys.stderr)
        return exitcodes.BROKEN
    print(f"{verdict.records} records, chain intact; newest hash {verdict.head}")
    return exitcodes.OK


async def _write(found: AsyncIterator[dict[str, Any]], out: TextIO, form: str) -> None:
    async for record in found:
        line = json.dumps(record, ensure_ascii=False) if form == "jsonl" else readable(record)
        out.write(line + "\n")


def readable(record: dict[str, Any]) -> str:
    """One record on one line: time, number, action, outcome, who, from where, what."""
    outcome = record["outcome"]
    if record["rule"]:
        outcome += f" ({record['rule']})"
    if record["count"] > 1:
        outcome += f" x{record['count']}"
    who = record["credential"] or "anonymous"
    if record["actor"]:
        who = f"{record['actor']} [{who}]"
    parts = [record["at"], f"#{record['id']}", record["action"], outcome, who]
    if record["remote"]:
        parts.append(f"from {record['remote']}")
    what = " ".join(
        f"{key}={record[key]}"
        for key in ("crate", "version", "org", "team", "target")
        if record[key] is not None
    )
    if what:
        parts.append(what)
    if record["request_id"]:
        parts.append(f"request {record['request_id']}")
    if record["detail"]:
        parts.append(f"- {record['detail']}")
    return "  ".join(parts)
