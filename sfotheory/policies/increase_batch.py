r""""Don't decay the learning rate, increase the batch size" (Smith, Kindermans, Ying & Le 2018).

A step schedule decays η by a factor α at fixed points of training. Smith et al. observe
that SGD's noise scale is about ηN/b (N the training-set size), so multiplying b by α at
those points lowers the noise exactly as dividing η by α would, with α times fewer
updates; once b reaches its cap, the remaining decay goes back to η (their "hybrid"
schedule). With k the number of milestones passed,

.. math::

    b_k = \min\bigl(b_{\max}, \lceil b_0 \alpha^k \rceil\bigr), \qquad
    \eta_k = \eta_0 \min\Bigl(1, \frac{b_k}{b_0 \alpha^k}\Bigr),

so that η_k/b_k = η₀/(b₀α^k) whenever the cap is not in the way (the noise scale falls by α
at each milestone either way). Legend: α the factor, b₀ and η₀ the initial values, b_max
the cap, milestones in training samples (SFO).

>>> from sfotheory.policies.base import Statistics, initial_state, step
>>> p = IncreaseBatch(b0=128, eta0=0.1, milestones=(256, 512), factor=5, b_max=1000)
>>> st = initial_state(p)
>>> out = []
>>> for _ in range(4):
...     st, ev = step(p, st, Statistics(samples=st.batch_size))
...     out.append((ev.name, st.batch_size, round(st.lr, 6)))
>>> out                 # 128 + 128 = 256: ×5; 256 + 640 = 896 ≥ 512: 3200 > 1000, so b = 1000, η = 0.1·1000/3200
[('NONE', 128, 0.1), ('PERIOD', 640, 0.1), ('PERIOD', 1000, 0.03125), ('NONE', 1000, 0.03125)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..validation import check_greater, check_integer, fail
from .base import GrowthState, Needs, Policy, PolicyEvent, Statistics, ceil_capped, milestones_passed

__all__ = ["IncreaseBatch", "milestones_from_epochs"]


def milestones_from_epochs(epochs, n: int) -> tuple:
    """Milestones in samples from milestones in epochs of an n-sample training set (Smith et al. count epochs).

    >>> milestones_from_epochs((60, 120, 160), n=50_000)
    (3000000, 6000000, 8000000)
    """
    n = check_integer(n, "n", "milestones_from_epochs", minimum=1)
    return tuple(int(round(e * n)) for e in epochs)


@dataclass(frozen=True)
class IncreaseBatch(Policy):
    r"""Smith et al.'s schedule: at each milestone (in training samples) b ×α, and η ÷ what b could not take.

    Default α = 5, the factor of the authors' CIFAR-10 wide-ResNet schedule (whose η decays
    ×0.2 at epochs 60, 120 and 160; :func:`milestones_from_epochs` converts). The milestones
    belong to the step schedule being replaced and have no default. Reads no statistic and
    costs no SFO beyond training.

    Where ours differs, and why: milestones are counted in training samples, the toolkit's
    unit of progress (the authors count epochs, i.e. samples/n); b is capped at b_max and η
    takes over the decay there (their hybrid schedule, in closed form: the milestone that
    reaches the cap is split, b taking the factor b_max/b_k and η the rest, where the authors
    move whole milestones from b to η); b_max has no default below n, and the noise-scale
    argument behind the schedule, g = η(N/b − 1) ≈ ηN/b, holds only while b ≪ N (the authors
    keep b well below N and hand the decay to η before b nears it: set b_max so); the momentum and
    learning-rate rescalings of their later sections are left out (plain SGD); a move falls
    due on a step whose gradient was not finite happens on the next step that is.
    """

    b0: int
    eta0: float
    milestones: tuple
    factor: float = 5.0
    b_max: int = 2**62
    eta_max: float = math.inf

    kind = "increase_batch"
    State = GrowthState
    _tuple_fields = ("milestones",)

    def __post_init__(self):
        where = "IncreaseBatch"
        milestones = tuple(self.milestones) if isinstance(self.milestones, (tuple, list)) else None
        if milestones is None or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones) \
                or list(milestones) != sorted(set(milestones)):
            fail("milestones", where, "an increasing sequence of positive integers (training samples)",
                 self.milestones)
        object.__setattr__(self, "milestones", milestones)
        object.__setattr__(self, "factor", float(check_greater(self.factor, 1.0, "factor", where,
                                                               reason="the batch grows at each milestone")))
        self._validate_common()

    def needs(self) -> Needs:
        return Needs((), 1, "after_update")

    def initial_values(self) -> dict:
        return dict(stage=0, batch_size=self.b0, lr=self.eta0, step=0, samples=0, check_samples=0, stopped=False)

    def stage_values(self, ops, k):
        """(b_k, η_k) after k milestones."""
        grown = self.b0 * ops.power(self.factor, k)
        b_k = ceil_capped(ops, grown, self.b_max)
        return b_k, self.eta0 * ops.minimum(1.0, b_k / grown)

    def advance(self, ops, st, stats: Statistics):
        where, not_ = ops.where, ops.not_
        c = self.clock(ops, st, stats, (), 1)
        passed = milestones_passed(ops, self.milestones, c.total)
        move = c.active & not_(c.blocked) & (passed > st.stage)
        stage = where(move, passed, st.stage)
        b_k, eta_k = self.stage_values(ops, stage)
        event = where(c.blocked, int(PolicyEvent.NONFINITE), int(PolicyEvent.NONE))
        event = where(move, int(PolicyEvent.PERIOD), event)
        new = GrowthState(stage=stage, batch_size=where(move, b_k, st.batch_size), lr=where(move, eta_k, st.lr),
                          step=c.step, samples=c.total, check_samples=c.check_samples, stopped=st.stopped)
        return new, event
