r"""Sample-size tests on the training batch: the norm test and the augmented inner-product test.

Both grow b when the batch gradient g_B is too noisy to be trusted as a descent direction,
measured from the per-sample gradients of the same batch (no extra gradient evaluation),
and both ask for the smallest batch that would pass.

Legend: b the batch size, g_B the batch gradient, tr Σ̂ the per-sample sample variance
(``trace_var``), V̂_ip the sample variance of the inner products ∇f_iᵀg_B (``inner_var``),
V̂_⊥ = tr Σ̂ − V̂_ip/‖g_B‖² the sample variance of the components of ∇f_i orthogonal to g_B,
c_b = 1 − b/n the finite-population factor (1 with replacement), θ and ν the tests'
tolerances, b_max the cap. The smallest b' with c_{b'} V/b' ≤ K is

.. math::

    b'(V, K) = \Bigl\lceil \frac{V}{K + V/n} \Bigr\rceil \qquad (= \lceil V/K \rceil \text{ with replacement}),

and a failed test sets b ← min(b_max, max(b + 1, b'(V, K))): b never shrinks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..validation import check_integer, check_positive
from .base import Clock, GrowthState, Needs, Policy, PolicyEvent, Statistics, ceil_capped

__all__ = ["InnerProductTest", "NormTest"]

_NONE, _CHECKED, _ADVANCED, _AT_MAX, _NONFINITE = (int(PolicyEvent.NONE), int(PolicyEvent.CHECKED),
                                                   int(PolicyEvent.ADVANCED), int(PolicyEvent.AT_MAX),
                                                   int(PolicyEvent.NONFINITE))


def grow_on_failure(ops, policy: Policy, st: GrowthState, c: Clock, fails, required):
    """The shared end of both tests: grow b to ``required`` where the test ``fails``; name the event."""
    where, not_ = ops.where, ops.not_
    b = st.batch_size
    wanted = ops.maximum(b + 1, ceil_capped(ops, required, policy.b_max))
    b_new = where(fails, ops.minimum(policy.b_max, wanted), b)
    moved = b_new > b
    event = where(c.due, _CHECKED, _NONE)
    event = where(c.blocked, _NONFINITE, event)
    event = where(fails & moved, _ADVANCED, event)
    event = where(fails & not_(moved), _AT_MAX, event)
    new = GrowthState(stage=st.stage + ops.to_int(moved), batch_size=b_new, lr=st.lr, step=c.step, samples=c.total,
                      check_samples=c.check_samples, stopped=st.stopped)
    return new, event


def _read(ops, c: Clock, value):
    """A statistic where it may be used, 0 elsewhere (so that no NaN reaches a ceiling)."""
    return ops.where(c.ok, ops.to_float(value), 0.0)


@dataclass(frozen=True)
class NormTest(Policy):
    r"""The norm test of Byrd, Chin, Nocedal & Wu (2012), "Sample size selection in optimization
    methods for machine learning", as a batch-size policy for SGD.

    On every τ-th step, with the statistics of the step's own batch,

    .. math::

        \frac{c_b}{b}\,\widehat{\operatorname{tr}\Sigma} \le \theta^2 \|g_B\|^2
        \quad\text{or else}\quad
        b \leftarrow \min\Bigl(b_{\max}, \max\bigl(b + 1,\ b'(\widehat{\operatorname{tr}\Sigma},\
        \theta^2\|g_B\|^2)\bigr)\Bigr);

    η = η₀ throughout. The left side estimates E‖g_B − ∇f‖², so the test asks that the
    batch gradient be within a relative error θ of the true one, in expectation.

    Default θ = 0.5, the value of the authors' experiments. Where ours differs, and why:

    * the authors use the test inside their own methods (a gradient method and a subsampled
      Newton-CG method, with their own step lengths); here the step is plain SGD with the
      fixed η₀, as for every policy of the toolkit, so that a comparison isolates the
      batch-size rule;
    * their variance is the ℓ₁ norm of the vector of per-coordinate sample variances, which
      is tr Σ̂ here (the same number);
    * we multiply by the finite-population factor c_b = 1 − b/n when batches are drawn
      without replacement (1 with replacement): the test is then exact for a shuffling
      loader, and equal to the authors' whenever b ≪ n;
    * the test runs every τ steps (τ = 1, the authors' every iteration, by default), and b
      is capped at b_max (which a simulator keeps ≤ n on a finite sum).
    """

    b0: int
    eta0: float
    theta: float = 0.5
    b_max: int = 2**62
    eta_max: float = math.inf
    tau: int = 1

    kind = "norm_test"
    State = GrowthState

    def __post_init__(self):
        object.__setattr__(self, "theta", float(check_positive(self.theta, "theta", "NormTest")))
        object.__setattr__(self, "tau", check_integer(self.tau, "tau", "NormTest", minimum=1))
        self._validate_common()

    def needs(self) -> Needs:
        return Needs(("grad_sq", "trace_var"), self.tau, "after_update")

    def initial_values(self) -> dict:
        return dict(stage=0, batch_size=self.b0, lr=self.eta0, step=0, samples=0, check_samples=0, stopped=False)

    def advance(self, ops, st, stats: Statistics):
        c = self.clock(ops, st, stats, ("grad_sq", "trace_var"), self.tau)
        g2, var = _read(ops, c, stats.grad_sq), _read(ops, c, stats.trace_var)
        n = ops.to_float(stats.population)
        b = st.batch_size
        bound = self.theta**2 * g2
        fails = c.ok & ((1.0 - b / n) * var > bound * b)
        return grow_on_failure(ops, self, st, c, fails, ops.ratio(var, bound + var / n))


@dataclass(frozen=True)
class InnerProductTest(Policy):
    r"""The augmented inner-product test of Bollapragada, Byrd & Nocedal (2018), "Adaptive sampling
    strategies for stochastic optimization", as a batch-size policy for SGD.

    On every τ-th step the batch must pass both conditions

    .. math::

        \frac{c_b}{b}\,\widehat V_{\rm ip} \le \theta^2 \|g_B\|^4
        \quad\text{(inner product)}, \qquad
        \frac{c_b}{b}\,\widehat V_{\perp} \le \nu^2 \|g_B\|^2
        \quad\text{(orthogonality)},

    with V̂_⊥ = tr Σ̂ − V̂_ip/‖g_B‖² (= tr Σ̂ when g_B = 0); if either fails,
    b ← min(b_max, max(b + 1, b'(V̂_ip, θ²‖g_B‖⁴), b'(V̂_⊥, ν²‖g_B‖²))) (module docstring),
    the smallest batch that passes both conditions (our reading of the authors' rule: a
    third-party reimplementation takes the smaller of the two sizes, which can leave one test
    failing); η = η₀.

    The first condition bounds the variance of the component of the per-sample gradients
    along g_B, relative to ‖g_B‖⁴: it asks that −g_B be a descent direction with high
    probability, and it is looser than the norm test, which bounds the variance in every
    direction; the second bounds the variance orthogonal to g_B, which the first cannot see,
    with a loose tolerance ν.

    Defaults θ = 0.9 and ν = 5.84, the values of the authors' experiments. Where ours
    differs, and why: plain SGD with the fixed η₀ (the step-size rule is not what a
    comparison of batch-size rules should vary), the finite-population factor c_b
    without replacement (1 with replacement; exact for a shuffling loader, equal to theirs
    when b ≪ n), the check every τ steps (τ = 1, theirs, by default) and the cap b_max.
    Read against :class:`NormTest`: since V̂_ip/‖g_B‖² + V̂_⊥ = tr Σ̂, a batch that passes both
    conditions passes the norm test with θ_norm² = θ² + ν², so the defaults (0.9, 5.84) are as
    loose as a norm test with θ ≈ 5.9, against the norm test's default θ = 0.5; the two peers
    at their defaults are different operating points, not two versions of one test.
    """

    b0: int
    eta0: float
    theta: float = 0.9
    nu: float = 5.84
    b_max: int = 2**62
    eta_max: float = math.inf
    tau: int = 1

    kind = "inner_product_test"
    State = GrowthState

    def __post_init__(self):
        object.__setattr__(self, "theta", float(check_positive(self.theta, "theta", "InnerProductTest")))
        object.__setattr__(self, "nu", float(check_positive(self.nu, "nu", "InnerProductTest")))
        object.__setattr__(self, "tau", check_integer(self.tau, "tau", "InnerProductTest", minimum=1))
        self._validate_common()

    def needs(self) -> Needs:
        return Needs(("grad_sq", "trace_var", "inner_var"), self.tau, "after_update")

    def initial_values(self) -> dict:
        return dict(stage=0, batch_size=self.b0, lr=self.eta0, step=0, samples=0, check_samples=0, stopped=False)

    def advance(self, ops, st, stats: Statistics):
        c = self.clock(ops, st, stats, ("grad_sq", "trace_var", "inner_var"), self.tau)
        g2 = _read(ops, c, stats.grad_sq)
        var, inner = _read(ops, c, stats.trace_var), _read(ops, c, stats.inner_var)
        n = ops.to_float(stats.population)
        b = st.batch_size
        c_b = 1.0 - b / n
        orth = ops.where(g2 > 0, ops.maximum(var - ops.ratio(inner, g2), 0.0), var)
        inner_bound = self.theta**2 * g2 * g2
        orth_bound = self.nu**2 * g2
        fails = c.ok & ((c_b * inner > inner_bound * b) | (c_b * orth > orth_bound * b))
        required = ops.maximum(ops.ratio(inner, inner_bound + inner / n), ops.ratio(orth, orth_bound + orth / n))
        return grow_on_failure(ops, self, st, c, fails, required)
