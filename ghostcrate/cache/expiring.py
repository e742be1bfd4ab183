"""A bounded set of keys that expire: the memory of "the upstream has no such crate"."""

from __future__ import annotations

import time
from collections import OrderedDict


class ExpiringSet:
    """Keys remembered for a time; the oldest are forgotten first beyond `max_entries`.

    Bounded so that a client asking for millions of made-up names cannot grow
    the process without limit.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        #: Until when (monotonic seconds) each key is remembered, and since when (epoch seconds).
        self._until: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_entries = max_entries

    def add(self, key: str, ttl: float) -> None:
        self._until[key] = (time.monotonic() + ttl, time.time())
        self._until.move_to_end(key)
        while len(self._until) > self._max_entries:
            self._until.popitem(last=False)

    def discard(self, key: str) -> None:
        self._until.pop(key, None)

    def since(self, key: str) -> float | None:
        """When a remembered key was added (epoch seconds); None if it is not remembered."""
        return self._until[key][1] if key in self else None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        until = self._until.get(key)
        if until is None:
            return False
        if until[0] <= time.monotonic():
            del self._until[key]
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)
