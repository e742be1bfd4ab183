"""Request budgets shared by every worker on the node: a mapped file of fixed slots.

The file (`data_dir/locks/rate-limits`) holds a header (a magic and a random
salt made when the file is) and `BUCKETS` buckets of `SLOTS` slots. A slot is
a key's 64-bit fingerprint (keyed BLAKE2b of route class, kind and key, with
the salt, so nobody can aim keys at one bucket, and no token is ever stored)
and the key's GCRA state: its theoretical arrival time, a wall-clock float.
Every worker maps the same file, so a request counted in one is seen by the
next request in any other at once; no server process is involved.

A check locks its bucket's 128 bytes with `fcntl` (POSIX record locks: other
processes wait, for the few microseconds a check takes), reads and writes the
slot and unlocks; there is no `await` inside, so tasks of one worker do not
interleave either.

Hash collisions: two keys with the same 64-bit fingerprint share a budget (so
both are limited sooner); with a salted 64-bit hash that takes billions of live
keys. A full bucket: a key with no slot takes the slot of a key whose budget
is full again (its arrival time has passed, so forgetting it changes nothing),
else of the key closest to a full budget; that key then starts afresh. So a
full table lets a little more through and never refuses wrongly.

The clock: a state more than a burst ahead of now (the wall clock went back,
or a reload made a rate tighter) is taken as exactly a burst ahead.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from pathlib import Path

from ghostcrate.config.rates import Rate

MAGIC = b"GCRLIM01"
_HEADER = 64
_SALT = slice(8, 24)
#: Buckets of slots; a key's bucket is its fingerprint modulo this.
BUCKETS = 4096
#: Slots per bucket: the keys one bucket holds before it forgets one.
SLOTS = 8
_SLOT = struct.Struct("<Qd")  # fingerprint (0: empty), theoretical arrival time
_BUCKET = SLOTS * _SLOT.size
SIZE = _HEADER + BUCKETS * _BUCKET


class LimitTable:
    """The mapped file; `take` spends one request of a key's budget."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.lockf(self._fd, fcntl.LOCK_EX, _HEADER, 0)
        try:
            if os.fstat(self._fd).st_size != SIZE or os.pread(self._fd, 8, 0) != MAGIC:
                os.ftruncate(self._fd, 0)  # a new file, or one of another layout: start afresh
                os.ftruncate(self._fd, SIZE)
                os.pwrite(self._fd, MAGIC + os.urandom(16), 0)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, _HEADER, 0)
        self._map = mmap.mmap(self._fd, SIZE)
        self._salt = bytes(self._map[_SALT])

    def fingerprint(self, key: str) -> int:
        digest = hashlib.blake2b(key.encode(), digest_size=8, key=self._salt).digest()
        return int.from_bytes(digest, "little") or 1

    def take(self, fingerprint: int, rate: Rate, now: float) -> float:
        """Spend one request of the key's budget: 0.0, or (refused, nothing spent) the
        seconds until one more is allowed."""
        interval = rate.interval
        tolerance = (rate.burst - 1) * interval
        start = _HEADER + (fingerprint % BUCKETS) * _BUCKET
        fcntl.lockf(self._fd, fcntl.LOCK_EX, _BUCKET, start)
        try:
            offset, arrival = self._find(start, fingerprint, now)
            arrival = min(max(arrival, now), now + tolerance + interval)
            if arrival - now > tolerance:
                return arrival - tolerance - now
            _SLOT.pack_into(self._map, offset, fingerprint, arrival + interval)
            return 0.0
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, _BUCKET, start)

    def give_back(self, fingerprint: int, rate: Rate) -> None:
        """Undo one `take` of the key (a later check of the same request refused it)."""
        start = _HEADER + (fingerprint % BUCKETS) * _BUCKET
        fcntl.lockf(self._fd, fcntl.LOCK_EX, _BUCKET, start)
        try:
            for offset in range(start, start + _BUCKET, _SLOT.size):
                found, arrival = _SLOT.unpack_from(self._map, offset)
                if found == fingerprint:
                    _SLOT.pack_into(self._map, offset, found, arrival - rate.interval)
                    return
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, _BUCKET, start)

    def _find(self, start: int, fingerprint: int, now: float) -> tuple[int, float]:
        """The key's slot and state; for a new key, the slot it takes and `now`."""
        free = None
        oldest, oldest_arrival = start, float("inf")
        for offset in range(start, start + _BUCKET, _SLOT.size):
            found, arrival = _SLOT.unpack_from(self._map, offset)
            if found == fingerprint:
                return offset, arrival
            if free is None and (found == 0 or arrival <= now):
                free = offset
            if arrival < oldest_arrival:
                oldest, oldest_arrival = offset, arrival
        return (oldest if free is None else free), now

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
