"""A circuit breaker for the upstream: fail fast while it is unreachable.

After `failures` consecutive unreachability failures (refused or dropped
connections, timeouts, 5xx answers, no answer within `stale_after`) the
breaker opens: requests fail at once for `cooldown` seconds, so stale index
files are served and misses fail without each waiting for a full timeout.
Then one request probes; its success closes the breaker, its failure opens it
again. Bad content (a wrong checksum, a body cut short) says nothing about
reachability and is not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ghostcrate.proxy.errors import UpstreamError


class UpstreamUnavailable(UpstreamError):
    """The breaker is open: the upstream was not asked."""


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.last_error = ""

    @property
    def open(self) -> bool:
        return self._opened_at is not None

    def admit(self) -> None:
        """Raise `UpstreamUnavailable` unless a request may go to the upstream now."""
        if self._opened_at is None:
            return
        waited = self._clock() - self._opened_at
        if waited >= self._cooldown and not self._probing:
            self._probing = True  # this request is the probe
            return
        retry_in = max(0.0, self._cooldown - waited)
        raise UpstreamUnavailable(
            f"the upstream is unreachable ({self._failures} failures in a row, the last: "
            f"{self.last_error}); not asking it again for {retry_in:.0f} s"
        )

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failed(self, reason: str) -> bool:
        """Count a failure; True if it opened (or re-opened) the breaker."""
        self._failures += 1
        self.last_error = reason
        if self._probing or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._probing = False
            return True
        return False
