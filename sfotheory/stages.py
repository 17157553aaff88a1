r"""The theory behind the stage law of Algorithm 2, derived symbolically (docs/theory.md, "Stage thresholds").

The numbers (b_m, η_m, ε_m) of a schedule have one owner, :func:`sfotheory.rule.stage_values`;
this module derives, as sympy expressions that the tests compare with the rule, why the
rule has the form it has.

**Thresholds.** If b_m is to be the critical batch size of stage m's target ε_m
(Proposition 2, b* = 2C₂/ε²), then

.. math::

    b_m = \frac{2C_2}{\varepsilon_m^2} \iff \varepsilon_m = \sqrt{\frac{2C_2}{b_m}}, \qquad
    \frac{\varepsilon_{m+1}}{\varepsilon_m} = \frac{1}{\sqrt\delta} \text{ when } b_{m+1} = \delta b_m,
    \qquad \varepsilon_m = \varepsilon_0\sqrt{b_0 / b_m}.

**Growth condition.** With η_m = η₀γ^m and b_m = b₀δ^m the variance term of
Proposition 1 carries Σ_m η_m²/b_m = (η₀²/b₀) Σ_m (γ²/δ)^m, bounded iff γ² < δ,
i.e. γ < √δ (:func:`derive_variance_condition`). This is the condition for the bound's
O(γ^{−M}) rate, not a divergence boundary: for √δ ≤ γ < δ the bound still vanishes, as (γ/δ)^M.

**Cap on LR increases.** Proposition 1 needs η_m < 2/L: η₀γ^m < 2/L holds for
m < log(2/(Lη₀))/log γ, so at most ⌈log(2/(Lη₀))/log γ⌉ − 1 increases
(:func:`max_lr_increases`; also a user's η_max).

Legend: m stage, b_m batch size, ε_m threshold on ‖∇f‖, δ > 1 and γ ≥ 1 per-stage
growth of b and η, b₀, η₀, ε₀ stage-0 values, C₂ = Lσ²η/(2 − Lη), L smoothness.

>>> sp.simplify(derive_stage_thresholds().eps_m - S.eps0 * sp.sqrt(S.b0 / S.b))   # ε_m = ε₀√(b₀/b_m)
0
>>> max_lr_increases(0.1, 1.4, L=1.0)          # 0.1·1.4⁸ = 1.476 < 2 < 0.1·1.4⁹ = 2.066
8
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import sympy as sp

from . import symbols as S
from .complexity import derive_critical_batch_size
from .rule import periodic, stage_values
from .validation import check_greater, check_positive, fail

__all__ = [
    "LrIncreaseDerivation",
    "StageThresholdDerivation",
    "VarianceCondition",
    "derive_lr_increases",
    "derive_stage_thresholds",
    "derive_variance_condition",
    "max_lr_increases",
]


@dataclass(frozen=True)
class StageThresholdDerivation:
    """ε_m from "b_m is the critical batch size of stage m" (b stands for b_m, ε for ε_m).

    ``eps_of_batch`` = √(2C₂/b) solves b = 2C₂/ε² for ε > 0; ``eps_m``
    = ε₀√(b₀/b) eliminates C₂ with the stage-0 pair (b₀, ε₀); ``ratio`` = ε_{m+1}/ε_m
    = 1/√δ for b_{m+1} = δ b_m; ``exponential`` = ε₀δ^{−m/2} for b_m = b₀δ^m.
    """

    eps_of_batch: sp.Expr
    eps_m: sp.Expr
    ratio: sp.Expr
    exponential: sp.Expr


@functools.lru_cache(maxsize=None)
def derive_stage_thresholds() -> StageThresholdDerivation:
    """Derive ε_m from the critical batch size of Proposition 2 (with replacement).

    >>> d = derive_stage_thresholds()
    >>> sp.simplify(d.eps_m - S.eps0 * sp.sqrt(S.b0 / S.b)), sp.simplify(d.ratio - 1 / sp.sqrt(S.delta))
    (0, 0)
    """
    critical = derive_critical_batch_size("with_replacement").critical  # 2C₂/ε²
    (eps_of_batch,) = [r for r in sp.solve(sp.Eq(S.b, critical), S.eps) if r.is_positive]
    (c2_from_stage0,) = sp.solve(sp.Eq(S.eps0, eps_of_batch.subs(S.b, S.b0)), S.C2)
    eps_m = sp.simplify(eps_of_batch.subs(S.C2, c2_from_stage0))
    ratio = sp.simplify(eps_of_batch.subs(S.b, S.delta * S.b) / eps_of_batch)
    exponential = sp.simplify(eps_m.subs(S.b, S.b0 * S.delta**S.m))
    return StageThresholdDerivation(eps_of_batch=eps_of_batch, eps_m=eps_m, ratio=ratio,
                                    exponential=exponential)


@dataclass(frozen=True)
class VarianceCondition:
    """Σ_{m≥0} (γ²/δ)^m by sympy's ``summation``: its closed form, where it converges, and the boundary.

    ``raw_condition`` is the Piecewise condition sympy returns (γ²/δ < 1),
    ``condition`` the same solved for γ (γ < √δ), ``boundary_sum`` the series at
    γ² = δ (∞: the condition is sharp).
    """

    series: sp.Expr
    closed_form: sp.Expr
    raw_condition: sp.Basic
    condition: sp.Basic
    boundary_sum: sp.Expr


@functools.lru_cache(maxsize=None)
def derive_variance_condition() -> VarianceCondition:
    """Derive γ < √δ: the variance sum Σ_m η_m²/b_m ∝ Σ_m (γ²/δ)^m stays bounded iff γ² < δ.

    >>> d = derive_variance_condition()
    >>> d.condition == sp.StrictLessThan(S.gamma, sp.sqrt(S.delta)), d.boundary_sum
    (True, oo)
    """
    term = (S.gamma**2 / S.delta) ** S.m
    series = sp.summation(term, (S.m, 0, sp.oo))
    if not isinstance(series, sp.Piecewise):  # pragma: no cover - guards the derivation itself
        raise RuntimeError(f"expected a Piecewise from summation, got {series}")
    closed_form, raw_condition = series.args[0]
    condition = sp.solve(raw_condition, S.gamma)
    boundary_sum = sp.summation(term.subs(S.delta, S.gamma**2), (S.m, 0, sp.oo))
    return VarianceCondition(series=series, closed_form=closed_form, raw_condition=raw_condition,
                             condition=condition, boundary_sum=boundary_sum)


@dataclass(frozen=True)
class LrIncreaseDerivation:
    """Where η₀γ^m crosses 2/L and η_max, solved for m by sympy (real-valued crossings)."""

    crossing_stability: sp.Expr
    crossing_eta_max: sp.Expr


@functools.lru_cache(maxsize=None)
def derive_lr_increases() -> LrIncreaseDerivation:
    """Solve η₀γ^m = 2/L and η₀γ^m = η_max for m (``check=False``: the root need not be an integer).

    >>> sp.simplify(derive_lr_increases().crossing_stability - sp.log(2 / (S.L * S.eta0)) / sp.log(S.gamma))
    0
    """
    lr = S.eta0 * S.gamma**S.m
    (stability,) = sp.solve(sp.Eq(lr, 2 / S.L), S.m, check=False)
    (cap,) = sp.solve(sp.Eq(lr, S.eta_max), S.m, check=False)
    return LrIncreaseDerivation(crossing_stability=stability, crossing_eta_max=cap)


@functools.lru_cache(maxsize=None)
def _lr_numeric():
    d = derive_lr_increases()
    return (sp.lambdify((S.eta0, S.gamma, S.L), d.crossing_stability, modules="math"),
            sp.lambdify((S.eta0, S.gamma, S.eta_max), d.crossing_eta_max, modules="math"))


def _largest_true(ok, guess: int) -> int:
    """Largest integer k ≥ 0 with ok(k), for ok monotone (True up to some k, then False) and ok(0) True."""
    lo = hi = max(0, guess)
    step = 1
    if ok(lo):
        hi = lo + 1
        while ok(hi):
            lo, hi, step = hi, hi + step, 2 * step
    else:
        while not ok(lo):
            hi, lo, step = lo, max(0, lo - step), 2 * step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def max_lr_increases(eta0, gamma, *, L=None, eta_max=None):
    r"""The largest number m of LR increases with η₀γ^m < 2/L and η₀γ^m ≤ η_max.

    Closed form (from :func:`derive_lr_increases`):

    .. math::

        m = \min\Bigl(\Bigl\lceil \frac{\log(2/(L\eta_0))}{\log\gamma} \Bigr\rceil - 1,\;
                      \Bigl\lfloor \frac{\log(\eta_{\max}/\eta_0)}{\log\gamma} \Bigr\rfloor\Bigr)

    It is used as a first guess only: the answer is then fixed by testing η_m itself (and
    its neighbours m ± 1), taken from the stage rule :func:`sfotheory.rule.stage_values`
    for the growth η ×γ per stage without a cap (so that the cap η_max is what is located),
    against 2/L computed as ``2.0 / L``; rounding in the logarithms can never give an
    off-by-one answer, and m is exactly the last stage whose η_m the rule keeps below
    both limits. Give ``L`` or ``eta_max`` or both. Returns an ``int``, or
    ``math.inf`` for γ = 1 (a constant LR never reaches either limit).

    >>> max_lr_increases(0.1, 1.4, L=1.0, eta_max=1.0)      # 0.1·1.4⁶ = 0.753, 0.1·1.4⁷ = 1.054
    6
    >>> max_lr_increases(0.5, 2.0, L=1.0)                   # 0.5·2 = 1 < 2, 0.5·4 = 2 is not < 2
    1
    >>> max_lr_increases(0.1, 1.0, L=1.0)
    inf
    >>> max_lr_increases(2.0, 1.4, L=1.0)
    Traceback (most recent call last):
    ...
    sfotheory.validation.ParameterError: The 'eta0' parameter of max_lr_increases must be < 2/L = 2 (Proposition 1 needs eta < 2/L from the first stage on). Got eta0=2.0 instead.
    """
    where = "max_lr_increases"
    eta0 = check_positive(eta0, "eta0", where)
    gamma = check_greater(gamma, 1.0, "gamma", where, strict=False,
                          reason="the learning rate never shrinks between stages")
    if L is None and eta_max is None:
        fail("L", where, "given (or eta_max given)", L, reason="without a limit the number of increases is unbounded")
    stability_limit = math.inf
    if L is not None:
        L = check_positive(L, "L", where, reason="f must be L-smooth with L > 0")
        stability_limit = 2.0 / L
        if not eta0 < stability_limit:
            fail("eta0", where, f"< 2/L = {stability_limit:.6g}", eta0,
                 reason="Proposition 1 needs eta < 2/L from the first stage on")
    cap = math.inf
    if eta_max is not None:
        cap = check_positive(eta_max, "eta_max", where)
        if eta0 > cap:
            fail("eta0", where, f"<= eta_max = {cap:.6g}", eta0,
                 reason="the first learning rate is already above the cap")
    if gamma == 1.0:
        return math.inf
    crossing_stability, crossing_cap = _lr_numeric()
    guesses = []
    if L is not None:
        guesses.append(math.ceil(crossing_stability(eta0, gamma, L)) - 1)
    if eta_max is not None:
        guesses.append(math.floor(crossing_cap(eta0, gamma, cap)))

    growth = periodic(b0=1, eta0=eta0, delta=1.0, gamma=gamma, period=1)   # η_m = η₀γ^m, uncapped

    def ok(k: int) -> bool:
        try:
            _, value, _ = stage_values(growth, k)
        except OverflowError:
            return False
        return value < stability_limit and value <= cap

    return _largest_true(ok, min(guesses))
