"""The memory tier: the hottest small objects (index files), least recently used evicted first."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    data: bytes
    #: Modification time (epoch seconds): when it was written, or last confirmed fresh.
    mtime: float


class MemoryTier:
    """An LRU of entries bounded by the total size of their data."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        self.delete(key)
        if len(entry.data) > self.max_bytes // 8:
            return  # one huge file must not flush the whole hot set
        self._entries[key] = entry
        self.size += len(entry.data)
        while self.size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size -= len(evicted.data)

    def touch(self, key: str, mtime: float) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = Entry(entry.data, mtime)

    def delete(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= len(entry.data)

    def __len__(self) -> int:
        return len(self._entries)
