"""Progress a person can follow in a log (a Kubeflow pod's, a file's), where a terminal's progress bar is silent:
one line per unit of work or per 5% of it, whichever is rarer, each with the elapsed and the remaining time."""
from __future__ import annotations

import math
import sys
import time


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressLines:
    """Counts units from `start` to `total`; `due(done)` is true at every max(1, 5% of the total)-th unit and at the
    end; `timing(done)` is "elapsed E, remaining ~R" from the rate since this object was made."""

    def __init__(self, total: int, start: int = 0, fraction: float = 0.05, stream=None):
        self.total, self.start = total, start
        self.every = max(1, math.ceil(total * fraction))
        self.started = time.monotonic()
        self.stream = stream or sys.stderr
        self.done = start

    def due(self, done: int) -> bool:
        return done >= self.total or done % self.every == 0

    def timing(self, done: int) -> str:
        elapsed = time.monotonic() - self.started
        ran = done - self.start
        remaining = elapsed / ran * (self.total - done) if ran > 0 else float("nan")
        left = duration(remaining) if math.isfinite(remaining) else "?"
        return f"elapsed {duration(elapsed)}, remaining ~{left}"

    def update(self, what: str, n: int = 1, extra: str = "") -> None:
        """Count `n` more units; print "WHAT done/total (p%)[, extra], elapsed .., remaining .." when due."""
        self.done += n
        if self.due(self.done):
            percent = 100 * self.done // max(1, self.total)
            print(f"{what} {self.done}/{self.total} ({percent}%){extra}, {self.timing(self.done)}", file=self.stream,
                  flush=True)
