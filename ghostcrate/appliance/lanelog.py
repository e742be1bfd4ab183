"""One line per error a client causes in a front end, never a traceback, at a bounded rate.

A hostile client can make a request fail as often as it likes; a traceback per
failure (kilobytes each) would let it fill the disk with the log. Each failure
is logged as one line naming the error; past `PER_SECOND` lines in a second the
rest are only counted, and the next line says how many were left out.
"""

from __future__ import annotations

import logging
import time

#: Lines per second per process; the rest are counted and reported with the next line.
PER_SECOND = 10
#: Characters of an error's text kept in its line.
MAX_TEXT = 200


class QuietLog:
    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._second = 0
        self._lines = 0
        self._suppressed = 0

    def error(self, message: str, error: BaseException, **fields: object) -> None:
        """Log `message` with the error's type and text in one line, unless over the rate."""
        now = int(time.time())  # the second the log line's timestamp shows
        if now != self._second:
            self._second = now
            self._lines = 0
        if self._lines >= PER_SECOND:
            self._suppressed += 1
            return
        self._lines += 1
        extra: dict[str, object] = {
            "error": type(error).__name__,
            "detail": str(error)[:MAX_TEXT],
            **fields,
        }
        if self._suppressed:
            extra["suppressed"] = self._suppressed
            self._suppressed = 0
        self._logger.warning(message, extra=extra)
