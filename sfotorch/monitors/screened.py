r"""A free screen in front of a test: the debiased monitor says when a stage change is plausible,
the sequential test decides it.

The debiased monitor (:mod:`sfotorch.monitors.debiased`) costs nothing — it reads the training
batches — but its window mixes gradients taken at the τ different θ_t of a check interval and its
standard error sees only the batch noise, not that drift: its "below" can be wrong. The sequential
test (:mod:`sfotorch.monitors.sequential`) decides at the check's own θ with a stated error level,
at a cost of s_0 samples or more. Screened, at each check:

- the screen measures (cost 0). If the lower end of its interval is above ε_m,
  ``screen.lower > ε_m`` — the window rules out ‖∇f‖ ≤ ε_m at its level — the check is "above"
  and nothing more is spent;
- otherwise (a stage change is plausible, or the window cannot tell: NaN, clamped, too imprecise)
  the sequential test measures at θ and its decision is the check's.

So a stage advances only on the sequential test's "below": the probability of an advance while
‖∇f‖ > ε_m is the sequential test's α (per check), whatever the window did. What the screen can
cost is lateness: while ‖∇f_t‖ falls over the window, the window's mean overestimates the norm at
the check and may rule out "below" one check too long. Its saving is the sequential test's first
look on the checks the screen rules out.

The measurement returned is the sequential test's (its ``extra`` gains ``"screen"``: the screen's
estimate and interval), or the screen's own when it ruled the check out (``extra["decision"]`` is
``"above (screen)"``). ``cost`` is what the sequential test spent, 0 on a screened-out check.
"""

from __future__ import annotations

import math
from dataclasses import replace

from sfotheory.validation import check_positive, fail

from .base import GradientNormMonitor, Measurement
from .debiased import DebiasedMonitor
from .sequential import SequentialMonitor

__all__ = ["ScreenedMonitor"]


class ScreenedMonitor(GradientNormMonitor):
    """The debiased ``screen`` rules checks out for free; the sequential ``test`` decides the others
    (module doc). Feed the screen as usual (its ``backward`` or ``update``); call :meth:`measure`."""

    uses_eps_m = True

    def __init__(self, screen: DebiasedMonitor, test: SequentialMonitor, *, name: str = "screened"):
        where = "ScreenedMonitor"
        if not isinstance(screen, DebiasedMonitor):
            fail("screen", where, "a DebiasedMonitor (the free estimate from the training batches)",
                 type(screen).__name__)
        if not isinstance(test, SequentialMonitor):
            fail("test", where, "a SequentialMonitor (the test that decides at the check's θ)", type(test).__name__)
        self.screen, self.test, self.name = screen, test, name
        self.screened_out = 0

    def measure(self, eps_m: float | None = None) -> Measurement:
        """Screen, then test where a stage change is plausible; ``cost`` = the test's samples (0 if screened out)."""
        where = "ScreenedMonitor.measure"
        if eps_m is None:
            fail("eps_m", where, "given: ε_m, the norm the check decides against (StageScheduler passes it)", eps_m)
        eps = check_positive(eps_m, "eps_m", where)
        seen = self.screen.measure(eps_m=eps)
        summary = {"norm": seen.norm, "lower": seen.lower, "upper": seen.upper, "undecided": seen.undecided}
        if math.isfinite(seen.lower) and seen.lower > eps:
            self.screened_out += 1
            return replace(seen, monitor=self.name, undecided=False,
                           extra={**seen.extra, "decision": "above (screen)", "screen": summary})
        tested = self.test.measure(eps_m=eps)
        return replace(tested, monitor=self.name, extra={**tested.extra, "screen": summary})

    def state_dict(self) -> dict:
        return {"screen": self.screen.state_dict(), "test": self.test.state_dict(), "screened_out": self.screened_out}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"screen", "test", "screened_out"}:
            fail("state", "ScreenedMonitor.load_state_dict", "a dict with the keys 'screen', 'test', 'screened_out'",
                 state)
        self.screen.load_state_dict(state["screen"])
        self.test.load_state_dict(state["test"])
        self.screened_out = int(state["screened_out"])
