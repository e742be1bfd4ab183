"""Coalesce concurrent work on one key into one call (one upstream fetch per miss)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Runs `fill` once per key at a time; concurrent callers share its result.

    The fill runs in its own task, so a caller that goes away (a client that
    disconnects) does not cancel the fill the others are waiting for.
    """

    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: K, fill: Callable[[], Awaitable[V]]) -> V:
        return await asyncio.shield(self.start(key, fill))

    def start(self, key: K, fill: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        """The running fill of `key`, or a new one (a task of its own: shield it to wait)."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(fill())
            self._flights[key] = task
            task.add_done_callback(lambda _: self._flights.pop(key, None))
        return task

    async def close(self) -> None:
        """Cancel the fills still running (at shutdown)."""
        tasks = list(self._flights.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
