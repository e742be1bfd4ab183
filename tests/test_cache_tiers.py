"""The bounded disk tier and the cross-process key locks."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from ghostcrate.cache import CacheMetrics, DiskStore, KeyLocks
from ghostcrate.cache.counter import SharedCounter
from ghostcrate.cache.disk import TEMP_PREFIX


async def test_disk_tier_evicts_least_recently_used_down_to_low_water(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = CacheMetrics.create(registry)
    disk = DiskStore(tmp_path, max_bytes=10_000, metrics=metrics)
    await disk.start()
    for number in range(8):
        await disk.write(f"crates/c{number}", b"x" * 1000)
        await asyncio.sleep(0.01)  # distinct access times
    assert await disk.file("crates/c0") is not None  # used: now the most recent
    for number in range(8, 12):
        await disk.write(f"crates/c{number}", b"x" * 1000)
    await disk.close()  # waits for the eviction the commits started
    assert disk.scan().bytes <= 10_000
    assert disk.usage == disk.scan().bytes
    assert await disk.exists("crates/c0")
    assert not await disk.exists("crates/c1")
    evicted = registry.get_sample_value("ghostcrate_cache_evicted_bytes_total", {"tier": "disk"})
    assert evicted == 12_000 - disk.usage


async def test_reads_keep_the_modification_time(tmp_path: Path) -> None:
    disk = DiskStore(tmp_path)
    await disk.write("index/1/z", b"body", mtime=1000.0)
    found = await disk.read("index/1/z")
    assert found is not None
    assert found == (b"body", 1000.0)
    stat = (tmp_path / "index" / "1" / "z").stat()
    assert stat.st_mtime == 1000.0
    assert stat.st_atime > time.time() - 60


async def test_start_measures_usage_and_removes_leftovers(tmp_path: Path) -> None:
    (tmp_path / "crates").mkdir()
    (tmp_path / "crates" / "a.crate").write_bytes(b"x" * 500)
    (tmp_path / "crates" / ".tmp-a.crate.123").write_bytes(b"partial")
    disk = DiskStore(tmp_path)
    result = await disk.start()
    assert (result.files, result.bytes, result.removed_leftovers) == (1, 500, 1)
    assert disk.usage == 500


HOLD_IN_OTHER_PROCESS = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(sys.argv[2]))
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
"""


async def hold_elsewhere(locks: KeyLocks, key: str, seconds: float) -> asyncio.subprocess.Process:
    """Another process that holds `key`'s stripe of `locks` for `seconds`."""
    locks.path.parent.mkdir(parents=True, exist_ok=True)
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_IN_OTHER_PROCESS,
        str(locks.path),
        str(locks.stripe(key)),
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert (await holder.stdout.readline()).strip() == b"locked"
    return holder


async def test_a_key_lock_excludes_other_processes(tmp_path: Path) -> None:
    locks = KeyLocks(tmp_path)
    holder = await hold_elsewhere(locks, "crates/serde/serde-1.0.0.crate", 0.5)
    started = time.monotonic()
    async with locks.hold("crates/serde/serde-1.0.0.crate"):
        waited = time.monotonic() - started
    await holder.wait()
    assert waited >= 0.3


async def test_a_released_lock_kept_open_is_free_for_others_and_excludes_them_again(
    tmp_path: Path,
) -> None:
    locks = KeyLocks(tmp_path)
    key = "index/se/rd/serde"
    async with locks.hold(key):
        assert not locks.is_free(key)
    assert locks.is_free(key)  # released, though the lock file stays open here
    holder = await hold_elsewhere(locks, key, 0.5)  # another process can take it
    started = time.monotonic()
    async with locks.hold(key):  # and taking it again (on the kept descriptor) waits for it
        waited = time.monotonic() - started
    await holder.wait()
    assert waited >= 0.3
    locks.close()


async def test_a_killed_holder_releases_its_lock(tmp_path: Path) -> None:
    locks = KeyLocks(tmp_path)
    holder = await hold_elsewhere(locks, "k", 60)
    holder.kill()
    await holder.wait()
    started = time.monotonic()
    async with locks.hold("k"):
        assert time.monotonic() - started < 1


async def test_start_keeps_the_temporary_files_of_live_fills_in_other_processes(
    tmp_path: Path,
) -> None:
    locks = KeyLocks(tmp_path / "locks")
    crates = tmp_path / "cache" / "crates" / "a"
    crates.mkdir(parents=True)
    live = crates / f"{TEMP_PREFIX}a-1.0.0.crate.1111"
    dead = crates / f"{TEMP_PREFIX}a-2.0.0.crate.2222"
    live.write_bytes(b"being written")
    dead.write_bytes(b"abandoned")
    assert locks.stripe("crates/a/a-1.0.0.crate") != locks.stripe("crates/a/a-2.0.0.crate")
    holder = await hold_elsewhere(locks, "crates/a/a-1.0.0.crate", 60)
    try:
        result = await DiskStore(tmp_path / "cache", locks=locks).start()
    finally:
        holder.kill()
        await holder.wait()
    assert result.removed_leftovers == 1
    assert live.exists()
    assert not dead.exists()


def test_the_shared_counter_is_one_figure_for_every_instance(tmp_path: Path) -> None:
    first = SharedCounter(tmp_path / "locks" / "usage")
    second = SharedCounter(tmp_path / "locks" / "usage")
    assert first.get() == 0
    assert first.add(1000) == 1000
    assert second.add(500) == 1500
    assert first.add(-5000) == 0  # never below zero
    assert second.set(42) == 42
    assert first.get() == 42
