"""A policy of your own under the toolkit's interface, property-tested with sfotheory.testing."""

import math
from dataclasses import dataclass

from sfotheory.policies import GrowthState, Needs, Policy, PolicyEvent
from sfotheory.testing import check_policy_invariants


@dataclass(frozen=True)
class DoubleWhenNoisy(Policy):
    """b ×2 (up to b_max) on every step whose batch noise exceeds its signal: tr Σ̂ / b > ‖g_B‖²."""

    b0: int
    eta0: float
    b_max: int = 1024
    eta_max: float = math.inf

    kind = "double_when_noisy"
    State = GrowthState

    def __post_init__(self):
        self._validate_common()                  # b0, b_max, eta0, eta_max checked and normalised

    def needs(self):
        return Needs(("grad_sq", "trace_var"), 1, "after_update")     # read on every step, after the update

    def initial_values(self):
        return dict(stage=0, batch_size=self.b0, lr=self.eta0, step=0, samples=0, check_samples=0, stopped=False)

    def grow(self, ops, b):
        return ops.minimum(self.b_max, 2 * b)

    def advance(self, ops, st, stats):           # ops: the same code for one run (scalars) and for rows (arrays)
        c = self.clock(ops, st, stats, ("grad_sq", "trace_var"), 1)   # counts the step; c.ok: statistics usable
        g2 = ops.where(c.ok, ops.to_float(stats.grad_sq), 0.0)
        var = ops.where(c.ok, ops.to_float(stats.trace_var), 0.0)
        b = ops.where(c.ok & (var > g2 * st.batch_size), self.grow(ops, st.batch_size), st.batch_size)
        moved = b > st.batch_size
        event = ops.where(moved, int(PolicyEvent.ADVANCED), int(PolicyEvent.CHECKED))
        event = ops.where(c.blocked, int(PolicyEvent.NONFINITE), event)
        return GrowthState(stage=st.stage + ops.to_int(moved), batch_size=b, lr=st.lr, step=c.step,
                           samples=c.total, check_samples=c.check_samples, stopped=st.stopped), event


check_policy_invariants(DoubleWhenNoisy, max_examples=30)          # silent: every invariant holds
print("DoubleWhenNoisy keeps every invariant")


@dataclass(frozen=True)
class Uncapped(DoubleWhenNoisy):
    kind = "uncapped"

    def grow(self, ops, b):                      # forgets b_max
        return 2 * b


try:
    check_policy_invariants(Uncapped, max_examples=30, shrink=False)
except AssertionError as err:
    print("Uncapped:", str(err).splitlines()[0])
