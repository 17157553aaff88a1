r"""The gradient noise scale of McCandlish, Kaplan, Amodei et al. (2018) as a batch-size policy.

"An Empirical Model of Large-Batch Training" measures the simple noise scale

.. math::

    B_{\rm simple} = \frac{\operatorname{tr}\Sigma}{\|\nabla f(\theta)\|^2},

the batch size at which the noise of the batch gradient, tr Σ/b, equals the squared signal
‖∇f‖², and finds that the critical batch size (beyond which a larger batch stops saving
steps in proportion) is about B_simple. It grows as training converges (‖∇f‖ falls while
tr Σ does not), so b should grow with it.

Estimators, from the training batch's own per-sample gradients (legend as in
:mod:`sfotheory.policies.base`; c_b = 1 − b/n, 1 with replacement):

.. math::

    \widehat{|G|^2} = \|g_B\|^2 - \frac{c_b}{b}\widehat{\operatorname{tr}\Sigma}, \qquad
    \widehat S = \widehat{\operatorname{tr}\Sigma},

both unbiased (for ‖∇f‖² and for tr Σ, or tr S² without replacement); they are the
authors' two-batch-size estimators with the small batch taken to single samples. As the
authors do, each is averaged by an exponential moving average (weight β on the past) and
the noise scale is the ratio of the averages, B̂ = EMA(Ŝ)/EMA(|G|²̂); it is used only when
the averaged |G|² is positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from ..validation import check_choice, check_in_range, check_integer
from .base import Needs, Policy, PolicyEvent, Statistics, ceil_capped, state_to_dict

__all__ = ["GradientNoiseScale", "NoiseScaleState"]

LR_MODES = ("fixed", "optimal")


class NoiseScaleState(NamedTuple):
    """The common fields, the two moving averages (zero-initialised) and the last usable B̂ (NaN before one)."""

    stage: int
    batch_size: int
    lr: float
    step: int
    samples: int
    check_samples: int
    stopped: bool
    ema_sq: float
    ema_var: float
    noise_scale: float

    def to_dict(self) -> dict:
        """JSON-friendly dict of a single state."""
        return state_to_dict(self)


@dataclass(frozen=True)
class GradientNoiseScale(Policy):
    r"""b follows the measured gradient noise scale: b ← min(b_max, max(b, ⌈B̂⌉)) on every τ-th step.

    ``lr_mode="fixed"`` keeps η = η₀. ``lr_mode="optimal"`` uses the authors' optimal
    step size for SGD at batch size b,

    .. math::

        \eta(b) = \frac{\eta_0}{1 + \hat B / b},

    with η₀ in the role of their ε_max (the best step size of the large-batch limit); η is
    η₀ until the first usable B̂ and never exceeds η₀.

    Where ours differs, and why:

    * the authors measure B_simple to predict the critical batch size and suggest adapting
      the batch during training; they fix no update rule, so ours is the plainest one that
      keeps the toolkit's invariants: follow ⌈B̂⌉, never shrink, cap at b_max;
    * Ŝ and |G|²̂ come from per-sample gradients of one batch (their estimators with
      B_small = 1) rather than from two batch sizes across devices: the same expectations
      with b − 1 degrees of freedom, and no second batch size needed;
    * the decay of the moving averages is ours: β = 0.95 (an effective window of about 20
      checks), short enough to follow B_simple as it grows within a run of a few thousand
      steps. Public implementations of the estimator use longer windows (β = 0.99 to 0.9998,
      for runs of 10⁵ steps and more), which give a less noisy B̂ that lags more; ``sfo
      compare`` tunes β over {0.8, 0.95, 0.99}. The averages start at 0 and the ratio needs no
      bias correction (it cancels);
    * the finite-population factor c_b without replacement (docs/theory.md, "Sampling with and
      without replacement").
    """

    b0: int
    eta0: float
    b_max: int = 2**62
    eta_max: float = math.inf
    smoothing: float = 0.95
    lr_mode: str = "fixed"
    tau: int = 1

    kind = "gradient_noise_scale"
    State = NoiseScaleState

    def __post_init__(self):
        where = "GradientNoiseScale"
        object.__setattr__(self, "smoothing", float(check_in_range(
            self.smoothing, 0.0, 1.0, "smoothing", where, reason="the weight of the past in a moving average")))
        check_choice(self.lr_mode, LR_MODES, "lr_mode", where)
        object.__setattr__(self, "tau", check_integer(self.tau, "tau", where, minimum=1))
        self._validate_common()

    def needs(self) -> Needs:
        return Needs(("grad_sq", "trace_var"), self.tau, "after_update")

    def initial_values(self) -> dict:
        return dict(stage=0, batch_size=self.b0, lr=self.eta0, step=0, samples=0, check_samples=0, stopped=False,
                    ema_sq=0.0, ema_var=0.0, noise_scale=math.nan)

    def advance(self, ops, st, stats: Statistics):
        where, not_ = ops.where, ops.not_
        c = self.clock(ops, st, stats, ("grad_sq", "trace_var"), self.tau)
        g2 = where(c.ok, ops.to_float(stats.grad_sq), 0.0)
        var = where(c.ok, ops.to_float(stats.trace_var), 0.0)
        b = st.batch_size
        n = ops.to_float(stats.population)
        sq_hat = g2 - (1.0 - b / n) * var / b
        beta = self.smoothing
        ema_sq = where(c.ok, beta * st.ema_sq + (1.0 - beta) * sq_hat, st.ema_sq)
        ema_var = where(c.ok, beta * st.ema_var + (1.0 - beta) * var, st.ema_var)
        usable = c.ok & (ema_sq > 0)
        scale = where(usable, ops.ratio(ema_var, where(usable, ema_sq, 1.0)), 0.0)
        b_new = where(usable, ops.maximum(b, ceil_capped(ops, scale, self.b_max)), b)
        moved = b_new > b
        if self.lr_mode == "optimal":
            lr = where(usable, self.eta0 * b_new / (b_new + scale), st.lr)
        else:
            lr = st.lr
        event = where(c.due, int(PolicyEvent.CHECKED), int(PolicyEvent.NONE))
        event = where(c.blocked, int(PolicyEvent.NONFINITE), event)
        event = where(moved, int(PolicyEvent.ADVANCED), event)
        event = where(usable & not_(moved) & (b >= self.b_max) & (scale > b), int(PolicyEvent.AT_MAX), event)
        new = NoiseScaleState(stage=st.stage + ops.to_int(moved), batch_size=b_new, lr=lr, step=c.step,
                              samples=c.total, check_samples=c.check_samples, stopped=st.stopped, ema_sq=ema_sq,
                              ema_var=ema_var, noise_scale=where(usable, scale, st.noise_scale))
        return new, event
