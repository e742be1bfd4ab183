"""The limits one HTTP/2 connection is held to, with the server whose default each follows.

A client that goes over a rate limit gets `GOAWAY` with `ENHANCE_YOUR_CALM`
and its connection is closed; `docs/architecture.md` lists every limit.
"""

from __future__ import annotations

from collections.abc import Callable

#: Streams a client may have open at once: SETTINGS_MAX_CONCURRENT_STREAMS (curl's own cap;
#: nginx's http2_max_concurrent_streams is 128). One more is refused on its own.
MAX_CONCURRENT_STREAMS = 100
#: New streams: a burst, then a rate, per connection. cargo opens one per file; a warm
#: `cargo fetch` of a large lock file opens a few thousand within seconds.
NEW_STREAMS_BURST = 2000
NEW_STREAMS_PER_SECOND = 1000.0
#: Streams the client resets, or that are refused for going over the concurrent limit
#: (rapid reset, CVE-2023-44487): Netty's default of 200 per 30 seconds.
RESETS_BURST = 200
RESETS_PER_SECOND = 200 / 30
#: PING, SETTINGS, PRIORITY and empty DATA frames: work for the server, nothing for a
#: request. Any client sends a few; a flood is refused.
CONTROL_BURST = 1000
CONTROL_PER_SECOND = 100.0
#: Events (about one per frame) handled before the event loop gets a turn for other
#: connections; received bytes are handed to h2 in slices of `READ_SLICE`.
EVENTS_PER_TURN = 256
READ_SLICE = 16 * 1024
#: Bytes of answers queued in h2 before they are written, so back-pressure is seen early.
FLUSH_BYTES = 64 * 1024
#: A stream that can send nothing (zero flow-control window) for this long is reset, and a
#: connection whose socket takes nothing for this long is closed: nginx's send_timeout.
SEND_TIMEOUT = 60.0
#: After a GOAWAY for abuse, the connection is aborted if its last bytes are not taken.
CLOSE_GRACE = 5.0


class Budget:
    """A token bucket: `burst` at once, refilled at `per_second`."""

    __slots__ = ("_burst", "_clock", "_last", "_per_second", "_tokens")

    def __init__(self, burst: float, per_second: float, clock: Callable[[], float]) -> None:
        self._burst = burst
        self._per_second = per_second
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def take(self, count: int = 1) -> bool:
        """Spend `count` tokens; False (and nothing spent) when there are not enough."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_second)
        self._last = now
        if self._tokens < count:
            return False
        self._tokens -= count
        return True


class ConnectionBudgets:
    """The rate limits of one connection."""

    __slots__ = ("control", "resets", "streams")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.streams = Budget(NEW_STREAMS_BURST, NEW_STREAMS_PER_SECOND, clock)
        self.resets = Budget(RESETS_BURST, RESETS_PER_SECOND, clock)
        self.control = Budget(CONTROL_BURST, CONTROL_PER_SECOND, clock)
