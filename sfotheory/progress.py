"""A dependency-free progress line for long work (``sfo reproduce``, sweeps).

One line on ``stream`` (stderr by default), rewritten in place on a terminal and throttled to
one line every ``every`` seconds (15 s at least) elsewhere, so logs stay short. Shows the label, done/total with
a percentage when the total is known, elapsed time, and any ``key=value`` status given.

>>> import io
>>> out = io.StringIO()
>>> p = Progress(total=4, label="demo", stream=out, every=0)
>>> p.update(2, stage="b")
>>> p.close()
>>> out.getvalue().splitlines()[0].startswith("demo 2/4 (50%)")
True
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "write_status_line"]


def write_status_line(stream, line: str, tty: bool) -> None:
    """Rewrite the current terminal line with ``line`` (on a terminal) or append it as a new line."""
    if tty:
        stream.write("\r" + line[:160].ljust(120))
    else:
        stream.write(line + "\n")
    stream.flush()


class Progress:
    """A throttled progress line: ``update(n, **status)`` after each unit of work, ``close()`` at the end."""

    def __init__(self, total: int | None = None, label: str = "", stream=None, every: float = 1.0):
        # every = 0 writes on every update (tests); a finished total is always written
        self.total = total
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.every = every
        self.done = 0
        self.status: dict = {}
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if not self.tty and every > 0:
            self.every = max(every, 15.0)  # a log file gets a line every 15 s at most
        self._t0 = time.perf_counter()
        self._last = -float("inf")
        self._wrote = False

    def update(self, n: int = 1, **status) -> None:
        self.done += n
        self.status.update(status)
        now = time.perf_counter()
        if now - self._last >= self.every or (self.total is not None and self.done >= self.total):
            self._last = now
            self._write(now)

    def _write(self, now: float) -> None:
        count = f"{self.done}/{self.total} ({100 * self.done / self.total:.0f}%)" if self.total else f"{self.done}"
        extra = " ".join(f"{k}={v}" for k, v in self.status.items())
        write_status_line(self.stream, f"{self.label} {count} {now - self._t0:.0f}s {extra}".strip(), self.tty)
        self._wrote = True

    def close(self) -> None:
        if self.tty and self._wrote:
            self.stream.write("\n")
            self.stream.flush()
        self._wrote = False
