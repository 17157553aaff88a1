"""The progress bar of long work (``sfo reproduce``, ``sfo compare``, ``sfo train``): tqdm, off when not a terminal.

A thin layer over ``tqdm`` (the bar users know: count, rate, elapsed and, with a known total, the
fraction and the time left; with an unknown total, the count and the rate). Status fields given
as ``key=value`` go into the bar's postfix. The bar is drawn only when ``stream`` is a terminal:
piped or redirected output (logs, CI) gets no progress at all; what a run did is in its report
and its JSON-lines log. ``every`` is the least time between redraws (tqdm's ``mininterval``);
``every=0`` turns the bar off.

Why tqdm and not a line of our own: ``benchmarks/bench_progress.py`` (output in
``docs/results/bench_progress.txt``) measures both per step and on import, and what each writes
when the output is not a terminal.

>>> import io
>>> class Terminal(io.StringIO):
...     def isatty(self):
...         return True
>>> out = Terminal()
>>> p = Progress(total=4, label="demo", stream=out, every=0.01)
>>> p.update(2, stage="b")
>>> p.close()
>>> "demo" in out.getvalue() and "2/4" in out.getvalue() and "stage=b" in out.getvalue()
True
>>> quiet = io.StringIO()                  # not a terminal: nothing is written
>>> p = Progress(total=4, label="demo", stream=quiet)
>>> p.update(4)
>>> p.close()
>>> quiet.getvalue()
''
"""

from __future__ import annotations

import sys

__all__ = ["Progress", "is_terminal"]


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (a bar is drawn only there)."""
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """A progress bar: ``update(n, **status)`` after each unit of work, ``close()`` at the end.

    ``total``: units of work (None: unknown, the bar shows the count and rate); ``unit``: their
    name (``"sample"`` with ``unit_scale`` for training, where 12 345 reads as 12.3k).
    """

    def __init__(self, total: int | None = None, label: str = "", stream=None, every: float = 1.0,
                 unit: str = "it", unit_scale: bool = False):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.label = label
        self.status: dict = {}
        self.done = 0                    # units counted (tqdm's own count stays 0 while it is off)
        self.enabled = every > 0 and is_terminal(self.stream)
        from tqdm import tqdm          # imported when a bar is made, not when an ``sfo`` command is registered

        self.bar = tqdm(total=total, desc=label or None, file=self.stream, mininterval=every if every > 0 else 1.0,
                        unit=unit, unit_scale=unit_scale, dynamic_ncols=True, disable=not self.enabled)

    def update(self, n: float = 1, **status) -> None:
        """Count ``n`` more units; ``status`` fields replace those of the same name in the postfix."""
        if status:
            self.status.update(status)
            if self.enabled:
                self.bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in self.status.items()), refresh=False)
        if n:
            self.done += n
            self.bar.update(n)
        elif status and self.enabled:
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
