"""One line per error a client causes in a front end, never a traceback, at a bounded rate.

A hostile client can make a request fail as often as it likes; a traceback per
failure (kilobytes each) would let it fill the disk with the log. Each failure
is logged as one line naming the error and where it was raised; past
`PER_SECOND` lines in a second (for both lanes of a process together) the rest
are only counted, and the next line says how many were left out.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

#: Lines per second per process; the rest are counted and reported with the next line.
PER_SECOND = 10
#: Characters of an error's text kept in its line.
MAX_TEXT = 200


class QuietLog:
    def __init__(self) -> None:
        self._second = 0
        self._lines = 0
        self._left_out = 0

    def report(
        self,
        logger: logging.Logger,
        level: int,
        message: str,
        error: BaseException,
        **fields: object,
    ) -> None:
        """Log `message` with the error and where it was raised, unless over the rate."""
        now = int(time.time())  # the second the log line's timestamp shows
        if now != self._second:
            self._second = now
            self._lines = 0
        if self._lines >= PER_SECOND:
            self._left_out += 1
            return
        self._lines += 1
        extra: dict[str, object] = {"error": f"{type(error).__name__}: {str(error)[:MAX_TEXT]}"}
        trace = error.__traceback__
        if trace is not None:
            while trace.tb_next is not None:
                trace = trace.tb_next
            code = trace.tb_frame.f_code
            extra["where"] = f"{Path(code.co_filename).name}:{trace.tb_lineno} {code.co_name}"
        extra.update((key, value) for key, value in fields.items() if value is not None)
        if self._left_out:
            extra["left_out"] = self._left_out
            self._left_out = 0
        logger.log(level, message, extra=extra)
