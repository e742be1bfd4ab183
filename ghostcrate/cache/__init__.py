"""The cache: where mirrored bytes live, written atomically, filled once per miss."""

from ghostcrate.cache.disk import CachedFile, DiskStore, PendingFile
from ghostcrate.cache.expiring import ExpiringSet
from ghostcrate.cache.locks import KeyLocks
from ghostcrate.cache.metrics import CacheMetrics
from ghostcrate.cache.singleflight import SingleFlight
from ghostcrate.cache.tiered import Entry, TieredCache
from ghostcrate.cache.tiers import SharedTier

__all__ = [
    "CacheMetrics",
    "CachedFile",
    "DiskStore",
    "Entry",
    "ExpiringSet",
    "KeyLocks",
    "PendingFile",
    "SharedTier",
    "SingleFlight",
    "TieredCache",
]
