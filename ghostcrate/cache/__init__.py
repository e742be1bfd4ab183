"""The cache: where mirrored bytes live, written atomically, filled once per miss."""

from ghostcrate.cache.disk import DiskStore, PendingFile
from ghostcrate.cache.expiring import ExpiringSet
from ghostcrate.cache.singleflight import SingleFlight

__all__ = ["DiskStore", "ExpiringSet", "PendingFile", "SingleFlight"]
