"""Assemble the configured tiers into one `TieredCache` (for the server and the commands)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from ghostcrate.cache.counter import SharedCounter
from ghostcrate.cache.disk import DiskStore
from ghostcrate.cache.locks import KeyLocks
from ghostcrate.cache.metrics import CacheMetrics
from ghostcrate.cache.s3 import S3Tier
from ghostcrate.cache.tiered import TieredCache
from ghostcrate.config import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_cache(settings: Settings, metrics: CacheMetrics) -> AsyncIterator[TieredCache]:
    """The tiered cache below `settings.data_dir` (and S3 when `[s3]` is set).

    Opening it measures the disk tier and removes abandoned temporary files.
    """
    locks = KeyLocks(settings.data_dir / "locks")
    disk = DiskStore(
        settings.cache_dir,
        settings.cache.disk_max_bytes,
        locks,
        metrics,
        SharedCounter(settings.data_dir / "locks" / "disk-usage"),
    )
    scan = await disk.start()
    log.info(
        "disk tier ready",
        extra={
            "files": scan.files,
            "bytes": scan.bytes,
            "max_bytes": settings.cache.disk_max_bytes,
            "removed_leftovers": scan.removed_leftovers,
        },
    )
    async with AsyncExitStack() as stack:
        shared = None
        if settings.s3 is not None:
            shared = await stack.enter_async_context(S3Tier.open(settings.s3, metrics))
            log.info(
                "S3 tier configured",
                extra={"bucket": settings.s3.bucket, "prefix": settings.s3.key_prefix},
            )
        cache = TieredCache(disk, locks, metrics, shared)
        try:
            yield cache
        finally:
            await cache.close()
