"""The local disk tier: files below one root, every write atomic, size bounded.

A write goes to a temporary file in the destination's directory, is flushed
to disk, and is renamed into place only when the caller commits it; a reader
never sees half a file, and a crash leaves only temporary files, which
`start()` deletes. Fills write while holding their key's lock, so a temporary
file whose lock is free was abandoned by a dead process and can go, even while
other workers are filling.

With `max_bytes`, the store keeps itself under its limit while serving: when a
commit takes its usage over the limit, the least recently used files are
deleted down to 90 % of it. With a `SharedCounter`, every worker process adds
its writes to one usage figure, so the limit holds for all of them together.
Recency is the file's access time, which every read sets explicitly; the
modification time is left alone, because callers use it (an index file's
mtime is when it was last confirmed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

from ghostcrate.cache.counter import SharedCounter
from ghostcrate.cache.locks import KeyLocks
from ghostcrate.cache.metrics import CacheMetrics

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
LOW_WATER = 0.9
_T = TypeVar("_T")


class PendingFile:
    """A temporary file that becomes `final` on `commit()`, or vanishes.

    It hashes what is written, so a caller can check the sha256 before committing.
    Writes gather in memory up to `BUFFER_BYTES`, and the file is created by the
    first write that reaches the disk: a crate smaller than that (most are) costs
    one trip to the executor in all, at `commit()` (create, write, flush, rename).
    Every trip waits its turn for the GIL under concurrent fills (benchmarks/RESULTS.md).
    """

    BUFFER_BYTES = 256 * 1024

    def __init__(
        self,
        temp: Path,
        final: Path,
        on_commit: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._fd = -1
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self._on_commit = on_commit
        self.temp = temp
        self.final = final
        self.size = 0
        self.committed = False

    async def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)
        self._buffer += chunk
        if len(self._buffer) >= self.BUFFER_BYTES:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._fd = await _in_executor(_append, self._fd, self.temp, data)

    def sha256(self) -> str:
        """Hex sha256 of everything written so far."""
        return self._digest.hexdigest()

    async def commit(self, mtime: float | None = None) -> None:
        """Flush to disk and rename into place (atomic on POSIX), optionally dated `mtime`."""
        fd, self._fd = self._fd, -1
        data = bytes(self._buffer)
        self._buffer.clear()
        await _in_executor(_finish, fd, self.temp, self.final, data, mtime)
        self.committed = True
        if self._on_commit is not None:
            await self._on_commit(self.size)

    async def discard(self) -> None:
        self._buffer.clear()
        if not self.committed and self._fd >= 0:
            fd, self._fd = self._fd, -1
            await _in_executor(_discard, fd, self.temp)


class CachedFile(NamedTuple):
    """A verified file in the cache, and its size (for the Content-Length)."""

    path: Path
    size: int


@dataclass(frozen=True)
class ScanResult:
    files: int
    bytes: int
    removed_leftovers: int


class DiskStore:
    """Files addressed by a relative key such as `index/se/rd/serde`."""

    name = "disk"

    def __init__(
        self,
        root: Path,
        max_bytes: int = 0,
        locks: KeyLocks | None = None,
        metrics: CacheMetrics | None = None,
        counter: SharedCounter | None = None,
    ) -> None:
        """`counter` shares the usage figure with the other processes using this root."""
        self.root = root
        self.max_bytes = max_bytes
        self.usage = 0
        #: Abandoned temporary files deleted by this store's scans so far.
        self.removed_leftovers = 0
        self._locks = locks
        self._metrics = metrics
        self._counter = counter
        self._evicting: asyncio.Task[None] | None = None
        #: Bytes committed here and not yet added to the shared usage figure.
        self._unshared = 0
        self._sharing: asyncio.Task[None] | None = None

    def path(self, key: str) -> Path:
        """The file for a key. Keys are built by the program from validated parts."""
        if key.startswith("/") or ".." in key.split("/") or TEMP_PREFIX in key:
            raise ValueError(f"unsafe cache key {key!r}")
        return self.root / key

    async def _run(self, func: Callable[..., _T], *args: object) -> _T:
        return await _in_executor(func, *args)

    async def read(self, key: str) -> tuple[bytes, float] | None:
        """The file's bytes and modification time, or None if absent."""
        path = self.path(key)
        if not _present(path):  # a miss: see `file`
            return None
        return await self._run(_read_and_mark_used, path)

    async def file(self, key: str) -> CachedFile | None:
        """A present file (marked as just used), or None.

        A miss is told by a `stat` here, without the thread round trip a hit takes:
        during a burst of cold fills that trip waited 11-13 ms for a thread and the
        GIL, twice per fill, while the `stat` takes microseconds.
        """
        path = self.path(key)
        if not _present(path):
            return None
        size = await self._run(_mark_used, path)
        return None if size is None else CachedFile(path, size)

    async def exists(self, key: str) -> bool:
        return await self._run(self.path(key).is_file)

    async def touch(self, key: str) -> float:
        """Set a file's mtime to now (for an index file: confirmed fresh now)."""
        now = time.time()
        with contextlib.suppress(FileNotFoundError):
            await self._run(os.utime, self.path(key), (now, now))
        return now

    async def delete(self, key: str) -> None:
        size = await self._run(_unlink, self.path(key))
        await self._account(-size)

    @asynccontextmanager
    async def pending(self, key: str) -> AsyncIterator[PendingFile]:
        """A temporary file for `key`; unless committed, it is removed on exit."""
        final = self.path(key)
        pending = PendingFile(_temp_name(final), final, self._committed)
        try:
            yield pending
        finally:
            await pending.discard()

    async def adopt(self, key: str, source: Path, mtime: float | None = None) -> None:
        """Move a verified file (on the same file system) into place, atomically."""
        size = await self._run(_adopt, source, self.path(key), mtime)
        await self._committed(size)

    async def write(
        self, key: str, data: bytes, mtime: float | None = None, *, durable: bool = True
    ) -> None:
        """Write a small file whole, in one trip to the executor.

        `durable=False` skips the flush to the disk before the rename: for data
        that is checked when read (a crash may leave such a file empty or short).
        """
        final = self.path(key)
        finish = functools.partial(_finish, durable=durable)
        await self._run(finish, -1, _temp_name(final), final, data, mtime)
        await self._committed(len(data))

    async def start(self) -> ScanResult:
        """Measure the store and delete the temporary files of dead processes."""
        result = await self._run(self.scan, True)
        if self._metrics is not None and self.max_bytes:
            self._metrics.max_bytes.labels(self.name).set(self.max_bytes)
        self.removed_leftovers += result.removed_leftovers
        await self._account(result.bytes, absolute=True)
        return result

    async def close(self) -> None:
        if self._sharing is not None:
            await self._sharing
        if self._evicting is not None:
            await self._evicting

    def scan(self, remove_leftovers: bool = False) -> ScanResult:
        """Count files and bytes; optionally delete abandoned temporary files (blocking)."""
        files = size = removed = 0
        for path, stat in self._walk():
            if path.name.startswith(TEMP_PREFIX):
                if remove_leftovers and self._abandoned(path):
                    path.unlink(missing_ok=True)
                    removed += 1
                continue
            files += 1
            size += stat.st_size
        return ScanResult(files, size, removed)

    async def files(self, prefix: str = "") -> list[tuple[str, int]]:
        """(key, size) of the files below `prefix`, temporary files left out."""
        return await self._run(self._files, prefix)

    def _files(self, prefix: str) -> list[tuple[str, int]]:
        return sorted(
            (path.relative_to(self.root).as_posix(), stat.st_size)
            for path, stat in self._walk(self.path(prefix) if prefix else self.root)
            if not path.name.startswith(TEMP_PREFIX)
        )

    def prune_empty_directories(self) -> int:
        """Remove empty directories below the root (blocking); how many went."""
        removed = 0
        for directory, _, _ in os.walk(self.root, topdown=False):
            if Path(directory) == self.root:
                continue
            with contextlib.suppress(OSError):  # not empty (or refilled meanwhile): keep it
                Path(directory).rmdir()
                removed += 1
        return removed

    def _abandoned(self, temp: Path) -> bool:
        """Whether no live process is writing this temporary file."""
        if self._locks is None:
            return True
        final_name = temp.name.removeprefix(TEMP_PREFIX).rpartition(".")[0]
        key = (temp.parent / final_name).relative_to(self.root).as_posix()
        return self._locks.is_free(key)

    async def evict(self) -> int:
        """Delete least recently used files until usage is under the low-water mark."""
        if not self.max_bytes:
            return 0
        target = int(self.max_bytes * LOW_WATER)
        if self._locks is None:
            evicted, remaining = await self._run(self._evict_blocking, target)
        else:
            async with self._locks.hold("disk-eviction"):
                evicted, remaining = await self._run(self._evict_blocking, target)
        await self._account(-evicted)
        if evicted:
            log.info("evicted from the disk tier", extra={"bytes": evicted, "usage": remaining})
        if self._metrics is not None:
            self._metrics.evicted.labels(self.name).inc(evicted)
        return evicted

    def _evict_blocking(self, target: int) -> tuple[int, int]:
        files = [
            (stat.st_atime_ns, stat.st_size, path)
            for path, stat in self._walk()
            if not path.name.startswith(TEMP_PREFIX)
        ]
        total = sum(size for _, size, _ in files)
        evicted = 0
        for _, size, path in sorted(files):
            if total <= target:
                break
            path.unlink(missing_ok=True)
            total -= size
            evicted += size
        return evicted, total

    def _walk(self, top: Path | None = None) -> Iterator[tuple[Path, os.stat_result]]:
        top = self.root if top is None else top
        if not top.is_dir():
            return
        for directory, _, names in os.walk(top):
            for name in names:
                path = Path(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    yield path, path.stat()

    async def _committed(self, size: int) -> None:
        if self._counter is None:
            await self._account(size)
            self._evict_if_over()
            return
        # The shared figure takes a locked update in a thread: done after the fill, and
        # once for all the commits that happened meanwhile.
        self._unshared += size
        if self._sharing is None:
            self._sharing = asyncio.ensure_future(self._share_usage())

    async def _share_usage(self) -> None:
        try:
            while self._unshared:
                delta, self._unshared = self._unshared, 0
                await self._account(delta)
            self._evict_if_over()
        except OSError:  # the next start measures the disk again
            log.exception("updating the disk tier's shared usage failed")
        finally:
            self._sharing = None

    def _evict_if_over(self) -> None:
        if self.max_bytes and self.usage > self.max_bytes and self._evicting is None:
            self._evicting = asyncio.ensure_future(self._evict_once())

    async def _evict_once(self) -> None:
        try:
            await self.evict()
        except OSError:
            log.exception("evicting from the disk tier failed")
        finally:
            self._evicting = None

    async def _account(self, delta: int, *, absolute: bool = False) -> None:
        if self._counter is not None:
            change = self._counter.set if absolute else self._counter.add
            self.usage = await self._run(change, delta)
        else:
            self.usage = max(0, (0 if absolute else self.usage) + delta)
        if self._metrics is not None:
            self._metrics.stored_bytes.labels(self.name).set(self.usage)


def _adopt(source: Path, final: Path, mtime: float | None) -> int:
    final.parent.mkdir(parents=True, exist_ok=True)
    if mtime is not None:
        os.utime(source, (time.time(), mtime))
    size = source.stat().st_size
    source.replace(final)
    return size


_temp_numbers = itertools.count()


def _temp_name(final: Path) -> Path:
    """A temporary file's name beside `final`, unique among processes (pid) and in this one."""
    return final.with_name(f"{TEMP_PREFIX}{final.name}.{os.getpid()}-{next(_temp_numbers)}")


async def _in_executor(func: Callable[..., _T], *args: object) -> _T:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)


def _create(temp: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(temp, flags, 0o644)
    except FileNotFoundError:  # a new directory: one mkdir per directory, not per file
        temp.parent.mkdir(parents=True, exist_ok=True)
        return os.open(temp, flags, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _commit(fd: int, temp: Path, final: Path, mtime: float | None, durable: bool) -> None:
    try:
        if mtime is not None:
            os.utime(fd, (time.time(), mtime))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    temp.replace(final)


def _append(fd: int, temp: Path, data: bytes) -> int:
    """Write `data` to the temporary file, creating it first if `fd` is -1; its descriptor."""
    if fd < 0:
        fd = _create(temp)
    try:
        _write_all(fd, data)
    except BaseException:
        _discard(fd, temp)
        raise
    return fd


def _finish(
    fd: int, temp: Path, final: Path, data: bytes, mtime: float | None, *, durable: bool = True
) -> None:
    """Write the last of the data (creating the file if `fd` is -1), flush unless not
    `durable`, and rename into place."""
    fd = _append(fd, temp, data)
    try:
        _commit(fd, temp, final, mtime, durable)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _discard(fd: int, temp: Path) -> None:
    if fd >= 0:
        os.close(fd)
    temp.unlink(missing_ok=True)


def _read_and_mark_used(path: Path) -> tuple[bytes, float] | None:
    try:
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            data = handle.read()
            # Through the descriptor: a file renamed over this one meanwhile keeps its times.
            os.utime(handle.fileno(), ns=(time.time_ns(), stat.st_mtime_ns))
    except FileNotFoundError:
        return None
    return data, stat.st_mtime


def _present(path: Path) -> bool:
    """A `stat`, on the event loop: metadata of a local directory, cached by the kernel."""
    return path.exists()


def _mark_used(path: Path) -> int | None:
    """Set the access time of a present file to now; its size, or None if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        stat = os.fstat(fd)
        os.utime(fd, ns=(time.time_ns(), stat.st_mtime_ns))
    finally:
        os.close(fd)
    return stat.st_size


def _unlink(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size
