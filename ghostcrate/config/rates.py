"""Request rates as the `[limits]` tables write them: `"10/minute"`, `"3/2s burst 6"`.

`N/PERIOD` allows N requests per PERIOD on average; `burst B` lets a client
that has been quiet send B at once (default: N). PERIOD is an optional whole
number and a unit: s, sec, second(s), m, min, minute(s), h, hour(s), d, day(s).
`0` (or `"off"`) means no limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_UNITS = {
    **dict.fromkeys(("s", "sec", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*(?:burst\s+(\d+)\s*)?", re.IGNORECASE)
_OFF = ("0", "off")
SYNTAX = 'must be a rate like "10/minute" or "30/10s burst 60", or 0 for no limit'


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `seconds`, `burst` of them at once."""

    count: int
    seconds: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds one request costs (GCRA's emission interval)."""
        return self.seconds / self.count


def parse_rate(text: str) -> Rate | None:
    """The rate `text` writes (None: no limit); `ValueError` saying the syntax if it is not one."""
    if text.strip().lower() in _OFF:
        return None
    match = _RATE.fullmatch(text)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(SYNTAX)
    count, times, _, burst = match.groups()
    if int(count) == 0 or (times and int(times) == 0) or (burst and int(burst) == 0):
        raise ValueError(SYNTAX + " (a count, period or burst of 0 is no rate)")
    return Rate(int(count), int(times or 1) * unit, int(burst or count))


def rate_text(value: Any) -> Any:
    """A `[limits]` value as checked text (`0` becomes "off"); other types are left for the
    type check."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 0:
            return "off"
        raise ValueError(SYNTAX + " (a number alone has no period)")
    if isinstance(value, str):
        parse_rate(value)
        return "off" if value.strip().lower() in _OFF else value.strip()
    return value
