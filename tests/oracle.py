"""An independent transcription of the stage rule: Algorithm 2 as a plain loop over mutable variables.

:mod:`sfotheory.rule` is a vectorised closed form over a state record; this is the loop the authors
wrote, one step at a time, without the library: b_m = ⌈b₀ δ^m + a m⌉ in exact rationals (so a float
product such as 8·1.5³ = 27.000000000000004 cannot push the ceiling up), η_m = min(η_max, η₀ γ^m),
ε_m = ε₀ √(b₀ / b_m). It also holds the library's two additions, as its documentation states them:

* a step is *blocked* by a NaN/inf norm on a check step or by a diverged step: nothing moves on it;
* the stall limit: the first step that is not blocked, does not move by the norm and has spent at
  least ``stall_limit`` steps in the stage fires the stall action, once per stage ("advance" at
  b_max stops the run instead).
"""

import math
from fractions import Fraction

from sfotheory.rule import Event


class AuthorsRule:
    """One run of the rule; :meth:`step` counts a step, the attributes say what the next step uses."""

    def __init__(self, *, b0, eta0, eps0, tau, delta=1, gamma=1.0, increment=0, b_max=2**62,
                 eta_max=math.inf, stall_limit=0, stall_action="none"):
        self.b0, self.eta0, self.eps0, self.tau = b0, eta0, eps0, tau
        self.delta, self.increment = Fraction(str(delta)), Fraction(str(increment))  # decimals, exactly
        self.gamma, self.b_max, self.eta_max = gamma, b_max, eta_max
        self.stall_limit, self.stall_action = stall_limit, stall_action
        self.t = 0
        self.stopped = False
        self._enter(0)

    def _enter(self, m):
        self.m = m
        self.b = min(self.b_max, math.ceil(self.b0 * self.delta**m + self.increment * m))
        self.eta = min(self.eta_max, self.eta0 * self.gamma**m)
        self.eps = self.eps0 * math.sqrt(self.b0 / self.b)
        self.in_stage = 0
        self.stalled = False

    def step(self, norm=None, *, diverged=False):
        """Count one step; ``norm`` is ‖∇f‖ measured for it (read on every τ-th step only).

        Returns the :class:`Event` that names a move, a stall or a blocked step, else None.
        """
        if self.stopped:
            return None
        self.t += 1
        self.in_stage += 1
        check = self.t % self.tau == 0 and norm is not None
        if diverged or (check and not math.isfinite(norm)):
            return Event.NONFINITE
        if check and norm <= self.eps and self.b < self.b_max:
            self._enter(self.m + 1)
            return Event.ADVANCED
        if self.stall_limit and self.in_stage >= self.stall_limit and not self.stalled:
            self.stalled = True
            if self.stall_action == "advance" and self.b < self.b_max:
                self._enter(self.m + 1)
                return Event.STALL_ADVANCED
            if self.stall_action in ("advance", "stop"):
                self.stopped = True
                return Event.STALL_STOPPED
            return Event.STALL_WARNED
        return None

    @property
    def values(self):
        """(m, b_m, η_m, ε_m, stopped) for the next step."""
        return self.m, self.b, self.eta, self.eps, self.stopped
