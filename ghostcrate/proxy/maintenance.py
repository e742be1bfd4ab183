"""Integrity and housekeeping of the mirror's cache: `ghostcrate verify` and `ghostcrate gc`.

Both work on the tiers directly and are safe while a server uses them:
deletions are single unlinks (or S3 deletes), eviction takes the disk tier's
lock, and temporary files are removed only when no live process holds them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ghostcrate.cache import TieredCache
from ghostcrate.cargo.names import CrateName, InvalidName, index_path
from ghostcrate.proxy.errors import UpstreamError
from ghostcrate.proxy.indexfile import IndexFile, check_index_body, parse_upstream_config
from ghostcrate.proxy.keys import (
    CONFIG_KEY,
    MIRROR_PREFIXES,
    index_key,
    is_index_key,
    parse_crate_key,
)

log = logging.getLogger(__name__)

CONCURRENCY = 4


@dataclass(frozen=True)
class Item:
    tier: str  # "disk" or the shared tier's name
    key: str

    def __str__(self) -> str:
        return f"{self.tier}:{self.key}"


@dataclass
class VerifyReport:
    checked: int = 0
    removed: list[str] = field(default_factory=list)
    unverifiable: list[str] = field(default_factory=list)


@dataclass
class GcReport:
    evicted_bytes: int = 0
    removed_temporaries: int = 0
    removed_orphans: list[str] = field(default_factory=list)
    removed_directories: int = 0


async def verification_items(cache: TieredCache) -> list[Item]:
    """Everything `verify` will check: the disk tier, and the mirror's keys in the shared tier."""
    items = [Item("disk", key) for key, _ in await cache.disk.files()]
    if cache.shared is not None:
        for prefix in MIRROR_PREFIXES:
            items += [Item(cache.shared.name, key) async for key, _ in cache.shared.iterate(prefix)]
    return items


async def verify(
    cache: TieredCache, items: list[Item], advance: Callable[[], None]
) -> VerifyReport:
    """Re-check every item: crates against their index entry's sha256, index files' syntax."""
    report = VerifyReport()
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(item: Item) -> None:
        async with limit:
            verdict = await _check(cache, item)
        report.checked += 1
        if verdict == "bad":
            report.removed.append(str(item))
            await _remove(cache, item)
        elif verdict == "unverifiable":
            report.unverifiable.append(str(item))
        advance()

    await asyncio.gather(*(one(item) for item in items))
    report.removed.sort()
    report.unverifiable.sort()
    return report


async def _check(cache: TieredCache, item: Item) -> str:
    if item.key.startswith("index/"):
        data = await _read_small(cache, item)
        return "ok" if data is None or _index_is_sound(item.key, data) else "bad"
    parsed = parse_crate_key(item.key)
    if parsed is None:
        return "bad"  # not a name the mirror writes: nothing can vouch for it
    name, version = parsed
    index = await cache.read(index_key(index_path(name)))
    entry = None
    if index is not None:
        try:
            entry = IndexFile.decode(index.data, index.mtime).entry(version)
        except (ValueError, KeyError):
            entry = None
    if entry is None or not isinstance(entry.get("cksum"), str):
        return "unverifiable"
    digest = await _sha256(cache, item)
    if digest is None:
        return "ok"  # gone meanwhile (evicted, or the tier is unavailable): nothing to judge
    return "ok" if digest == entry["cksum"] else "bad"


def _index_is_sound(key: str, data: bytes) -> bool:
    try:
        stored = IndexFile.decode(data, 0.0)
        if key == CONFIG_KEY:
            parse_upstream_config(stored.body)
        else:
            check_index_body(CrateName(key.rpartition("/")[2]), stored.body)
    except (ValueError, KeyError, InvalidName, UpstreamError):
        return False
    return True


async def _read_small(cache: TieredCache, item: Item) -> bytes | None:
    if item.tier == "disk":
        found = await cache.disk.read(item.key)
        return found[0] if found is not None else None
    assert cache.shared is not None
    return await cache.shared.get(item.key)


async def _sha256(cache: TieredCache, item: Item) -> str | None:
    if item.tier == "disk":
        return await asyncio.get_running_loop().run_in_executor(
            None, _file_sha256, cache.disk.path(item.key)
        )
    assert cache.shared is not None
    # Into a temporary file that is never committed: only the hash is wanted.
    async with cache.disk.pending(item.key) as scratch:
        if not await cache.shared.download(item.key, scratch):
            return None
        return scratch.sha256()


def _file_sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return None


async def _remove(cache: TieredCache, item: Item) -> None:
    log.warning("removing a cached file that failed verification", extra={"item": str(item)})
    if item.tier == "disk":
        await cache.disk.delete(item.key)
    elif cache.shared is not None:
        await cache.shared.delete(item.key)


async def gc(cache: TieredCache) -> GcReport:
    """Evict down to the disk limit, remove abandoned temporary files and orphans."""
    report = GcReport()
    await cache.disk.start()  # sweeps again: opening the cache already swept once
    report.removed_temporaries = cache.disk.removed_leftovers
    for key, _ in await cache.disk.files():
        if not (is_index_key(key) or parse_crate_key(key) is not None):
            report.removed_orphans.append(key)
            await cache.disk.delete(key)
    report.evicted_bytes = await cache.disk.evict()
    loop = asyncio.get_running_loop()
    report.removed_directories = await loop.run_in_executor(
        None, cache.disk.prune_empty_directories
    )
    return report
