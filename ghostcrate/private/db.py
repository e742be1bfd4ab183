"""The registry database: SQLite in WAL mode through `aiosqlite`, migrated on open.

Each process holds two connections: one for reads, which never wait for a
writer (WAL), and one for writes, used by one transaction at a time. Writers of
all processes queue on a file lock (`write.lock` beside the database) before
they take SQLite's write lock (`BEGIN IMMEDIATE`): SQLite's own busy handler
polls with sleeps that grow to a second, and two workers publishing at once
made some publishes wait 1-2.4 s for a lock that was free after a few ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ghostcrate.private.schema import MIGRATIONS

#: How long a write waits for another process's transaction before giving up.
BUSY_TIMEOUT_MS = 15_000

Row = sqlite3.Row
#: Told each query's and write transaction's seconds: ("read" | "write", seconds).
Observer = Callable[[str, float], None]


def _unobserved(op: str, seconds: float) -> None:
    """Commands run without metrics."""


class Database:
    """Reads and write transactions on the registry database."""

    def __init__(
        self,
        reader: aiosqlite.Connection,
        writer: aiosqlite.Connection,
        lock_path: Path,
        observe: Observer = _unobserved,
    ) -> None:
        self._observe = observe
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        #: One thread that waits for the file lock, so waiting never takes a shared thread.
        self._locker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-lock")

    def close(self) -> None:
        self._locker.shutdown(wait=False, cancel_futures=True)
        os.close(self._lock_fd)

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, observe: Observer = _unobserved) -> AsyncIterator[Database]:
        """Open (creating and migrating as needed) the database at `path`."""
        await asyncio.get_running_loop().run_in_executor(None, owner_only, path)
        writer = await _connect(path)
        try:
            await migrate(writer)
            reader = await _connect(path)
            database = cls(reader, writer, path.with_name("write.lock"), observe)
            try:
                yield database
            finally:
                database.close()
                await reader.close()
        finally:
            await writer.close()

    async def one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        started = time.perf_counter()
        async with self._reader.execute(sql, tuple(params)) as cursor:
            row: Row | None = await cursor.fetchone()
        self._observe("read", time.perf_counter() - started)
        return row

    async def all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        started = time.perf_counter()
        async with self._reader.execute(sql, tuple(params)) as cursor:
            rows = list(await cursor.fetchall())
        self._observe("read", time.perf_counter() - started)
        return rows

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        started = time.perf_counter()
        async with self._write_lock:
            await self._lock_across_processes()
            try:
                # aiosqlite runs each call in its thread even when the awaiting task is
                # cancelled, in the order called: a BEGIN whose task was cancelled still
                # opens a transaction, and the rollback queued after it closes it.
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    yield self._writer
                except BaseException:
                    await asyncio.shield(self._writer.rollback())
                    raise
                await self._writer.commit()
                self._observe("write", time.perf_counter() - started)
            except asyncio.CancelledError:
                await asyncio.shield(self._writer.rollback())  # cancelled in BEGIN or COMMIT
                raise
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    async def _lock_across_processes(self) -> None:
        """Wait for the file lock in the locker thread; if cancelled, let it go once taken."""
        taken = asyncio.get_running_loop().run_in_executor(
            self._locker, fcntl.flock, self._lock_fd, fcntl.LOCK_EX
        )
        try:
            await asyncio.shield(taken)
        except asyncio.CancelledError:
            taken.add_done_callback(self._release_if_taken)
            raise

    def _release_if_taken(self, taken: asyncio.Future[None]) -> None:
        if not taken.cancelled() and taken.exception() is None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def owner_only(path: Path) -> None:
    """Make the database at `path` and its directory readable by the owner alone.

    It holds password hashes, token digests and webhook secrets: the directory is 0700, the file is
    created 0600 before SQLite opens it, and SQLite gives its `-wal` and `-shm` files
    the database file's mode. Wider modes left by an older version are narrowed.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for item, mode in (
        (path.parent, 0o700),
        (path, 0o600),
        (path.with_name(f"{path.name}-wal"), 0o600),
        (path.with_name(f"{path.name}-shm"), 0o600),
    ):
        with contextlib.suppress(FileNotFoundError):
            if item.stat().st_mode & 0o077:
                item.chmod(mode)


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
            for statement in statements(MIGRATIONS[version]):
                await connection.execute(statement)
            await connection.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            await connection.rollback()
            raise
        await connection.commit()


def statements(script: str) -> list[str]:
    """The SQL statements of `script`: split at `;`, but a trigger's body stays whole."""
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                found.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        found.append(pending.strip())
    return found
