r"""AdaScale SGD (Johnson, Agrawal, Gu & Guestrin 2020) as a policy: a fixed large batch, a gain on η.

Training at a batch S times a base batch b₀ (b = S b₀), AdaScale multiplies the base
learning rate by the *gain ratio*

.. math::

    r_t = \frac{\mathbb E\|g_{b_0}\|^2}{\mathbb E\|g_{b}\|^2}
        = \frac{\sigma^2 + \mu^2}{\sigma^2/S + \mu^2} \in [1, S],
    \qquad \sigma^2 = \frac{\operatorname{tr}\Sigma}{b_0}, \quad \mu^2 = \|\nabla f(\theta_t)\|^2,

and counts progress in *scale-invariant iterations*: τ_{t+1} = τ_t + r_t, with the base
schedule η_base(τ) evaluated at τ_t. The update of step t is θ_{t+1} = θ_t − r_t η_base(τ_t) g_t:
the gain is measured on the batch it scales, so the policy's step runs before the update
(``order="before_update"``). Legend: S the scale, σ² the variance of a base-batch gradient,
μ² the squared norm of the full gradient, τ the scale-invariant iteration counter, T_SI the
horizon in those iterations.

Estimators, from the step's own per-sample gradients (c_b = 1 − b/n, 1 with replacement):
μ̂² = ‖g_B‖² − c_b tr Σ̂/b and tr Σ̂, each averaged as the authors do (their Appendix B.3): the
plain mean of the first k values while k < 1/(1 − θ), then an exponential moving average with
weight θ on the past; μ² is clipped at 0 before the ratio. Without replacement the two
variances carry their factors: r = (c_{b₀} tr Σ̂/b₀ + μ̂²)/(c_b tr Σ̂/b + μ̂²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from ..validation import check_greater, check_in_range, check_integer, check_positive, fail
from .base import Needs, Policy, PolicyEvent, Statistics, milestones_passed, state_to_dict

__all__ = ["AdaScale", "AdaScaleState"]


class AdaScaleState(NamedTuple):
    """The common fields (``stage`` counts the base schedule's milestones passed, ``lr`` is the η the
    last update used), the progress τ, the last gain, the two averages and how many values they hold."""

    stage: int
    batch_size: int
    lr: float
    step: int
    samples: int
    check_samples: int
    stopped: bool
    progress: float
    gain: float
    ema_var: float
    ema_sq: float
    updates: int

    def to_dict(self) -> dict:
        """JSON-friendly dict of a single state."""
        return state_to_dict(self)


@dataclass(frozen=True)
class AdaScale(Policy):
    r"""AdaScale SGD at batch b = ``scale`` × ``base_batch``: η_t = min(η_max, r_t η_base(τ_t)).

    The base schedule in scale-invariant iterations is a step decay,
    η_base(τ) = η₀ · decay^{#{milestones ≤ τ}} (constant η₀ without milestones); a positive
    ``horizon`` T_SI stops the run once τ ≥ T_SI (the authors' stopping rule). The batch
    size never changes.

    Default smoothing θ = max(1 − S/1000, 0), keyed on the scale S. The fairscale
    implementation keys it on the number of gradients averaged (workers × accumulation
    steps, i.e. S for base batches of one worker each) and by default uses a bias-corrected
    EMA instead of Appendix B.3's mean-then-EMA, and clips each step's estimates before
    averaging (ours: the averages, after). Where ours differs, and why:

    * σ̂² comes from the per-sample gradients of the batch (tr Σ̂/b₀) instead of from the S
      base-batch gradients of S workers: the same expectation with b − 1 instead of S − 1
      degrees of freedom, and defined at S = 1 (where r = 1), which theirs is not;
    * η is capped at η_max (Proposition 1 needs η < 2/L; AdaScale itself has no cap), and
      τ then advances by the gain actually applied, η_t/η_base(τ_t), so that progress stays
      "base-batch iterations' worth of steps";
    * r is clipped to [1, S], the range of the true ratio (estimates, and the
      finite-population factors without replacement, can leave it).
    """

    base_batch: int
    scale: int
    eta0: float
    milestones: tuple = ()
    decay: float = 0.1
    horizon: float = 0.0
    smoothing: float | None = None
    eta_max: float = math.inf

    kind = "adascale"
    State = AdaScaleState
    _tuple_fields = ("milestones",)

    def __post_init__(self):
        where = "AdaScale"
        base = check_integer(self.base_batch, "base_batch", where, minimum=1)
        scale = check_integer(self.scale, "scale", where, minimum=1, reason="the batch is scale x base_batch")
        if base * scale < 2:
            fail("base_batch", where, ">= 2 when scale = 1", base,
                 reason="the per-sample variance needs a batch of two samples")
        eta0 = float(check_positive(self.eta0, "eta0", where))
        eta_max = float(self.eta_max)
        if math.isnan(eta_max) or eta_max < eta0:
            fail("eta_max", where, f">= eta0 = {eta0:g}", self.eta_max)
        milestones = tuple(self.milestones) if isinstance(self.milestones, (tuple, list)) else None
        if milestones is None or any(isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0
                                     for m in milestones) or list(milestones) != sorted(set(milestones)):
            fail("milestones", where, "an increasing sequence of positive scale-invariant iterations",
                 self.milestones)
        decay = float(check_in_range(self.decay, 0.0, 1.0, "decay", where, low_strict=True, high_strict=False,
                                     reason="the base schedule's factor at each milestone"))
        horizon = float(check_greater(self.horizon, 0.0, "horizon", where, strict=False,
                                      reason="0 means no horizon"))
        if self.smoothing is not None:
            object.__setattr__(self, "smoothing", float(check_in_range(
                self.smoothing, 0.0, 1.0, "smoothing", where, reason="the weight of the past in a moving average")))
        for name, value in (("base_batch", base), ("scale", scale), ("eta0", eta0), ("eta_max", eta_max),
                            ("milestones", tuple(float(m) for m in milestones)), ("decay", decay),
                            ("horizon", horizon)):
            object.__setattr__(self, name, value)

    b0 = property(lambda self: self.base_batch * self.scale, doc="the batch size used (it never changes)")
    b_max = b0

    @property
    def theta(self) -> float:
        """The smoothing in force: the given one, or the authors' max(1 − S/1000, 0)."""
        return self.smoothing if self.smoothing is not None else max(1.0 - self.scale / 1000.0, 0.0)

    def needs(self) -> Needs:
        return Needs(("grad_sq", "trace_var"), 1, "before_update")

    def lr_bound(self) -> float:
        return min(self.eta_max, self.scale * self.eta0)

    def initial_values(self) -> dict:
        return dict(stage=0, batch_size=self.b0, lr=self.eta0, step=0, samples=0, check_samples=0, stopped=False,
                    progress=0.0, gain=1.0, ema_var=0.0, ema_sq=0.0, updates=0)

    def advance(self, ops, st, stats: Statistics):
        where = ops.where
        c = self.clock(ops, st, stats, ("grad_sq", "trace_var"), 1)
        g2 = where(c.ok, ops.to_float(stats.grad_sq), 0.0)
        var = where(c.ok, ops.to_float(stats.trace_var), 0.0)
        b, b0, S = st.batch_size, self.base_batch, self.scale
        n = ops.to_float(stats.population)
        updates = st.updates + ops.to_int(c.ok)
        weight = where(c.ok, ops.maximum(ops.ratio(1.0, ops.maximum(updates, 1)), 1.0 - self.theta), 0.0)
        ema_var = st.ema_var + weight * (var - st.ema_var)
        ema_sq = st.ema_sq + weight * ((g2 - (1.0 - b / n) * var / b) - st.ema_sq)
        mu2 = ops.maximum(ema_sq, 0.0)
        num = (1.0 - b0 / n) * ema_var / b0 + mu2
        den = (1.0 - b / n) * ema_var / b + mu2
        gain = ops.minimum(float(S), ops.maximum(1.0, where(den > 0, ops.ratio(num, den), 1.0)))
        stage = milestones_passed(ops, self.milestones, st.progress)
        base_lr = self.eta0 * ops.power(self.decay, stage)
        lr = ops.minimum(self.eta_max, gain * base_lr)
        progress = where(c.ok, st.progress + lr / base_lr, st.progress)
        new_stage = milestones_passed(ops, self.milestones, progress)
        finished = c.ok & (self.horizon > 0) & (progress >= self.horizon)
        event = where(c.ok, int(PolicyEvent.CHECKED), int(PolicyEvent.NONE))
        event = where(c.blocked, int(PolicyEvent.NONFINITE), event)
        event = where(new_stage > st.stage, int(PolicyEvent.PERIOD), event)
        event = where(finished, int(PolicyEvent.FINISHED), event)
        new = AdaScaleState(stage=new_stage, batch_size=b, lr=where(c.ok, lr, st.lr), step=c.step, samples=c.total,
                            check_samples=c.check_samples, stopped=st.stopped | finished, progress=progress,
                            gain=where(c.ok, gain, st.gain), ema_var=ema_var, ema_sq=ema_sq, updates=updates)
        return new, event
