r"""Proposition 1: the upper bound on min_{t<T} E‖∇f(θ_t)‖² and its three cases.

For mini-batch SGD θ_{t+1} = θ_t − η_t ∇f_{B_t}(θ_t) under (A1)–(A3), with
learning rates 0 < η_t ≤ η_max < 2/L and batch sizes b_t,

.. math::

    \min_{t<T} \mathbb{E}\|\nabla f(\theta_t)\|^2 \le
    \underbrace{\frac{2\Delta}{(2 - L\eta_{\max}) \sum_{t<T} \eta_t}}_{B_T}
    + \underbrace{\frac{L\sigma^2}{2 - L\eta_{\max}}
      \frac{\sum_{t<T} \varphi(b_t)\,\eta_t^2 / b_t}{\sum_{t<T} \eta_t}}_{V_T},

with φ(b) = 1 with replacement (variance σ²/b) and φ(b) = (n − b)/(n − 1)
without replacement from n samples. The expressions :data:`BIAS_EXPR` and
:data:`VARIANCE_EXPR` are written once, in the two sums Σ η_t (``sum_eta``) and
Σ φ(b_t)η_t²/b_t (``sum_eta2_b``); everything else is derived from them:

* :func:`proposition1_bound` — numbers: the bound after every T of given sequences
  (``lambdify`` of the same expressions over cumulative sums);
* :func:`derive_constant_case` — case (i), constant b and η: C₁/T + C₂φ(b)/b;
* :func:`derive_polynomial_growth` — case (ii), b_t = (a t + b₀)^c with constant η:
  O(1/T) for c > 1, O(log T / T) for c = 1, O(T^{−c}) for 0 < c < 1, per step or
  per stage (b_m held for K steps; the same orders in the number of stages M);
* :func:`derive_exponential_stages` — case (iii), b_m = b₀δ^m, η_m = η₀γ^m for K
  steps each, M stages: O(γ^{−M}) for the squared norm (O(γ^{−M/2}) for the norm)
  when 1 < γ < √δ.

Legend: Δ = f(θ₀) − f_*, L smoothness, σ² variance of one stochastic gradient,
η_t and b_t learning rate and batch size of step t, T steps, φ the variance factor,
C₁ = 2Δ/(η(2 − Lη)), C₂ = Lσ²η/(2 − Lη) (:mod:`sfotheory.complexity`), a, c, b₀
polynomial growth, δ, γ per-stage growth factors, K steps per stage, M stages.

>>> c = ProblemConstants(L=1.0, sigma2=1.0, gap=1.0)
>>> r = proposition1_bound(c, etas=np.full(4, 1.0), batch_sizes=np.full(4, 8.0))
>>> r.total.round(4).tolist()     # C₁/T + C₂/b = 2/T + 1/8
[2.125, 1.125, 0.7917, 0.625]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import sympy as sp

from . import symbols as S
from .complexity import C1_EXPR, C2_EXPR, variance_factor_expr
from .constants import ProblemConstants, VarianceModel, WithoutReplacement, WithReplacement
from .validation import check_in_range, check_positive, fail

__all__ = [
    "BIAS_EXPR",
    "BOUND_EXPR",
    "VARIANCE_EXPR",
    "BoundTrace",
    "ConstantCase",
    "ExponentialStagesOrder",
    "PolynomialGrowthOrder",
    "POLYNOMIAL_REGIMES",
    "derive_constant_case",
    "derive_exponential_stages",
    "derive_polynomial_growth",
    "general_bound",
    "proposition1_bound",
]

#: B_T = 2Δ / ((2 − Lη_max) Σ_t η_t), the bias term of Proposition 1.
BIAS_EXPR = 2 * S.gap / ((2 - S.L * S.eta_max) * S.sum_eta)
#: V_T = Lσ² / (2 − Lη_max) · (Σ_t φ(b_t)η_t²/b_t) / (Σ_t η_t), the variance term of Proposition 1.
VARIANCE_EXPR = S.L * S.sigma2 / (2 - S.L * S.eta_max) * S.sum_eta2_b / S.sum_eta
#: B_T + V_T.
BOUND_EXPR = BIAS_EXPR + VARIANCE_EXPR

_ARGS = (S.L, S.sigma2, S.gap, S.eta_max, S.sum_eta, S.sum_eta2_b)
_NUMERIC = sp.lambdify(_ARGS, (BIAS_EXPR, VARIANCE_EXPR), modules="numpy")


def general_bound(sum_eta, sum_eta2_b, eta_max=S.eta_max, *, part: str = "total") -> sp.Expr:
    """The Proposition 1 bound with the two sums (and η_max) replaced by expressions.

    ``part`` is ``"bias"`` (B_T), ``"variance"`` (V_T) or ``"total"`` (B_T + V_T).

    >>> bias = general_bound(S.T * S.eta, S.T * S.eta**2 / S.b, S.eta, part="bias")
    >>> sp.simplify(bias - C1_EXPR / S.T)                  # B_T = C₁/T in case (i)
    0
    """
    expr = {"bias": BIAS_EXPR, "variance": VARIANCE_EXPR, "total": BOUND_EXPR}.get(part)
    if expr is None:
        fail("part", "general_bound", "one of 'bias', 'variance', 'total'", part)
    return expr.subs({S.sum_eta: sum_eta, S.sum_eta2_b: sum_eta2_b, S.eta_max: eta_max})


# -- numbers -----------------------------------------------------------------------------------------

class BoundTrace(NamedTuple):
    """Proposition 1 after each T = 1, 2, …: arrays shaped like the broadcast input (steps last)."""

    bias: np.ndarray      #: B_T
    variance: np.ndarray  #: V_T
    total: np.ndarray     #: B_T + V_T, the bound on min_{t<T} E‖∇f(θ_t)‖²


def proposition1_bound(constants: ProblemConstants, etas, batch_sizes, eta_max=None,
                       variance: VarianceModel = WithReplacement()) -> BoundTrace:
    r"""The Proposition 1 bound after every number of steps T of given sequences η_t, b_t.

    .. math::

        \text{total}[..., T-1] = \frac{2\Delta}{(2 - L\eta_{\max})\sum_{t<T}\eta_t}
        + \frac{L\sigma^2}{2 - L\eta_{\max}}
          \frac{\sum_{t<T}\varphi(b_t)\eta_t^2/b_t}{\sum_{t<T}\eta_t}

    ``etas`` and ``batch_sizes`` broadcast together; the step axis is the last one
    and leading axes are independent runs (e.g. configurations). ``eta_max`` is a
    scalar or an array over the leading axes (shape ``etas.shape[:-1]``); every η_t
    must satisfy η_t ≤ η_max < 2/L. With ``eta_max=None`` the bound after T steps
    uses the running maximum max_{t'<T} η_{t'}, the smallest η_max that is valid for
    those T steps. ``variance`` chooses φ: :class:`WithReplacement` (φ = 1) or
    :class:`WithoutReplacement` (φ(b) = (n − b)/(n − 1), b ≤ n).

    >>> c = ProblemConstants(L=1.0, sigma2=1.0, gap=1.0)
    >>> r = proposition1_bound(c, np.full(2, 1.0), np.array([[4.0, 4.0], [8.0, 8.0]]))
    >>> r.bias.tolist(), r.variance.tolist()        # 2/T, and C₂/b for b = 4 and b = 8
    ([[2.0, 1.0], [2.0, 1.0]], [[0.25, 0.25], [0.125, 0.125]])
    >>> proposition1_bound(c, [1.5, 2.0], [8, 8])
    Traceback (most recent call last):
    ...
    sfotheory.validation.ParameterError: The 'etas' parameter of proposition1_bound must be > 0 and < 2/L = 2 (Proposition 1 needs eta_t <= eta_max < 2/L). Got etas=[1.5, 2. ] instead.
    """
    where = "proposition1_bound"
    if not isinstance(constants, ProblemConstants):
        fail("constants", where, "a ProblemConstants record", constants, cls=TypeError)
    if not isinstance(variance, VarianceModel):
        fail("variance", where, "WithReplacement() or WithoutReplacement(n)", variance, cls=TypeError)
    limit_text = f"2/L = {constants.eta_limit:.6g}"
    reason = "Proposition 1 needs eta_t <= eta_max < 2/L"
    etas = np.asarray(check_positive(etas, "etas", where, allow_array=True), dtype=float)
    batch = np.asarray(check_positive(batch_sizes, "batch_sizes", where, allow_array=True), dtype=float)
    if isinstance(variance, WithoutReplacement) and np.any(batch > variance.n):
        fail("batch_sizes", where, f"<= n = {variance.n}", batch_sizes,
             reason="a batch drawn without replacement cannot exceed the data set")
    shape = np.broadcast_shapes(etas.shape, batch.shape)
    if len(shape) == 0 or shape[-1] == 0:
        fail("etas", where, "an array with a non-empty step axis (the last one)", etas)
    if eta_max is None:
        check_in_range(etas, 0.0, constants.eta_limit, "etas", where, low_strict=True, allow_array=True,
                       high_text=limit_text, reason=reason)
        eta_cap = np.maximum.accumulate(np.broadcast_to(etas, shape), axis=-1)
    else:
        eta_max = np.asarray(check_in_range(eta_max, 0.0, constants.eta_limit, "eta_max", where, low_strict=True,
                                            allow_array=True, high_text=limit_text, reason=reason), dtype=float)
        try:
            eta_cap = np.broadcast_to(eta_max[..., None], shape)
        except ValueError:
            fail("eta_max", where, f"a scalar or an array broadcastable to the leading shape {shape[:-1]}", eta_max)
        if np.any(etas > eta_cap):
            fail("etas", where, "<= eta_max at every step", etas, reason=reason)
    phi = variance.factor(batch)
    sum_eta = np.cumsum(np.broadcast_to(etas, shape), axis=-1)
    sum_var = np.cumsum(np.broadcast_to(phi * etas**2 / batch, shape), axis=-1)
    bias, var = _NUMERIC(constants.L, constants.sigma2, constants.gap, eta_cap, sum_eta, sum_var)
    bias = np.broadcast_to(np.asarray(bias, dtype=float), shape).copy()
    var = np.broadcast_to(np.asarray(var, dtype=float), shape).copy()
    return BoundTrace(bias=bias, variance=var, total=bias + var)


# -- case (i): constant b and η ------------------------------------------------------------------------

@dataclass(frozen=True)
class ConstantCase:
    """Proposition 1 (i): the general bound at η_t = η_max = η, b_t = b, written A/T + B.

    ``steps_coefficient`` A and ``floor`` B are read off the bound (B = lim_{T→∞}, A = (bound − B)·T);
    they equal C₁ and C₂φ(b)/b. The floor is positive: the bound does not vanish unless b grows.
    """

    variance: str
    bound: sp.Expr
    steps_coefficient: sp.Expr
    floor: sp.Expr


@functools.lru_cache(maxsize=None)
def derive_constant_case(variance: str = "with_replacement") -> ConstantCase:
    """Case (i): substitute Σ η_t = Tη, Σ φ(b)η²/b = Tφ(b)η²/b and η_max = η into Proposition 1.

    >>> d = derive_constant_case()
    >>> sp.simplify(d.steps_coefficient - C1_EXPR), sp.simplify(d.floor - C2_EXPR / S.b)
    (0, 0)
    """
    if variance not in ("with_replacement", "without_replacement"):
        fail("variance", "derive_constant_case", "'with_replacement' or 'without_replacement'", variance)
    bound = general_bound(S.T * S.eta, S.T * variance_factor_expr(variance) * S.eta**2 / S.b, S.eta)
    floor = sp.simplify(sp.limit(bound, S.T, sp.oo))
    steps_coefficient = sp.simplify((bound - floor) * S.T)
    return ConstantCase(variance=variance, bound=bound, steps_coefficient=steps_coefficient, floor=floor)


# -- case (ii): polynomial growth of b with constant η ---------------------------------------------------

#: The three regimes of case (ii) and the exponent c written with the positive symbol s.
POLYNOMIAL_REGIMES = {"superlinear": 1 + S.s, "linear": sp.Integer(1), "sublinear": 1 / (1 + S.s)}


@dataclass(frozen=True)
class PolynomialGrowthOrder:
    r"""Proposition 1 (ii) for one regime of c, derived by sympy (in C₁, C₂; constant η).

    ``bound`` is the exact bound, with the sum Σ_{x<X} (a x + b₀)^{−c} left as a sympy
    ``Sum``. With f(x) = (a x + b₀)^{−c}, which is decreasing in x ≥ 0,

    .. math::

        \int_0^X f \;\le\; \sum_{x<X} f(x) \;\le\; f(0) + \int_0^X f,

    so the bound lies between ``bound_lower`` and ``bound_upper`` (the sum replaced by
    ``sum_lower`` and ``sum_upper``), and ``constant_lower`` = lim bound_lower/rate and
    ``constant_upper`` = lim bound_upper/rate are both finite and > 0: the bound is Θ(rate).
    ``variable`` is T (per step) or M (per stage, b_m held for K steps).

    >>> d = derive_polynomial_growth("linear")        # c = 1, a = b₀ = 1, T = 10: Σ 1/(t + 1) = H₁₀
    >>> values = {S.a: 1, S.b0: 1, S.T: 10}
    >>> float(d.sum_lower.subs(values)) <= sum(1 / (t + 1) for t in range(10)) <= float(d.sum_upper.subs(values))
    True
    """

    regime: str
    per: str
    exponent: sp.Expr
    variable: sp.Symbol
    batch: sp.Expr
    bound: sp.Expr
    integral: sp.Expr
    sum_lower: sp.Expr
    sum_upper: sp.Expr
    bound_lower: sp.Expr
    bound_upper: sp.Expr
    rate: sp.Expr
    constant_lower: sp.Expr
    constant_upper: sp.Expr


@functools.lru_cache(maxsize=None)
def _c1_c2_substitution() -> dict:
    """Δ and σ² in terms of C₁, C₂ (inverting C1_EXPR and C2_EXPR): constant-η bounds in C₁, C₂."""
    (gap,) = sp.solve(sp.Eq(S.C1, C1_EXPR), S.gap)
    (sigma2,) = sp.solve(sp.Eq(S.C2, C2_EXPR), S.sigma2)
    return {S.gap: gap, S.sigma2: sigma2}


@functools.lru_cache(maxsize=None)
def derive_polynomial_growth(regime: str, per: str = "step") -> PolynomialGrowthOrder:
    r"""Case (ii): b = (a x + b₀)^c with constant η, per step (x = t < T) or per stage (x = m < M, K steps each).

    Per step, Σ_t η_t = ηT and Σ_t η²/b_t = η² Σ_{t<T} (a t + b₀)^{−c}, so the bound is
    (C₁ + C₂ Σ_{t<T}(a t + b₀)^{−c}) / T. Per stage, Σ_t η_t = ηKM and the bound is
    (C₁/K + C₂ Σ_{m<M}(a m + b₀)^{−c}) / M: the same orders in M (the stage form
    b_m = b₀ + a m of Algorithm 2's linear scheduler is the ``"linear"`` regime; docs/theory.md,
    "Proposition 1"). Regimes (s > 0):

    ============= =========== ============
    regime        c           rate
    ============= =========== ============
    superlinear   1 + s       1/T
    linear        1           log T / T
    sublinear     1/(1 + s)   T^{−c}
    ============= =========== ============

    >>> d = derive_polynomial_growth("linear")
    >>> sp.simplify(d.rate - sp.log(S.T) / S.T), sp.simplify(d.constant_upper - S.C2 / S.a)
    (0, 0)
    """
    where = "derive_polynomial_growth"
    if regime not in POLYNOMIAL_REGIMES:
        fail("regime", where, f"one of {sorted(POLYNOMIAL_REGIMES)}", regime)
    if per not in ("step", "stage"):
        fail("per", where, "'step' or 'stage'", per)
    c = POLYNOMIAL_REGIMES[regime]
    x, X, steps = (S.t, S.T, 1) if per == "step" else (S.m, S.M, S.K)
    batch = (S.a * x + S.b0) ** c
    inverse_sum = sp.Sum(1 / batch, (x, 0, X - 1))
    bound = sp.simplify(general_bound(S.eta * steps * X, S.eta**2 * steps * inverse_sum, S.eta)
                        .subs(_c1_c2_substitution()))
    integral = sp.integrate(1 / batch, (x, 0, X), conds="none")
    sum_lower = integral
    sum_upper = (1 / batch).subs(x, 0) + integral
    bound_lower, bound_upper = bound.subs(inverse_sum, sum_lower), bound.subs(inverse_sum, sum_upper)
    # Rate: the slowest-decaying term (the variance term; the C₁ term is O(1/X)).
    rate = {"superlinear": 1 / X, "linear": sp.log(X) / X, "sublinear": X ** (-c)}[regime]
    constant_lower = sp.simplify(sp.limit(bound_lower / rate, X, sp.oo))
    constant_upper = sp.simplify(sp.limit(bound_upper / rate, X, sp.oo))
    return PolynomialGrowthOrder(regime=regime, per=per, exponent=c, variable=X, batch=batch, bound=bound,
                                 integral=integral, sum_lower=sum_lower, sum_upper=sum_upper,
                                 bound_lower=bound_lower, bound_upper=bound_upper, rate=rate,
                                 constant_lower=constant_lower, constant_upper=constant_upper)


# -- case (iii): exponential growth per stage ---------------------------------------------------------------

@dataclass(frozen=True)
class ExponentialStagesOrder:
    r"""Proposition 1 (iii): b_m = b₀δ^m, η_m = η₀γ^m for K steps each, M stages.

    ``sum_eta`` = K η₀ (γ^M − 1)/(γ − 1) and
    ``sum_eta2_b`` = K (η₀²/b₀)(1 − (γ²/δ)^M)/(1 − γ²/δ)
    (geometric sums by ``Sum.doit``; sympy keeps the γ = 1 and γ² = δ branches as a
    Piecewise), ``bound`` the general bound with them. η_max is a fixed cap on every η_m
    used, so ``validity`` (η₀γ^{M−1} ≤ η_max) must hold: M is capped, see
    :func:`sfotheory.stages.max_lr_increases`; the order is that of the bound for a
    fixed η_max < 2/L. ``constant`` = lim_{M→∞} bound·γ^M, finite and > 0 for
    1 < γ < √δ (taken with γ = 1 + s, δ = γ²(1 + u), s, u > 0, then written back in
    γ, δ); ``norm_constant`` = lim √bound·γ^{M/2} = √constant.
    """

    sum_eta: sp.Expr
    sum_eta2_b: sp.Expr
    bound: sp.Expr
    largest_eta: sp.Expr
    validity: sp.Basic
    substitution: dict
    rate: sp.Expr
    constant: sp.Expr
    norm_rate: sp.Expr
    norm_constant: sp.Expr


@functools.lru_cache(maxsize=None)
def derive_exponential_stages() -> ExponentialStagesOrder:
    r"""Case (iii): the geometric sums, the bound and its order O(γ^{−M}) (norm: O(γ^{−M/2})).

    .. math::

        \lim_{M\to\infty} \gamma^M\,(B + V) = \frac{\gamma - 1}{2 - L\eta_{\max}}
        \Bigl(\frac{2\Delta}{K\eta_0} + \frac{L\sigma^2\eta_0}{b_0(1 - \gamma^2/\delta)}\Bigr)

    >>> d = derive_exponential_stages()
    >>> target = (S.gamma - 1) / (2 - S.L * S.eta_max) * (
    ...     2 * S.gap / (S.K * S.eta0) + S.L * S.sigma2 * S.eta0 / (S.b0 * (1 - S.gamma**2 / S.delta)))
    >>> sp.simplify(d.constant - target)
    0
    """
    K, M, m = S.K, S.M, S.m
    eta_m, b_m = S.eta0 * S.gamma**m, S.b0 * S.delta**m
    sum_eta = sp.Sum(K * eta_m, (m, 0, M - 1)).doit()
    sum_eta2_b = sp.Sum(K * eta_m**2 / b_m, (m, 0, M - 1)).doit()
    bound = general_bound(sum_eta, sum_eta2_b)
    substitution = {S.gamma: 1 + S.s, S.delta: (1 + S.s) ** 2 * (1 + S.u)}
    back = {S.s: S.gamma - 1, S.u: S.delta / S.gamma**2 - 1}
    # 1/(2 − Lη_max) > 0 does not depend on M: take the limit of the rest, divide it back.
    margin = 2 - S.L * S.eta_max
    scaled = sp.piecewise_fold(bound.subs(substitution)) * margin
    rate = S.gamma ** (-M)
    limit = sp.limit(scaled / rate.subs(substitution), M, sp.oo)
    constant = sp.simplify(sp.simplify(limit).subs(back) / margin)
    norm_limit = sp.limit(sp.sqrt(scaled) / sp.sqrt(rate.subs(substitution)), M, sp.oo)
    norm_constant = sp.simplify(sp.simplify(norm_limit).subs(back) / sp.sqrt(margin))
    largest_eta = S.eta0 * S.gamma ** (M - 1)
    return ExponentialStagesOrder(sum_eta=sum_eta, sum_eta2_b=sum_eta2_b, bound=bound, largest_eta=largest_eta,
                                  validity=sp.Le(largest_eta, S.eta_max), substitution=substitution, rate=rate,
                                  constant=constant, norm_rate=S.gamma ** (-M / 2), norm_constant=norm_constant)
