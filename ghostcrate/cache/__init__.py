"""The cache: where mirrored bytes live, written atomically, filled once per miss."""

from ghostcrate.cache.disk import DiskStore, PendingFile
from ghostcrate.cache.expiring import ExpiringSet
from ghostcrate.cache.locks import KeyLocks
from ghostcrate.cache.memory import Entry, MemoryTier
from ghostcrate.cache.metrics import CacheMetrics
from ghostcrate.cache.singleflight import SingleFlight
from ghostcrate.cache.tiered import TieredCache
from ghostcrate.cache.tiers import SharedTier

__all__ = [
    "CacheMetrics",
    "DiskStore",
    "Entry",
    "ExpiringSet",
    "KeyLocks",
    "MemoryTier",
    "PendingFile",
    "SharedTier",
    "SingleFlight",
    "TieredCache",
]
