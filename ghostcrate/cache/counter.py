"""An integer in a file, changed under flock: the disk tier's usage as every worker sees it."""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path

_FORMAT = "<q"
_Change = Callable[[int], int]


class SharedCounter:
    """Blocking operations; call them from an executor."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, delta: int) -> int:
        """Add `delta` (never going below zero) and return the new value."""
        return self._update(lambda value: max(0, value + delta))

    def set(self, value: int) -> int:
        return self._update(lambda _: max(0, value))

    def get(self) -> int:
        return self._update(lambda value: value)

    def _update(self, change: _Change) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, struct.calcsize(_FORMAT), 0)
            value = struct.unpack(_FORMAT, raw)[0] if len(raw) == struct.calcsize(_FORMAT) else 0
            new = change(value)
            if new != value:
                os.pwrite(fd, struct.pack(_FORMAT, new), 0)
            return new
        finally:
            os.close(fd)
