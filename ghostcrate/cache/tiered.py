"""The cache the mirror talks to: disk → shared tier, behind one small interface.

Above it, each serving process holds its hottest replies in memory (the
fast lane's hot set, `ghostcrate.appliance.hotset`). Reads go down the tiers
and promote a hit to the disk. Writes go to disk (atomically), and to the
shared tier in the background, after the data was verified. A shared tier is best effort: its
failures only cost a miss. Concurrent fills of one key, in this process or
in other workers on the same disk, are serialised by `hold(key)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghostcrate.cache.disk import CachedFile, DiskStore, PendingFile
from ghostcrate.cache.locks import KeyLocks
from ghostcrate.cache.metrics import CacheMetrics
from ghostcrate.cache.tiers import SharedTier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    data: bytes
    #: Modification time (epoch seconds): when it was written, or last confirmed fresh.
    mtime: float


#: How long shutdown waits for uploads to the shared tier that are still running.
UPLOAD_GRACE_SECONDS = 10.0
#: How long a listing of the shared tier is reused (an offline index view lists its
#: crate's directory each time it is renewed); this node's own writes end it at once,
#: another node's show after at most this long.
LISTING_SECONDS = 30.0
#: Listings kept at most (the oldest are forgotten first).
MAX_LISTINGS = 4096


class TieredCache:
    def __init__(
        self,
        disk: DiskStore,
        locks: KeyLocks,
        metrics: CacheMetrics,
        shared: SharedTier | None = None,
    ) -> None:
        self.disk = disk
        self.shared = shared
        self._locks = locks
        self._metrics = metrics
        self._uploads: set[asyncio.Task[Any]] = set()
        #: Directory key -> until when (monotonic seconds) its listing holds, and the names.
        self._listings: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()

    def hold(self, key: str) -> AbstractAsyncContextManager[None]:
        """Exclusive right to fill `key` among all processes sharing the disk."""
        return self._locks.hold(key)

    async def read(self, key: str) -> Entry | None:
        """A small object (index file) with its mtime, from the highest tier that has it."""
        found = await self.disk.read(key)
        if found is not None:
            self._hit("disk")
            return Entry(*found)
        self._miss("disk")
        if self.shared is None:
            return None
        data = await self.shared.get(key)
        if data is None:
            self._miss(self.shared.name)
            return None
        self._hit(self.shared.name)
        # From another node: its freshness is unknown, so date it to be revalidated.
        entry = Entry(data, 0.0)
        async with self.hold(key):
            await self.disk.write(key, data, mtime=entry.mtime)
        return entry

    async def write(self, key: str, data: bytes, *, durable: bool = True) -> Entry:
        """Store a small verified object in every tier (the shared one in the background).

        The caller holds the key (`hold`), as every writer of the disk tier does.
        `durable=False`: not flushed to the disk first (`DiskStore.write`), for data
        its reader checks.
        """
        entry = Entry(data, time.time())
        await self.disk.write(key, data, mtime=entry.mtime, durable=durable)
        self._changed(key)
        if self.shared is not None:
            self._background(self.shared.put_bytes(key, data))
        return entry

    async def touch(self, key: str) -> float:
        """Record that a small object was confirmed fresh now."""
        return await self.disk.touch(key)

    async def delete(self, key: str) -> None:
        await self.disk.delete(key)
        self._changed(key)
        if self.shared is not None:
            await self.shared.delete(key)

    async def file(self, key: str, sha256: str | None = None) -> CachedFile | None:
        """A local file for `key`: on disk, or fetched from the shared tier.

        A file from the shared tier is accepted only if its sha256 equals `sha256`
        (without one the shared tier is not asked): what another node wrote is
        re-verified before it is served.
        """
        found = await self.disk.file(key)
        if found is not None:
            self._hit("disk")
            return found
        self._miss("disk")
        if self.shared is None or sha256 is None:
            return None
        async with self.disk.pending(key) as pending:
            if not await self.shared.download(key, pending):
                self._miss(self.shared.name)
                return None
            if pending.sha256() != sha256:
                self._metrics.tier_errors.labels(self.shared.name, "verify").inc()
                log.error(
                    "discarding a shared-tier object whose sha256 is wrong",
                    extra={"key": key, "expected": sha256, "got": pending.sha256()},
                )
                await self.shared.delete(key)
                self._changed(key)
                return None
            await pending.commit()
        self._hit(self.shared.name)
        return CachedFile(pending.final, pending.size)

    async def names_below(self, prefix: str) -> set[str]:
        """Names of the objects directly below `prefix` (a directory key), in any tier."""
        names = {key.rpartition("/")[2] for key, _ in await self.disk.files(prefix)}
        if self.shared is not None:
            names |= await self._shared_names(self.shared, prefix)
        return names

    async def _shared_names(self, shared: SharedTier, prefix: str) -> frozenset[str]:
        now = time.monotonic()
        kept = self._listings.get(prefix)
        if kept is not None and kept[0] > now:
            return kept[1]
        names = frozenset([key.rpartition("/")[2] async for key, _ in shared.iterate(prefix)])
        self._listings[prefix] = (now + LISTING_SECONDS, names)
        self._listings.move_to_end(prefix)
        while len(self._listings) > MAX_LISTINGS:
            self._listings.popitem(last=False)
        return names

    def _changed(self, key: str) -> None:
        """This node wrote or deleted `key`: its directory's listing no longer holds."""
        self._listings.pop(key.rpartition("/")[0] + "/", None)

    def pending(self, key: str) -> AbstractAsyncContextManager[PendingFile]:
        """A temporary disk file for `key`, to write while holding the key (`hold`)."""
        return self.disk.pending(key)

    async def commit(self, key: str, pending: PendingFile) -> Path:
        """Make a verified pending file visible, and share it in the background."""
        await pending.commit()
        self._changed(key)
        if self.shared is not None:
            self._background(self._share_file(self.shared, key, pending.final))
        return pending.final

    async def close(self) -> None:
        if self._uploads:
            _, still_running = await asyncio.wait(self._uploads, timeout=UPLOAD_GRACE_SECONDS)
            for task in still_running:
                task.cancel()
            if still_running:  # let cancelled multipart uploads send their abort
                await asyncio.wait(still_running)
        await self.disk.close()
        self._locks.close()

    async def _share_file(self, shared: SharedTier, key: str, path: Path) -> None:
        if await asyncio.get_running_loop().run_in_executor(None, path.is_file):
            await shared.put_file(key, path)  # may have been evicted meanwhile: then skip

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    def _hit(self, tier: str) -> None:
        self._metrics.hits.labels(tier).inc()

    def _miss(self, tier: str) -> None:
        self._metrics.misses.labels(tier).inc()
