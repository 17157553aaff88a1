r"""Steps, SFO complexity and the critical batch size (Proposition 2).

For constant b and η < 2/L, Proposition 1 (i) bounds
min_{t<K} E‖∇f(θ_t)‖² by C₁/K + C₂·φ(b)/b with

.. math::

    C_1 = \frac{2\Delta}{\eta(2 - L\eta)}, \qquad C_2 = \frac{L\sigma^2\eta}{2 - L\eta},

where φ(b) = 1 with replacement and φ(b) = (n − b)/(n − 1) without replacement
from n samples. Setting the bound equal to ε² gives

.. math::

    K(b) = \frac{C_1 b}{\varepsilon^2 b - C_2}, \qquad N(b) = K(b)\,b, \qquad
    b^\star = \arg\min_b N(b) = \frac{2 C_2}{\varepsilon^2}, \qquad
    K(b^\star) = \frac{2C_1}{\varepsilon^2}, \qquad N(b^\star) = \frac{4 C_1 C_2}{\varepsilon^4}

(with replacement; without replacement b* = 2C₂n / (ε²(n − 1) + C₂), capped at n).
K(b) is finite only for b > C₂/ε² (below that, ε is out of reach at any number of
steps); the functions here return ``inf`` there.

Everything is derived once with sympy (:func:`derive_critical_batch_size`) and
turned into vectorised numpy functions with ``lambdify`` from the same
expressions; nothing is typed twice.

Legend: Δ = f(θ₀) − f_*, L smoothness, σ² variance of one stochastic gradient,
η learning rate, b batch size, ε target norm, K steps, N = K·b SFO complexity.

>>> c = ProblemConstants(L=1.0, sigma2=1.0, gap=1.0)
>>> theory_constants(c, eta=1.0)
(2.0, 1.0)
>>> critical_batch_size(c, eta=1.0, eps=0.5)
8.0
>>> steps_to_eps(c, eta=1.0, eps=0.5, b=8.0), sfo_complexity(c, eta=1.0, eps=0.5, b=8.0)
(16.0, 128.0)
>>> steps_to_eps(c, eta=1.0, eps=0.5, b=4.0)
inf
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp

from . import symbols as S
from .constants import ProblemConstants, VarianceModel, WithoutReplacement, WithReplacement
from .validation import check_in_range, check_positive, fail

__all__ = [
    "CriticalBatchDerivation",
    "C1_EXPR",
    "C2_EXPR",
    "critical_batch_size",
    "critical_batch_size_sensitivity",
    "derive_critical_batch_size",
    "min_batch_size",
    "sfo_complexity",
    "steps_to_eps",
    "theory_constants",
    "variance_factor_expr",
]

#: C₁ = 2Δ / (η(2 − Lη)), the bias constant of Proposition 1 (i).
C1_EXPR = 2 * S.gap / (S.eta * (2 - S.L * S.eta))
#: C₂ = Lσ²η / (2 − Lη), the variance constant of Proposition 1 (i).
C2_EXPR = S.L * S.sigma2 * S.eta / (2 - S.L * S.eta)


@dataclass(frozen=True)
class CriticalBatchDerivation:
    """Proposition 2, derived by sympy for one variance model (all in C₁, C₂, ε, b, n).

    ``critical`` solves dN/db = 0 on the domain b > ``min_batch``;
    ``second_derivative`` is d²N/db² at b*, positive (so b* is a minimum).
    """

    variance: str
    bound: sp.Expr
    steps: sp.Expr
    sfo: sp.Expr
    min_batch: sp.Expr
    critical: sp.Expr
    second_derivative: sp.Expr
    steps_at_critical: sp.Expr
    sfo_at_critical: sp.Expr


def variance_factor_expr(variance: str):
    """φ(b): 1 with replacement, (n − b)/(n − 1) without replacement from n samples (Var = φ(b) σ²/b).

    >>> variance_factor_expr("without_replacement")
    (-b + n)/(n - 1)
    """
    return sp.Integer(1) if variance == "with_replacement" else (S.n - S.b) / (S.n - 1)


@functools.lru_cache(maxsize=None)
def derive_critical_batch_size(variance: str = "with_replacement") -> CriticalBatchDerivation:
    """Derive K(b), N(b) and b* symbolically from the bound C₁/K + C₂φ(b)/b = ε².

    >>> d = derive_critical_batch_size()
    >>> d.critical
    2*C_2/epsilon**2
    >>> d.sfo_at_critical
    4*C_1*C_2/epsilon**4
    >>> sp.simplify(derive_critical_batch_size("without_replacement").critical)
    2*C_2*n/(C_2 + epsilon**2*n - epsilon**2)
    """
    if variance not in ("with_replacement", "without_replacement"):
        fail("variance", "derive_critical_batch_size", "'with_replacement' or 'without_replacement'", variance)
    Ks = sp.Symbol("K", positive=True)
    bound = S.C1 / Ks + S.C2 * variance_factor_expr(variance) / S.b
    (steps,) = sp.solve(sp.Eq(bound, S.eps**2), Ks)
    steps = sp.factor(sp.simplify(steps))
    sfo = sp.factor(sp.simplify(steps * S.b))
    # K(b) > 0 iff its denominator is positive: the reachable domain b > min_batch.
    denominator = sp.denom(sp.together(steps))
    (min_batch,) = sp.solve(sp.Eq(denominator, 0), S.b)
    dN = sp.together(sp.diff(sfo, S.b))
    roots = [r for r in sp.solve(sp.numer(dN), S.b) if r != 0]
    d2N = sp.diff(sfo, S.b, 2)
    critical = None
    for r in roots:
        # Sign over the whole domain; without replacement n >= 2, written n -> n + 1 with n >= 1.
        if sp.simplify((r - min_batch).subs(S.n, S.n + 1)).is_positive:
            critical = sp.factor(sp.simplify(r))
    if critical is None:  # pragma: no cover - guards the derivation itself
        raise RuntimeError(f"no stationary point of N(b) above the reachable domain among {roots}")
    return CriticalBatchDerivation(
        variance=variance,
        bound=bound,
        steps=steps,
        sfo=sfo,
        min_batch=sp.simplify(min_batch),
        critical=critical,
        second_derivative=sp.factor(sp.simplify(d2N.subs(S.b, critical))),
        steps_at_critical=sp.factor(sp.simplify(steps.subs(S.b, critical))),
        sfo_at_critical=sp.factor(sp.simplify(sfo.subs(S.b, critical))),
    )


@functools.lru_cache(maxsize=None)
def _numeric(variance: str, what: str):
    d = derive_critical_batch_size(variance)
    return sp.lambdify((S.C1, S.C2, S.eps, S.b, S.n), getattr(d, what), modules="numpy")


_C12 = sp.lambdify((S.L, S.sigma2, S.gap, S.eta), (C1_EXPR, C2_EXPR), modules="numpy")
_DBSTAR_DETA = sp.lambdify(
    (S.L, S.sigma2, S.eps, S.eta),
    sp.diff(derive_critical_batch_size().critical.subs(S.C2, C2_EXPR), S.eta), modules="numpy")


def _check(constants, eta, eps, where):
    if not isinstance(constants, ProblemConstants):
        fail("constants", where, "a ProblemConstants record", constants, cls=TypeError)
    eta = check_in_range(eta, 0.0, constants.eta_limit, "eta", where, low_strict=True, allow_array=True,
                         high_text=f"2/L = {constants.eta_limit:.6g}",
                         reason="Proposition 1 needs 0 < eta < 2/L")
    eps = check_positive(eps, "eps", where, allow_array=True)
    return eta, eps


def _model(variance, where) -> tuple[str, float]:
    if not isinstance(variance, VarianceModel):
        fail("variance", where, "WithReplacement() or WithoutReplacement(n)", variance, cls=TypeError)
    return variance.name, float(variance.n) if isinstance(variance, WithoutReplacement) else np.nan


def _out(x):
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x


def theory_constants(constants: ProblemConstants, eta) -> tuple:
    """(C₁, C₂) of Proposition 1 (i) for learning rate η < 2/L."""
    eta, _ = _check(constants, eta, 1.0, "theory_constants")
    c1, c2 = _C12(constants.L, constants.sigma2, constants.gap, eta)
    return _out(c1), _out(c2)


def min_batch_size(constants: ProblemConstants, eta, eps, variance: VarianceModel = WithReplacement()):
    """The smallest b for which ε is reachable at all: C₂/ε² with replacement.

    >>> min_batch_size(ProblemConstants(1.0, 1.0, 1.0), eta=1.0, eps=0.5)
    4.0
    """
    eta, eps = _check(constants, eta, eps, "min_batch_size")
    model, n = _model(variance, "min_batch_size")
    c1, c2 = _C12(constants.L, constants.sigma2, constants.gap, eta)
    return _out(_numeric(model, "min_batch")(c1, c2, eps, 1.0, n) * np.ones_like(c2))


def critical_batch_size(constants: ProblemConstants, eta, eps, variance: VarianceModel = WithReplacement()):
    """b* = 2C₂/ε² (Proposition 2), the batch size with the fewest SFO to reach ‖∇f‖ ≤ ε.

    Without replacement from n samples, b* = 2C₂n/(ε²(n − 1) + C₂), capped at n
    (at b = n the gradient is exact). Vectorised over ``eta`` and ``eps``.

    >>> c = ProblemConstants(L=1.0, sigma2=1.0, gap=1.0)
    >>> critical_batch_size(c, eta=1.0, eps=np.array([0.5, 0.25]))
    array([ 8., 32.])
    >>> round(critical_batch_size(c, eta=1.0, eps=0.5, variance=WithoutReplacement(n=1000)), 4)
    7.9761
    """
    eta, eps = _check(constants, eta, eps, "critical_batch_size")
    model, n = _model(variance, "critical_batch_size")
    c1, c2 = _C12(constants.L, constants.sigma2, constants.gap, eta)
    b_star = _numeric(model, "critical")(c1, c2, eps, 1.0, n) * np.ones(np.broadcast(c2, eps).shape)
    if model == "without_replacement":
        b_star = np.minimum(b_star, n)
    return _out(b_star)


def _steps_or_sfo(what, constants, eta, eps, b, variance, where):
    eta, eps = _check(constants, eta, eps, where)
    model, n = _model(variance, where)
    b = check_positive(b, "b", where, allow_array=True)
    variance.check_batch_size(b, where)
    c1, c2 = _C12(constants.L, constants.sigma2, constants.gap, np.asarray(eta, dtype=float))
    b = np.asarray(b, dtype=float)
    lo = _numeric(model, "min_batch")(c1, c2, eps, 1.0, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = _numeric(model, what)(c1, c2, eps, b, n) * np.ones(np.broadcast(c2, eps, b).shape)
    # reachable iff b > C2/eps^2 (with replacement); the factor keeps b = C2/eps^2 itself out despite rounding
    return _out(np.where(np.asarray(b) > lo * (1 + 1e-12), value, np.inf))


def steps_to_eps(constants: ProblemConstants, eta, eps, b, variance: VarianceModel = WithReplacement()):
    """K(b) = C₁b/(ε²b − C₂): steps for the Proposition 1 bound to reach ε² (``inf`` if b ≤ C₂/ε²).

    Real-valued, as in the theory; round up for an integer step count.
    """
    return _steps_or_sfo("steps", constants, eta, eps, b, variance, "steps_to_eps")


def sfo_complexity(constants: ProblemConstants, eta, eps, b, variance: VarianceModel = WithReplacement()):
    """N(b) = K(b)·b = C₁b²/(ε²b − C₂): stochastic gradient evaluations to reach ε (``inf`` if unreachable)."""
    return _steps_or_sfo("sfo", constants, eta, eps, b, variance, "sfo_complexity")


def critical_batch_size_sensitivity(constants: ProblemConstants, eta, eps):
    """db*/dη = 4Lσ² / (ε²(2 − Lη)²) > 0: a larger learning rate moves b* up (with replacement).

    >>> critical_batch_size_sensitivity(ProblemConstants(1.0, 1.0, 1.0), eta=1.0, eps=0.5)
    16.0
    """
    eta, eps = _check(constants, eta, eps, "critical_batch_size_sensitivity")
    return _out(_DBSTAR_DETA(constants.L, constants.sigma2, eps, eta))
