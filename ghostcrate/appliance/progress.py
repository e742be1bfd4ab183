"""A progress bar on standard error for the maintenance commands (plain lines when piped)."""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = self._stream.isatty()
        self._last_tenth = -1

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count, self.total)

    def update(self, done: int, total: int) -> None:
        """Show `done` of `total` (the total may grow as work is discovered)."""
        self.done, self.total = done, total
        fraction = self.done / self.total if self.total else 1.0
        if self._interactive:
            filled = int(WIDTH * fraction)
            bar = "#" * filled + "." * (WIDTH - filled)
            end = "\n" if self.done >= self.total else ""
            self._stream.write(
                f"\r{self.label} [{bar}] {self.done}/{self.total} {fraction:4.0%}{end}"
            )
        elif int(fraction * 10) > self._last_tenth:  # a line per tenth when not a terminal
            self._last_tenth = int(fraction * 10)
            self._stream.write(f"{self.label}: {self.done}/{self.total} ({fraction:.0%})\n")
        self._stream.flush()
