"""Progress for logs: plain lines where no progress bar is shown.

When stderr is not a terminal (a log file, CI, a pipe), ``liif upscale`` shows no tqdm bar, which
would fill the log with carriage returns. :class:`ProgressLines` prints a plain line instead, such as
``upscale photo.png: 40% (864 of 2160 rows, 8 s)``, each time the work passes the next 10% and at
least 5 seconds after the previous line (whichever is rarer): a long render says it is alive, a
render of a few seconds prints nothing.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

ProgressCallback = Callable[[int, int], None]  # called with (done, total) after each piece of work
STEP_PERCENT = 10  # a line at most every 10% of the work ...
MIN_SECONDS = 5.0  # ... and at most one every 5 seconds


def clock() -> float:
    """Seconds of a monotonic clock (tests replace it with a fake one)."""
    return time.monotonic()


class ProgressLines:
    """A :data:`ProgressCallback` that prints ``WHAT: P% (DONE of TOTAL UNIT, S s)`` lines.

    A line is printed when ``done`` has passed the next multiple of ``step`` percent and ``every``
    seconds have gone by since the previous line (or since the start); time runs from construction."""

    def __init__(self, what: str, unit: str, stream: TextIO | None = None, now: Callable[[], float] | None = None,
                 step: int = STEP_PERCENT, every: float = MIN_SECONDS) -> None:
        self.what, self.unit, self.step, self.every = what, unit, step, every
        self.stream = stream  # None: sys.stderr when the line is printed
        self.now = now if now is not None else clock
        self.start = self.last = self.now()
        self.next_percent = step

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        percent = 100 * done // total
        if percent < self.next_percent:
            return
        t = self.now()
        if t - self.last < self.every:
            return
        self.last = t
        self.next_percent = (percent // self.step + 1) * self.step
        print(f"{self.what}: {percent}% ({done} of {total} {self.unit}, {t - self.start:.0f} s)",
              file=self.stream if self.stream is not None else sys.stderr, flush=True)
