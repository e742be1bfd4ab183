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
    """The breaker is open: the upstream was not asked for `what`; `why` says since when."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what} was not fetched: {why}")
        self.what = what
        self.why = why


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

    def admit(self, what: str) -> None:
        """Raise `UpstreamUnavailable` unless a request for `what` may go upstream now."""
        if self._opened_at is None:
            return
        waited = self._clock() - self._opened_at
        if waited >= self._cooldown and not self._probing:
            self._probing = True  # this request is the probe
            return
        failed_at = time.time() - waited
        retry_in = self._cooldown - waited
        probe = (
            f"it is asked again after {_utc(failed_at + self._cooldown)} (in {retry_in:.0f} s)"
            if retry_in > 0
            else "another request is asking it now"
        )
        raise UpstreamUnavailable(
            what,
            f"the upstream is unreachable, and {probe}. It failed {self._failures} times "
            f"in a row; the last, at {_utc(failed_at)} ({waited:.0f} s ago): {self.last_error}",
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


def _utc(epoch: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))
