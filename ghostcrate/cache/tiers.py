"""The contract between the tiered cache and a shared tier (S3 today).

A shared tier is best effort: when its backend is down, slow or failing, its
methods log, count, and answer "absent" (None / False) instead of raising, so
requests fall through to the other tiers or the upstream within the normal
timeouts. A failed tier is not asked again for `retry_after` seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from ghostcrate.cache.disk import PendingFile


class SharedTier(Protocol):
    #: A short name for logs and metrics labels, e.g. "s3".
    name: str

    async def get(self, key: str) -> bytes | None:
        """A small object's bytes (index files), or None if absent or unavailable."""

    async def download(self, key: str, pending: PendingFile) -> bool:
        """Stream an object into `pending` (not committed); False if absent or unavailable.

        On False, `pending` may hold part of the object; the caller discards it.
        """

    async def put_bytes(self, key: str, data: bytes) -> bool:
        """Store a small object; False if the tier is unavailable. Never half-visible."""

    async def put_file(self, key: str, path: Path) -> bool:
        """Store a file, in parts above the multipart threshold; a failed upload is aborted."""

    async def probe(self) -> str | None:
        """Ask the tier now, past any back-off: None if it answers, else what failed."""

    async def contains(self, key: str) -> bool:
        """Whether the object exists (False if the tier is unavailable)."""

    async def delete(self, key: str) -> bool:
        """Remove an object; True if the tier answered (whether or not it existed)."""

    def iterate(self, prefix: str = "") -> AsyncIterator[tuple[str, int]]:
        """(key, size) of every object below `prefix`; nothing if unavailable."""

    async def close(self) -> None:
        """Release connections."""
