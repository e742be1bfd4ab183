"""Failed sign-ins, counted in the registry database so that every worker (and later
every node) sees the same counts: per account and per address, over a sliding window.

An unknown account name is counted like a known one, so a refusal never tells
whether an account exists.
"""

from __future__ import annotations

import math
import time

from ghostcrate.private.db import Database


class LoginThrottle:
    def __init__(
        self, db: Database, *, account_limit: int, address_limit: int, window: float
    ) -> None:
        self._db = db
        self._limits = {"account": account_limit, "address": address_limit}
        self._window = window

    async def retry_after(self, name: str, remote: str | None) -> int | None:
        """Seconds until a sign-in as `name` from `remote` may be tried again, if it may not
        be tried now."""
        now = time.time()
        waits = []
        for kind, key in _keys(name, remote):
            row = await self._db.one(
                "SELECT at FROM login_failures WHERE key = ? AND at > ?"
                " ORDER BY at DESC LIMIT 1 OFFSET ?",
                (key, now - self._window, self._limits[kind] - 1),
            )
            if row is not None:
                waits.append(max(1, math.ceil(row["at"] + self._window - now)))
        return max(waits) if waits else None

    async def failed(self, name: str, remote: str | None) -> None:
        """Count a failed sign-in (and forget those older than the window)."""
        now = time.time()
        async with self._db.write() as connection:
            await connection.execute(
                "DELETE FROM login_failures WHERE at <= ?", (now - self._window,)
            )
            await connection.executemany(
                "INSERT INTO login_failures (key, at) VALUES (?, ?)",
                [(key, now) for _, key in _keys(name, remote)],
            )

    async def succeeded(self, name: str) -> None:
        """A sign-in succeeded: the account's failures are forgiven (the address's are not)."""
        async with self._db.write() as connection:
            await connection.execute(
                "DELETE FROM login_failures WHERE key = ?", (_account_key(name),)
            )


def _account_key(name: str) -> str:
    return f"account:{name.lower()}"


def _keys(name: str, remote: str | None) -> list[tuple[str, str]]:
    keys = [("account", _account_key(name))]
    if remote is not None:
        keys.append(("address", f"address:{remote}"))
    return keys
