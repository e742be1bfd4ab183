"""A lock across worker processes for one key: one fill per miss on the whole machine.

`flock(2)` on a lock file in the cache directory; the kernel drops it when the
holder exits, even by `kill -9`, so a crash never leaves a key locked. Keys are
striped over a fixed set of lock files, so their number stays bounded.

Within one process a stripe is taken once and counted: holding it again (a
nested hold, or another key of the same stripe) does not wait, so nesting can
never deadlock. Exclusion inside a process is the single-flight's job; these
locks exclude the other processes.

Lock files are never deleted, so the descriptors of recently released stripes
stay open (unlocked) for the next hold: taking a lock is then one non-blocking
`flock` instead of a trip to the executor to open the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

STRIPES_HEX_DIGITS = 4  # 65,536 lock files at most
#: Descriptors of released stripes kept open for their next hold.
KEEP_OPEN = 1024


class KeyLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._held: dict[Path, list[int]] = {}  # stripe -> [descriptor, holders]
        self._released: OrderedDict[Path, int] = OrderedDict()  # open, unlocked

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:STRIPES_HEX_DIGITS]
        return self.directory / digest[:2] / f"{digest[2:]}.lock"

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait (without blocking the loop) until this process holds the key's lock."""
        path = self.path(key)
        held = self._held.get(path)
        if held is None:
            fd = self._released.pop(path, None)
            if fd is None:
                fd = await asyncio.get_running_loop().run_in_executor(None, _open, path)
            try:
                await _flock(fd)
            except BaseException:
                os.close(fd)
                raise
            held = self._held.setdefault(path, [fd, 0])
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
            if held[1] == 0:
                del self._held[path]
                self._release(path, held[0])

    def _release(self, path: Path, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            os.close(fd)  # closing releases it too
            return
        self._released[path] = fd
        if len(self._released) > KEEP_OPEN:
            os.close(self._released.popitem(last=False)[1])

    def close(self) -> None:
        """Close the descriptors kept open (locks still held stay held)."""
        while self._released:
            os.close(self._released.popitem()[1])

    def is_free(self, key: str) -> bool:
        """Whether no process holds the key's stripe now (blocking; for sweeps)."""
        path = self.path(key)
        if path in self._held:
            return False
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True


async def _flock(fd: int) -> None:
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        else:
            return


def _open(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o644)
