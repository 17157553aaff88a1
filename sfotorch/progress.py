r"""The progress bar of ``sfo train``: training samples against the run's end, the schedule in the postfix.

A :class:`sfotheory.progress.Progress` (tqdm, drawn only on a terminal) whose unit is the
training sample: the bar's count and rate are training SFO (Σ|B_t|) and its total the run's end
in samples when ``[train]`` fixes one (epochs, ``max_samples``; unknown for ``max_steps`` alone,
whose fraction goes to the postfix). The postfix shows step, epoch, stage m, b_m, η_m, the latest
measured ‖∇f‖ against ε_m, and training + measurement SFO.

>>> import io
>>> class Terminal(io.StringIO):
...     def isatty(self):
...         return True
>>> out = Terminal()
>>> p = Progress(out, every=1e-9, label="[seed 1] ", total=48)
>>> p.update({"step": 3, "samples": 24, "check": 100, "epoch": 0.5, "stage": 1, "b": 8, "eta": 0.1,
...           "eps_m": 0.25, "norm": 0.3, "fraction": 0.5}, force=True)
>>> p.close()
>>> print(out.getvalue().split("\r")[-1].strip())   # doctest: +ELLIPSIS
[seed 1]:  50%|...| 24.0/48.0 [...sample/s, step 3 ep 0.50 | stage 1 b 8 lr 0.1 | norm 0.3 eps_m 0.25 | SFO 24+100]
"""

from __future__ import annotations

import time

from sfotheory.progress import Progress as Bar

__all__ = ["Progress"]


class Progress:
    """``sfo train``'s bar on ``stream``, redrawn at most every ``every`` seconds (0: off); ``total`` in samples."""

    def __init__(self, stream=None, every: float = 2.0, label: str = "", total: int | None = None):
        self.label = label
        self.bar = Bar(total=total, label=label.strip(), stream=stream, every=every, unit="sample", unit_scale=True)
        self.stream = self.bar.stream
        self.every = every
        self._samples = None
        self._last = -float("inf")

    def update(self, info: dict, *, force: bool = False) -> None:
        """Advance to ``info["samples"]`` and show the schedule's fields (``force``: redraw now)."""
        if not self.bar.enabled:
            return
        samples = int(info["samples"])
        if self._samples is None:               # a resumed run starts where its checkpoint was
            self.bar.bar.n = self.bar.bar.last_print_n = samples
            self._samples = samples
        now = time.perf_counter()
        if force or now - self._last >= self.every:    # the postfix is formatted only when it may be drawn
            self._last = now
            norm = "-" if info.get("norm") is None else f"{info['norm']:.4g}"
            done = (f" {100 * info['fraction']:.0f}%" if self.bar.total is None and info.get("fraction") is not None
                    else "")
            self.bar.bar.set_postfix_str(
                f"step {info['step']} ep {info['epoch']:.2f} | stage {info['stage']} b {info['b']} "
                f"lr {info['eta']:.4g} | norm {norm} eps_m {info['eps_m']:.3g} | "
                f"SFO {_k(samples)}+{_k(info['check'])}{done}", refresh=False)
        self.bar.update(samples - self._samples)
        self._samples = samples
        if force:
            self.bar.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _k(x: int) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else (f"{x / 1e3:.1f}k" if x >= 1e4 else str(x))
