"""A lock across worker processes for one key: one fill per miss on the whole machine.

`flock(2)` on a lock file in the cache directory; the kernel drops it when the
holder exits, even by `kill -9`, so a crash never leaves a key locked. Keys are
striped over a fixed set of lock files, so their number stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

STRIPES_HEX_DIGITS = 4  # 65,536 lock files at most


class KeyLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:STRIPES_HEX_DIGITS]
        return self.directory / digest[:2] / f"{digest[2:]}.lock"

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait (without blocking the loop) until this process holds the key's lock."""
        fd = await asyncio.get_running_loop().run_in_executor(None, _open, self.path(key))
        try:
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.1)
            yield
        finally:
            os.close(fd)  # releases the lock


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
