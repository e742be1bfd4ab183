"""The `changes` feed: one row per write that another worker must not miss."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

#: A crate's index file or downloads changed (publish, yank, unyank).
CRATE = "crate"
#: A crate's owners changed.
OWNERS = "owners"
#: A token or user changed (revoked, disabled): forget every remembered token.
ACCOUNTS = "accounts"


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    kind: str
    name: str | None
    version: str | None


async def record(
    connection: aiosqlite.Connection,
    kind: str,
    name: str | None = None,
    version: str | None = None,
) -> int:
    """Add a change inside the caller's write transaction; its `seq`."""
    cursor = await connection.execute(
        "INSERT INTO changes (kind, name, version, at) VALUES (?, ?, ?, ?)",
        (kind, name, version, time.time()),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid
