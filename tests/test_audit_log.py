"""The audit log in the registry database: its chain, its triggers, its readers and its CLI."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ghostcrate.appliance.audit_cli import BadSince, since
from ghostcrate.private import audit
from ghostcrate.private.audit_log import Filters, records, verify
from ghostcrate.private.audit_refusals import Refusal, RefusalLog
from ghostcrate.private.db import Database

OPERATOR = audit.Origin(remote="10.0.0.7", request_id="req-1", user="alice", credential="token 3")


def registry_db(data_dir: Path) -> Path:
    return data_dir / "private" / "registry.db"


async def fill(path: Path) -> None:
    """Five records: alice publishes and yanks acme-core, bob gets a token, and so on."""
    async with Database.open(path) as db:
        events: tuple[tuple[str, dict[str, Any]], ...] = (
            ("publish", {"crate": "acme-core", "version": "1.0.0"}),
            ("yank", {"crate": "acme-core", "version": "1.0.0"}),
            ("create-token", {"target": "bob", "detail": "token 4"}),
            ("publish", {"crate": "other", "version": "0.1.0"}),
            ("add-team", {"org": "acme", "team": "platform"}),
        )
        for action, what in events:
            async with db.write() as connection:
                await audit.append(connection, action, who=OPERATOR, **what)


def rows(path: Path) -> list[dict[str, object]]:
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM audit ORDER BY id")]


def tamper(path: Path, *statements: str) -> None:
    """What someone with sqlite3 and write access does: drop the triggers, then change rows."""
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TRIGGER audit_no_update")
        connection.execute("DROP TRIGGER audit_no_delete")
        for statement in statements:
            connection.execute(statement)


async def problems(path: Path) -> tuple[str, ...]:
    async with Database.open(path) as db:
        return (await verify(db)).problems


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ghostcrate", "audit", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_each_record_hashes_the_one_before_and_its_own_fields(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    await fill(path)
    stored = rows(path)
    assert [row["id"] for row in stored] == [1, 2, 3, 4, 5]
    previous = "0" * 64
    for row in stored:
        fields = {key: value for key, value in row.items() if key != "hash"}
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert row["prev_hash"] == previous
        assert row["hash"] == hashlib.sha256((previous + canonical).encode()).hexdigest()
        previous = str(row["hash"])
    first = stored[0]
    assert (first["actor"], first["credential"], first["remote"], first["request_id"]) == (
        "alice",
        "token 3",
        "10.0.0.7",
        "req-1",
    )
    assert (first["action"], first["crate"], first["version"], first["outcome"]) == (
        "publish",
        "acme-core",
        "1.0.0",
        "ok",
    )
    verdict_problems = await problems(path)
    assert verdict_problems == ()


async def test_the_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    await fill(path)
    with sqlite3.connect(path) as connection:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("UPDATE audit SET actor = 'mallory' WHERE id = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("DELETE FROM audit WHERE id = 5")
    assert [row["actor"] for row in rows(path)] == ["alice"] * 5


@pytest.mark.parametrize(
    ("statements", "named"),
    [
        (("UPDATE audit SET actor = 'mallory' WHERE id = 3",), "record 3 was edited"),
        (("DELETE FROM audit WHERE id = 2",), "records 2 to 2 are missing"),
        (("DELETE FROM audit WHERE id >= 4",), "records 4 to 5 are missing"),
        (
            (
                "INSERT INTO audit (at, action, outcome, count, prev_hash, hash) SELECT"
                " '2026-01-01T00:00:00Z', 'publish', 'ok', 1, hash, 'forged' FROM audit"
                " WHERE id = 5",
            ),
            "record 6 was edited or inserted by hand",
        ),
    ],
    ids=["edited", "removed", "removed-at-the-end", "inserted"],
)
async def test_verify_names_the_first_record_removed_edited_or_inserted(
    tmp_path: Path, statements: tuple[str, ...], named: str
) -> None:
    path = tmp_path / "registry.db"
    await fill(path)
    tamper(path, *statements)
    found = await problems(path)
    assert named in found[0], found
    assert "triggers are gone" in found[-1]


async def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    await fill(path)
    row = rows(path)[1]
    row["actor"] = "mallory"
    fields = {key: value for key, value in row.items() if key != "hash"}
    forged = audit.record_hash(str(row["prev_hash"]), fields)
    tamper(path, f"UPDATE audit SET actor = 'mallory', hash = '{forged}' WHERE id = 2")
    found = await problems(path)
    assert "record 3 does not follow record 2's hash: record 2 was edited" in found[0]


async def test_refusals_are_coalesced_and_bounded(tmp_path: Path) -> None:
    async with Database.open(tmp_path / "registry.db") as db:
        log = RefusalLog(db, flush_seconds=1.0, max_records=3)
        for attempt in range(1000):  # one address trying bad tokens on and on
            refusal = Refusal("publish", "refused", "authentication", "10.0.0.9", None, None)
            log.note(refusal, request_id=f"r{attempt}", detail="bad token")
        for address in range(50):  # then fifty addresses at once
            refusal = Refusal("sign-in", "refused", "throttle", f"10.1.0.{address}", None, None)
            log.note(refusal, request_id=None, detail="throttled")
        assert await log.flush() == 4
        found = [record async for record in records(db)]
        assert await log.flush() == 0  # nothing new: nothing written
        assert (await verify(db)).problems == ()
    assert [(r["action"], r["remote"], r["count"]) for r in found] == [
        ("publish", "10.0.0.9", 1000),
        ("sign-in", "10.1.0.0", 1),
        ("sign-in", "10.1.0.1", 1),
        ("coalesced", None, 48),
    ]
    assert found[0]["request_id"] == "r0"  # the first of the thousand


def test_since_takes_iso_times_and_spans_back_from_now() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert since("24h", now) == "2026-12-06T12:00:00.000000Z"
    assert since("7d", now) == "2026-11-30T12:00:00.000000Z"
    assert since("2026-12-01") == "2026-12-01T00:00:00.000000Z"
    assert since("2026-12-01T08:00+01:00") == "2026-12-01T07:00:00.000000Z"
    with pytest.raises(BadSince, match="--since 'yesterday'"):
        since("yesterday")


async def test_filters_select_by_time_user_and_crate(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    await fill(path)
    async with Database.open(path) as db:

        async def ids(filters: Filters) -> list[int]:
            return [int(record["id"]) async for record in records(db, filters)]

        assert await ids(Filters(crate="ACME_core")) == [1, 2]
        assert await ids(Filters(user="Bob")) == [3]
        assert await ids(Filters(user="alice")) == [1, 2, 3, 4, 5]
        assert await ids(Filters(since="2999-01-01")) == []


async def test_the_command_filters_exports_json_lines_and_verifies(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    await fill(registry_db(data_dir))

    text = cli(data_dir, "--crate", "acme-core", "--user", "alice", "--since", "1h")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    assert (
        "#1  publish  ok  alice [token 3]  from 10.0.0.7  crate=acme-core version=1.0.0"
        in (lines[0])
    )
    assert cli(data_dir, "--since", "2999-01-01").stdout == ""
    assert len(cli(data_dir, "--user", "bob").stdout.splitlines()) == 1

    exported = tmp_path / "audit.jsonl"
    assert cli(data_dir, "--json", "--output", str(exported)).returncode == 0
    parsed = [json.loads(line) for line in exported.read_text().splitlines()]
    assert parsed == rows(registry_db(data_dir))  # every field, hashes included
    assert [
        json.loads(line) for line in cli(data_dir, "--format", "jsonl").stdout.splitlines()
    ] == (parsed)

    intact = cli(data_dir, "--verify")
    assert intact.returncode == 0, intact.stderr
    assert f"5 records, chain intact; newest hash {parsed[-1]['hash']}" in intact.stdout

    tamper(registry_db(data_dir), "UPDATE audit SET crate = 'acme-evil' WHERE id = 2")
    broken = cli(data_dir, "--verify")
    assert broken.returncode == 1
    assert "record 2 was edited" in broken.stderr

    bad = cli(data_dir, "--since", "last tuesday")
    assert bad.returncode == 2
    assert "--since 'last tuesday'" in bad.stderr


async def test_refusals_a_failed_flush_could_not_write_are_kept_for_the_next(
    tmp_path: Path,
) -> None:
    path = tmp_path / "registry.db"
    async with Database.open(path) as db:
        log = RefusalLog(db, flush_seconds=1.0, max_records=10)
        refusal = Refusal("yank", "refused", "crate-owner", "10.0.0.3", "eve", "token 9")
        log.note(refusal, request_id="first", detail="not an owner")
        with sqlite3.connect(path) as connection:  # the database refuses writes for a while
            connection.execute(
                "CREATE TRIGGER full BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'full'); END"
            )
        with pytest.raises(sqlite3.IntegrityError, match="full"):
            await log.flush()
        log.note(refusal, request_id="second", detail="not an owner")
        with sqlite3.connect(path) as connection:
            connection.execute("DROP TRIGGER full")
        assert await log.flush() == 1
        (written,) = [record async for record in records(db)]
    assert (written["count"], written["request_id"], written["actor"]) == (2, "first", "eve")
