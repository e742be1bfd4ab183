"""The registry database: SQLite in WAL mode through `aiosqlite`, migrated on open.

Each process holds two connections: one for reads, which never wait for a
writer (WAL), and one for writes, used by one transaction at a time. Writes
take SQLite's write lock at their start (`BEGIN IMMEDIATE`), so two workers
that publish at once queue instead of failing halfway.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ghostcrate.private.schema import MIGRATIONS

#: How long a write waits for another process's transaction before giving up.
BUSY_TIMEOUT_MS = 15_000

Row = sqlite3.Row


class Database:
    """Reads and write transactions on the registry database."""

    def __init__(self, reader: aiosqlite.Connection, writer: aiosqlite.Connection) -> None:
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[Database]:
        """Open (creating and migrating as needed) the database at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await migrate(writer)
            reader = await _connect(path)
            try:
                yield cls(reader, writer)
            finally:
                await reader.close()
        finally:
            await writer.close()

    async def one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        async with self._reader.execute(sql, tuple(params)) as cursor:
            row: Row | None = await cursor.fetchone()
            return row

    async def all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        async with self._reader.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.rollback()
                raise
            await self._writer.commit()


async def _connect(path: Path) -> aiosqlite.Connection:
    connection = await aiosqlite.connect(path, isolation_level=None)
    connection.row_factory = sqlite3.Row
    await connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await connection.execute("PRAGMA journal_mode = WAL")
    # FULL: a transaction is on disk when its commit returns, so an answered publish
    # survives a power cut (NORMAL could lose the last ones in WAL mode).
    await connection.execute("PRAGMA synchronous = FULL")
    await connection.execute("PRAGMA foreign_keys = ON")
    return connection


async def schema_version(connection: aiosqlite.Connection) -> int:
    async with connection.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


class SchemaTooNew(Exception):
    """The database was migrated by a newer GhostCrate; this one must not touch it."""


def newer_schema(version: int) -> str | None:
    """Why a database at schema `version` cannot be used by this GhostCrate, if it cannot."""
    if version <= len(MIGRATIONS):
        return None
    return (
        f"the registry database has schema {version}, newer than this GhostCrate knows "
        f"({len(MIGRATIONS)}): run the GhostCrate that upgraded it, or a newer one"
    )


def _check_known(version: int) -> None:
    problem = newer_schema(version)
    if problem is not None:
        raise SchemaTooNew(problem)


async def migrate(connection: aiosqlite.Connection, upto: int = len(MIGRATIONS)) -> None:
    """Apply the migrations after the database's `user_version`, each in its own transaction.

    The version is read again under the write lock, so processes that open a new
    database at the same moment apply each migration once.
    """
    while True:
        await connection.execute("BEGIN IMMEDIATE")
        try:
            version = await schema_version(connection)
            _check_known(version)
            if version >= upto:
                await connection.rollback()
                return
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    await connection.execute(statement)
            await connection.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            await connection.rollback()
            raise
        await connection.commit()
