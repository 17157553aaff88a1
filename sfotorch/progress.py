r"""The progress line of ``sfo train``: one plain line per interval on stderr, no dependency.

Step, epoch, stage m, b_m, η_m, the latest measured ‖∇f‖ against ε_m, training + measurement SFO,
training samples per second and, when the run's end is known, the fraction done. It is rewritten
in place on a terminal (:func:`sfotheory.progress.write_status_line`).

>>> import io
>>> out = io.StringIO()
>>> p = Progress(out, every=1e9, label="[seed 1] ")
>>> p.update({"step": 3, "samples": 24, "check": 100, "epoch": 0.5, "stage": 1, "b": 8, "eta": 0.1,
...           "eps_m": 0.25, "norm": 0.3, "fraction": 0.5, "samples_per_s": 12.0}, force=True)
>>> out.getvalue()
'[seed 1] step 3 ep 0.50 | stage 1 b 8 lr 0.1 | norm 0.3 eps_m 0.25 | SFO 24+100 | 12 samples/s 50%\n'
"""

from __future__ import annotations

import sys
import time

from sfotheory.progress import Progress as StatusLine
from sfotheory.progress import write_status_line

__all__ = ["Progress"]


class Progress(StatusLine):
    """A plain progress line on ``stream`` every ``every`` seconds (``\\r``-rewritten on a terminal).

    Shows step, epoch, stage m, b_m, η_m, the latest measured ‖∇f‖ against ε_m, training and
    measurement SFO, and training samples per second over the last interval (time spent measuring
    ‖∇f‖ left out; it is reported as check_s in the summary). No dependency:
    tqdm is not installed here, and a bar with a known end does not fit a run whose length in
    steps depends on when the stages change (its end is fixed in samples; the line shows that %).
    """

    def __init__(self, stream=None, every: float = 2.0, label: str = ""):
        self.stream = sys.stderr if stream is None else stream
        self.every = every
        self.label = label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_t = time.perf_counter()
        self._last_samples = None
        self._last_step = None
        self._last_check_s = 0.0
        self._wrote = False

    def update(self, info: dict, *, force: bool = False) -> None:
        if self.every <= 0:
            return
        now = time.perf_counter()
        if (not force and now - self._last_t < self.every) or info["step"] == self._last_step:
            return
        self._last_step = info["step"]
        samples, check_s = info["samples"], info.get("check_s", 0.0)
        if self._last_samples is not None:   # training samples per second of the time not spent measuring ‖∇f‖
            rate = (samples - self._last_samples) / max(now - self._last_t - (check_s - self._last_check_s), 1e-9)
        else:
            rate = info.get("samples_per_s", 0.0)
        self._last_t, self._last_samples, self._last_check_s = now, samples, check_s
        norm = "-" if info.get("norm") is None else f"{info['norm']:.4g}"
        done = f" {100 * info['fraction']:.0f}%" if info.get("fraction") is not None else ""
        line = (f"{self.label}step {info['step']} ep {info['epoch']:.2f} | stage {info['stage']} b {info['b']} "
                f"lr {info['eta']:.4g} | norm {norm} eps_m {info['eps_m']:.3g} | SFO {_k(samples)}+{_k(info['check'])} "
                f"| {rate:.0f} samples/s{done}")
        write_status_line(self.stream, line, self.tty)
        self._wrote = True


def _k(x: int) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else (f"{x / 1e3:.1f}k" if x >= 1e4 else str(x))
