"""The newest change's number, shared by every process on the node through a mapped file.

Each write to the registry (a publish, yank, owner change, token revocation...)
adds a row to the `changes` table and then raises this number to the row's
`seq`. A worker compares it with the last change it applied: reading it is one
load from shared memory, so the fast lane checks it on every hit of a private
crate and no worker serves what a change made stale, however long its hot set
would keep it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

_SIZE = 8


class Generation:
    """An 8-byte counter in a file below `data_dir`, mapped by every process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if os.fstat(self._fd).st_size < _SIZE:
            os.ftruncate(self._fd, _SIZE)
        self._map = mmap.mmap(self._fd, _SIZE)
        #: One aligned 8-byte word: its loads and stores are whole on every platform we run on.
        self.view = memoryview(self._map).cast("Q")

    def current(self) -> int:
        return int(self.view[0])

    def advance(self, seq: int) -> None:
        """Raise the number to `seq` (never lower it), under a lock shared by all processes."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self.view[0] = max(self.view[0], seq)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.view.release()
        self._map.close()
        os.close(self._fd)
