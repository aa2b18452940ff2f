"""What `wan22 pipeline run` shows: one line when a step starts and one when it ends (with its time), the
step's own progress lines, and, when a step fails, its one-paragraph cause as the last thing printed.
Everything kfp.local and the steps print (executor input dumps, library warnings) goes to the run's
log file; --verbose shows it all as well.

kfp.local writes its logs and the steps' output through sys.stdout (its log handler and a patched
print), so replacing sys.stdout for the duration of the run is enough to route all of it."""
from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
# lines of our own that say how a step is going (the trainer's steps, resumption, the launcher, sampling)
PROGRESS = re.compile(r"^(\[wan22\]|\[launcher\]|step \d+/\d+|training finished|resumed from|launching:)")
CAUSE = re.compile(r"^(?:error: |[A-Za-z_][\w.]*(?:Error|Exception|Interrupt): )(.+)$")


class StepConsole:
    """A stand-in for sys.stdout during a kfp.local run (see the module docstring)."""

    def __init__(self, out, log_path: Path, verbose: bool = False):
        self.out, self.verbose = out, verbose
        self.log = open(log_path, "a", encoding="utf-8")
        self.pending = ""
        self.step, self.started, self.step_lines = None, 0.0, []
        self.failed: tuple[str, str] | None = None  # (step, cause)
        self.timings: dict[str, float] = {}  # step: seconds, for the report

    # the file interface kfp.local and print() use
    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.out.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        if self.pending:
            self._line(self.pending)
            self.pending = ""
        self.log.close()

    def _line(self, raw: str) -> None:
        line = ANSI.sub("", raw).rstrip()
        self.log.write(line + "\n")
        text = line.strip()
        m = STARTED.search(text)
        if m:
            self.step, self.started, self.step_lines = m.group(1), time.monotonic(), []
            self._show(f"[wan22] {self.step}: started")
            return
        m = FINISHED.search(text)
        if m:
            step, status = m.groups()
            seconds = time.monotonic() - self.started
            self.timings[step] = seconds
            if status == "SUCCESS":
                self._show(f"[wan22] {step}: done in {seconds:.1f} s")
                self.step = None
            else:
                self.step_failed()
            return
        if self.step is not None:
            self.step_lines.append(text)
        if self.verbose:
            self.out.write(line + "\n")
        elif self.step is not None and PROGRESS.match(text):
            self.out.write(f"    {text}\n")

    def step_failed(self) -> tuple[str, str] | None:
        """Mark the step that is running as failed (kfp.local raises rather than logs a failure); returns
        (step, its cause), or None when no step was running."""
        if self.step is None:
            return self.failed
        self.failed = (self.step, self.cause())
        self._show(f"[wan22] {self.step}: failed after {time.monotonic() - self.started:.1f} s")
        self.step = None
        return self.failed

    def _show(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def cause(self) -> str:
        """The failing step's own last error line (our one-paragraph message or the exception's)."""
        for text in reversed(self.step_lines):
            m = CAUSE.match(text)
            if m:
                return m.group(1)
        return "no error message; see the log"


@contextlib.contextmanager
def step_console(log_path: Path, verbose: bool = False):
    """Route stdout through a StepConsole while the pipeline runs."""
    console = StepConsole(sys.stdout, log_path, verbose)
    sys.stdout = console
    try:
        yield console
    finally:
        sys.stdout = console.out
        console.close()
