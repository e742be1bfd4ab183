"""Failed sign-ins, counted in the registry database so that every worker (and later
every node) sees the same counts: per account and per address, over a sliding window.

Each sign-in is counted as a failure before its password is checked, in the
same transaction that checks the counts, so parallel guesses cannot slip past
the limit; a sign-in that succeeds takes its count back. An unknown account
name is counted like a known one, so a refusal never tells whether it exists.
"""

from __future__ import annotations

import math
import time

from ghostcrate.private.db import Database
from ghostcrate.private.errors import TooManyRequests

#: The same words for every name and moment, so that the body tells nothing.
THROTTLED = "too many failed sign-ins: try again later (the Retry-After header says when)"


class LoginThrottle:
    def __init__(
        self, db: Database, *, account_limit: int, address_limit: int, window: float
    ) -> None:
        self._db = db
        self._limits = {"account": account_limit, "address": address_limit}
        self._window = window

    async def attempt(self, name: str, remote: str | None) -> list[int]:
        """Count a sign-in as `name` from `remote` as failed, unless too many failed lately
        (then `TooManyRequests`, with the seconds until one may be tried again); the ids of
        the counts, for `succeeded`."""
        now = time.time()
        keys = _keys(name, remote)
        async with self._db.write() as connection:
            await connection.execute(
                "DELETE FROM login_failures WHERE at <= ?", (now - self._window,)
            )
            waits = []
            for kind, key in keys:
                async with connection.execute(
                    "SELECT at FROM login_failures WHERE key = ? ORDER BY at DESC LIMIT 1 OFFSET ?",
                    (key, self._limits[kind] - 1),
                ) as cursor:
                    row = await cursor.fetchone()
                if row is not None:
                    waits.append(max(1, math.ceil(row[0] + self._window - now)))
            if waits:
                raise TooManyRequests(THROTTLED, retry_after=max(waits))
            ids = []
            for _, key in keys:
                cursor = await connection.execute(
                    "INSERT INTO login_failures (key, at) VALUES (?, ?)", (key, now)
                )
                assert cursor.lastrowid is not None
                ids.append(cursor.lastrowid)
        return ids

    async def succeeded(self, name: str, ids: list[int]) -> None:
        """A sign-in succeeded: its own count is taken back, and the account's failures are
        forgiven (the address's are not)."""
        async with self._db.write() as connection:
            await connection.execute(
                "DELETE FROM login_failures WHERE key = ?", (_account_key(name),)
            )
            await connection.executemany(
                "DELETE FROM login_failures WHERE id = ?", [(i,) for i in ids]
            )


def _account_key(name: str) -> str:
    return f"account:{name.lower()}"


def _keys(name: str, remote: str | None) -> list[tuple[str, str]]:
    keys = [("account", _account_key(name))]
    if remote is not None:
        keys.append(("address", f"address:{remote}"))
    return keys
