"""The registry database's migrations: an old database is upgraded in place, a newer one refused."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from ghostcrate.private.crates import Crates, NewVersion
from ghostcrate.private.db import Database, SchemaTooNew, migrate, schema_version
from ghostcrate.private.schema import MIGRATIONS
from ghostcrate.private.tokens import Actor
from tests.support.appliance import Appliance
from tests.support.upstream import FakeUpstream

ENTRY = {"name": "acme-core", "vers": "1.0.0", "deps": [], "cksum": "a" * 64, "features": {}}


async def make_first_schema_database(path: Path) -> None:
    """A database as the first GhostCrate with a registry left it: migration 1 and its data."""
    async with aiosqlite.connect(path, isolation_level=None) as connection:
        await migrate(connection, upto=1)
        assert await schema_version(connection) == 1
        await connection.execute("BEGIN")
        await connection.execute(
            "INSERT INTO users (id, name, admin, created_at) VALUES (1, 'alice', 1, 1.0)"
        )
        await connection.execute(
            "INSERT INTO crates (id, name, canonical, created_at, updated_at)"
            " VALUES (1, 'acme-core', 'acme_core', 1.0, 1.0)"
        )
        await connection.execute(
            "INSERT INTO versions (crate_id, num, num_no_build, cksum, size, entry,"
            " published_by, created_at) VALUES (1, '1.0.0', '1.0.0', ?, 10, ?, 1, 1.0)",
            ("a" * 64, json.dumps(ENTRY)),
        )
        await connection.execute("INSERT INTO owners (crate_id, user_id) VALUES (1, 1)")
        await connection.execute(
            "INSERT INTO changes (kind, name, version, at)"
            " VALUES ('crate', 'acme-core', '1.0.0', 1.0)"
        )
        await connection.commit()


async def test_a_database_made_by_the_first_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    await make_first_schema_database(path)

    async with Database.open(path) as db:
        row = await db.one("PRAGMA user_version")
        assert row is not None
        assert row[0] == len(MIGRATIONS)
        crates = Crates(db)
        # What version 1 held is all there.
        assert await crates.names() == {"acme_core": "acme-core"}
        assert await crates.cksum("acme-core", "1.0.0") == "a" * 64
        body = await crates.index_body("acme-core")
        assert body is not None
        assert json.loads(body.body) == {**ENTRY, "yanked": False}
        owners = await crates.owner_names("acme-core")
        assert [owner["name"] for owner in owners] == ["alice"]
        old = (await crates.versions("acme-core"))[0]
        assert (old["license"], old["publisher"]) == (None, "alice")
        # The columns the later migrations added are usable, beside the old rows.
        actor = Actor(user_id=1, user="alice", admin=True, token_id=0)
        await crates.add_version(
            NewVersion(
                name="acme-core",
                version="1.1.0",
                cksum="b" * 64,
                size=20,
                entry={**ENTRY, "vers": "1.1.0", "cksum": "b" * 64},
                keywords=("acme", "core"),
                license="MIT",
                about={
                    "description": "the core",
                    "repository": None,
                    "homepage": None,
                    "documentation": None,
                },
            ),
            actor,
        )
        crate = await crates.crate("acme-core")
        assert crate is not None
        assert (crate["description"], crate["keywords"]) == ("the core", "acme core")
        assert [v["license"] for v in await crates.versions("acme-core")] == [None, "MIT"]
        found, total = await crates.search("core", 10)
        assert (found, total) == (
            [{"name": "acme-core", "max_version": "1.1.0", "description": "the core"}],
            1,
        )

    # Opening it again applies nothing more.
    async with Database.open(path) as db:
        row = await db.one("PRAGMA user_version")
        assert row is not None
        assert row[0] == len(MIGRATIONS)


def newer_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE future (id INTEGER PRIMARY KEY)")
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    connection.close()


async def test_a_database_newer_than_this_ghostcrate_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    newer_database(path)
    known = len(MIGRATIONS)
    with pytest.raises(SchemaTooNew, match=rf"schema {known + 1}, newer .* knows \({known}\)"):
        async with Database.open(path):
            pass
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert tables == {"future"}


@pytest.mark.parametrize("command", [("serve",), ("user", "list")], ids=lambda c: c[0])
def test_serve_refuses_a_newer_database_in_one_line(
    tmp_path: Path, upstream: FakeUpstream, command: tuple[str, ...]
) -> None:
    appliance = Appliance(tmp_path, upstream.url)
    database = appliance.data_dir / "private" / "registry.db"
    newer_database(database)
    result = appliance.run(*command)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines == [
        f"ghostcrate: the registry database has schema {len(MIGRATIONS) + 1}, newer than this "
        f"GhostCrate knows ({len(MIGRATIONS)}): run the GhostCrate that upgraded it, "
        f"or a newer one ({database})"
    ]


async def test_writers_of_two_processes_queue_on_the_file_lock(tmp_path: Path) -> None:
    """Two `Database`s on one file stand for two workers (each has its own lock file open)."""
    path = tmp_path / "registry.db"
    async with Database.open(path) as first, Database.open(path) as second:
        order: list[str] = []
        holding = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with first.write() as connection:
                await connection.execute("INSERT INTO changes (kind, at) VALUES ('first', 0)")
                holding.set()
                await release.wait()
                order.append("first")

        async def follow() -> None:
            async with second.write() as connection:
                await connection.execute("INSERT INTO changes (kind, at) VALUES ('second', 0)")
                order.append("second")

        holder = asyncio.create_task(hold())
        await holding.wait()
        waiter = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        assert order == []  # the second writer waits for the first
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, waiter), 5)
        assert order == ["first", "second"]


async def test_a_writer_cancelled_while_it_waits_leaves_the_lock_free(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    async with Database.open(path) as first, Database.open(path) as second:
        release = asyncio.Event()
        holding = asyncio.Event()

        async def hold() -> None:
            async with first.write():
                holding.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await holding.wait()

        async def write_second() -> None:
            async with second.write():
                pass

        waiter = asyncio.create_task(write_second())
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.set()
        await holder
        # Had the cancelled wait kept the lock it took afterwards, this would hang.
        await asyncio.wait_for(write_second(), 5)
        async with first.write() as connection:
            await connection.execute("INSERT INTO changes (kind, at) VALUES ('after', 0)")


async def test_a_write_cancelled_at_any_point_leaves_the_database_writable(
    tmp_path: Path,
) -> None:
    """A task cancelled while its BEGIN runs or inside its block (a client gone, a shutdown)
    must not leave the writer in a transaction: every later write would fail."""
    async with Database.open(tmp_path / "registry.db") as db:
        for ticks in range(40):  # cancelled after 0, 1, 2, ... turns of the event loop

            async def slow_write(name: str) -> None:
                async with db.write() as connection:
                    await connection.execute(
                        "INSERT INTO users (name, admin, created_at) VALUES (?, 0, 1.0)", (name,)
                    )
                    await asyncio.sleep(60)  # never done: the cancel comes first

            task = asyncio.create_task(slow_write(f"cancelled-{ticks}"))
            for _ in range(ticks):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with db.write() as connection:  # raised "within a transaction" before
                await connection.execute(
                    "INSERT INTO users (name, admin, created_at) VALUES (?, 0, 1.0)",
                    (f"after-{ticks}",),
                )
        names = {row[0] for row in await db.all("SELECT name FROM users")}
        assert {f"after-{ticks}" for ticks in range(40)} <= names
        assert not any(name.startswith("cancelled-") for name in names)  # rolled back
