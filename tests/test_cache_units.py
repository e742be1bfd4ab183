"""The disk store's atomic writes and the single-flight coalescing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from ghostcrate.cache import DiskStore, ExpiringSet, SingleFlight
from ghostcrate.cache.disk import TEMP_PREFIX, PendingFile


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


async def test_a_write_is_invisible_until_committed(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    async with store.pending("crates/a/a-1.0.0.crate") as pending:
        await pending.write(b"half")
        assert not await store.exists("crates/a/a-1.0.0.crate")
        assert temporaries(tmp_path) == []  # small: still in memory
        await pending.commit()
    assert await store.read("crates/a/a-1.0.0.crate") is not None
    assert temporaries(tmp_path) == []


async def test_a_large_write_goes_to_a_temporary_file_as_it_comes(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    chunk = os.urandom(100_000)
    async with store.pending("crates/b/b-1.0.0.crate") as pending:
        for _ in range(8):
            await pending.write(chunk)
        (temporary,) = temporaries(tmp_path)  # not held in memory whole
        assert temporary.stat().st_size >= 8 * len(chunk) - PendingFile.BUFFER_BYTES
        assert not await store.exists("crates/b/b-1.0.0.crate")
        await pending.commit()
    found = await store.read("crates/b/b-1.0.0.crate")
    assert found is not None
    assert found[0] == chunk * 8
    assert temporaries(tmp_path) == []


async def test_an_abandoned_write_leaves_nothing(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)

    async def abandon() -> None:
        async with store.pending("index/se/rd/serde") as pending:
            await pending.write(b"partial")
            raise RuntimeError("upstream died")

    with pytest.raises(RuntimeError):
        await abandon()
    assert not await store.exists("index/se/rd/serde")
    assert temporaries(tmp_path) == []


async def test_a_failed_rewrite_keeps_the_old_file(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    await store.write("index/1/z", b"old")

    async def abandon() -> None:
        async with store.pending("index/1/z") as pending:
            await pending.write(b"new but broken")
            raise RuntimeError("checksum mismatch")

    with pytest.raises(RuntimeError):
        await abandon()
    found = await store.read("index/1/z")
    assert found is not None
    assert found[0] == b"old"


def test_leftovers_from_a_crash_are_removed(tmp_path: Path) -> None:
    (tmp_path / "crates" / "a").mkdir(parents=True)
    (tmp_path / "crates" / "a" / f"{TEMP_PREFIX}a-1.0.0.crate.123").write_bytes(b"x")
    (tmp_path / "crates" / "a" / "a-1.0.0.crate").write_bytes(b"kept")
    assert DiskStore(tmp_path).scan(remove_leftovers=True).removed_leftovers == 1
    assert temporaries(tmp_path) == []
    assert (tmp_path / "crates" / "a" / "a-1.0.0.crate").read_bytes() == b"kept"


@pytest.mark.parametrize("key", ["/etc/passwd", "index/../../x", f"index/{TEMP_PREFIX}x"])
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="unsafe cache key"):
        DiskStore(tmp_path).path(key)


async def test_concurrent_callers_share_one_fill() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def fill() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiters = [asyncio.create_task(flights.run("k", fill)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == [42] * 50
    assert calls == 1
    assert len(flights) == 0


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def broken() -> int:
        await asyncio.sleep(0.01)
        raise LookupError("upstream down")

    results = await asyncio.gather(
        *(flights.run("k", broken) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results)

    async def fixed() -> int:
        return 1

    assert await flights.run("k", fixed) == 1


async def test_a_cancelled_waiter_does_not_cancel_the_fill() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "done"

    first = asyncio.create_task(flights.run("k", slow))
    second = asyncio.create_task(flights.run("k", slow))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "done"


def test_expiring_set_forgets_after_ttl_and_stays_bounded() -> None:
    keys = ExpiringSet(max_entries=3)
    keys.add("gone", 0)
    assert "gone" not in keys
    for key in "abcd":
        keys.add(key, 60)
    assert len(keys) == 3
    assert "a" not in keys
    assert "d" in keys
    keys.discard("d")
    assert "d" not in keys
    assert keys.since("d") is None
    assert keys.since("gone") is None
    before = time.time()
    keys.add("e", 60)
    since = keys.since("e")
    assert since is not None
    assert before <= since <= time.time()
