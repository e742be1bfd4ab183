"""A lock across worker processes for one key: one fill per miss on the whole machine.

Keys are striped over the bytes of one lock file, and a stripe is locked with an
open-file-description byte-range lock (Linux's `F_OFD_SETLK`): the kernel drops it
when the holder exits, even by `kill -9`, so a crash never leaves a key locked.
One file opened once per process means taking a lock is a single non-blocking
system call: no file to create per key (creating files was the largest cost of
a cold fill on a busy ext4) and no trip to the executor.

Within one process a stripe is taken once and counted: holding it again (a
nested hold, or another key of the same stripe) does not wait, so nesting can
never deadlock. Exclusion inside a process is the single-flight's job; these
locks exclude the other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

STRIPES_HEX_DIGITS = 4  # 65,536 stripes
LOCK_FILE = "stripes.lock"
#: struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks).
_FLOCK = "@hhqqi4x"


class KeyLocks:
    def __init__(self, directory: Path) -> None:
        if not hasattr(fcntl, "F_OFD_SETLK"):
            raise RuntimeError("GhostCrate needs Linux's open file description locks (F_OFD_SETLK)")
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd = -1
        self._opening = asyncio.Lock()
        self._held: dict[int, int] = {}  # stripe -> holders in this process

    @staticmethod
    def stripe(key: str) -> int:
        return int(hashlib.sha256(key.encode()).hexdigest()[:STRIPES_HEX_DIGITS], 16)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait (without blocking the loop) until this process holds the key's lock."""
        stripe = self.stripe(key)
        if stripe not in self._held:
            await _lock(await self._file(), stripe)
            self._held.setdefault(stripe, 0)
        self._held[stripe] += 1
        try:
            yield
        finally:
            self._held[stripe] -= 1
            if self._held[stripe] == 0:
                del self._held[stripe]
                _set(self._fd, fcntl.F_UNLCK, stripe)

    async def _file(self) -> int:
        async with self._opening:  # once per process, whoever asks first
            if self._fd < 0:
                loop = asyncio.get_running_loop()
                self._fd = await loop.run_in_executor(None, _open, self.path)
        return self._fd

    def is_free(self, key: str) -> bool:
        """Whether no process holds the key's stripe now (blocking; for sweeps)."""
        stripe = self.stripe(key)
        if stripe in self._held:
            return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:  # another open file description: it conflicts with every holder, this one's too
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, stripe))
        finally:
            os.close(fd)
        return bool(struct.unpack(_FLOCK, answer)[0] == fcntl.F_UNLCK)

    def close(self) -> None:
        """Close the lock file (releasing what this process holds)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._held.clear()


def _flock(kind: int, stripe: int) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, stripe, 1, 0)


def _set(fd: int, kind: int, stripe: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(kind, stripe))


async def _lock(fd: int, stripe: int) -> None:
    delay = 0.005
    while True:
        try:
            _set(fd, fcntl.F_WRLCK, stripe)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        else:
            return


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
