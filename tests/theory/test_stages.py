"""The theory of the stage law (docs/theory.md, "Stage thresholds"): ε_m, γ < √δ and the cap on LR increases.

The numbers (b_m, η_m, ε_m) come from the rule (:func:`sfotheory.rule.stage_values`) only; here
they are compared with the expressions :mod:`sfotheory.stages` derives.
"""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sfotheory import symbols as S
from sfotheory.complexity import derive_critical_batch_size
from sfotheory.rule import adaptive_exponential, adaptive_linear, stage_values
from sfotheory.stages import (
    derive_lr_increases,
    derive_stage_thresholds,
    derive_variance_condition,
    max_lr_increases,
)
from sfotheory.validation import ParameterError
from tests.golden import PAPER_STAGES

PAPER = dict(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=1000, b_max=4096)

#: ε₀√(b₀/b) as sympy derives it (b_m the critical batch size of ε_m), turned into numbers here.
derived_threshold = sp.lambdify((S.eps0, S.b0, S.b), derive_stage_thresholds().eps_m, modules="numpy")


# -- closed-form tables -------------------------------------------------------------------------------------

@pytest.mark.parametrize("m, b_m, eta_m, eps_m", PAPER_STAGES)
def test_paper_default_thresholds_derived(m, b_m, eta_m, eps_m):
    assert derived_threshold(0.5, 8, b_m) == pytest.approx(eps_m, rel=1e-14)


def test_derived_thresholds_agree_with_the_rule_for_the_paper_defaults():
    s = adaptive_exponential(**PAPER)
    b, _, eps = stage_values(s, np.arange(12))
    np.testing.assert_allclose(derived_threshold(PAPER["eps0"], PAPER["b0"], b), eps, rtol=1e-15)


@pytest.mark.parametrize("eta0, gamma, L, eta_max, expected", [
    (0.1, 1.4, 1.0, None, 8),      # 0.1·1.4⁸ = 1.4758 < 2 < 0.1·1.4⁹ = 2.0661
    (0.1, 1.4, 2.0, None, 6),      # 2/L = 1: 0.1·1.4⁶ = 0.7530 < 1 < 0.1·1.4⁷ = 1.0541
    (0.1, 1.4, None, 1.0, 6),      # η_max = 1: the same crossing, ≤ instead of <
    (0.1, 1.4, 1.0, 1.0, 6),       # both: the tighter one
    (0.1, 1.4, 1.0, 1e9, 8),       # a loose η_max changes nothing
    (0.5, 2.0, 1.0, None, 1),      # 0.5·2 = 1 < 2; 0.5·4 = 2 is not < 2 (exact crossing)
    (0.125, 2.0, 1.0, None, 3),    # 0.125·2⁴ = 2 exactly: strict, so 3
    (0.125, 2.0, None, 2.0, 4),    # ... but η₀γ⁴ = η_max is allowed (≤)
    (1.9, 1.1, 1.0, None, 0),      # 1.9·1.1 = 2.09: no increase at all
    (0.1, 1.0, 1.0, None, math.inf),  # γ = 1: a constant LR never reaches 2/L
    (0.1, 1.0, None, 0.5, math.inf),
])
def test_max_lr_increases_table(eta0, gamma, L, eta_max, expected):
    assert max_lr_increases(eta0, gamma, L=L, eta_max=eta_max) == expected


@pytest.mark.parametrize("args, kwargs, name, fragment", [
    ((2.0, 1.4), dict(L=1.0), "eta0", "< 2/L = 2"),
    ((2.5, 1.4), dict(L=1.0), "eta0", "< 2/L = 2"),
    ((0.6, 1.4), dict(eta_max=0.5), "eta0", "<= eta_max = 0.5"),
    ((0.1, 0.9), dict(L=1.0), "gamma", ">= 1"),
    ((0.1, 1.4), dict(L=-1.0), "L", "> 0"),
    ((0.1, 1.4), dict(L=1.0, eta_max=0.0), "eta_max", "> 0"),
    ((0.1, 1.4), dict(), "L", "given (or eta_max given)"),
    ((float("nan"), 1.4), dict(L=1.0), "eta0", "finite"),
    ((0.1, float("inf")), dict(L=1.0), "gamma", "finite"),
])
def test_max_lr_increases_bad_input(args, kwargs, name, fragment):
    with pytest.raises(ParameterError) as info:
        max_lr_increases(*args, **kwargs)
    msg = str(info.value)
    assert f"The '{name}' parameter of max_lr_increases must be" in msg
    assert fragment in msg
    assert f"Got {name}=" in msg


# -- hypothesis invariants -----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(delta=st.floats(1.01, 8.0), b0=st.integers(1, 256), eps0=st.floats(1e-3, 10.0),
       log2_cap=st.integers(0, 20), gamma_share=st.floats(0.0, 0.999))
@example(delta=2.0, b0=8, eps0=0.5, log2_cap=9, gamma_share=0.98994949)  # γ = 1.4 = 0.98995·√2
def test_derived_thresholds_agree_with_the_rule_which_never_increases_them(delta, b0, eps0, log2_cap, gamma_share):
    gamma = max(1.0, gamma_share * math.sqrt(delta))
    s = adaptive_exponential(b0=b0, eta0=0.1, eps0=eps0, delta=delta, gamma=gamma, tau=10,
                             b_max=b0 * 2**log2_cap)
    # Stages while b₀δ^m stays far below 2^63 (stage_values computes ⌈b₀δ^m⌉ in int64 before capping).
    stages = min(40, int(math.log(2.0**50 / b0) / math.log(delta)))
    b, _, eps = stage_values(s, np.arange(stages))
    np.testing.assert_allclose(derived_threshold(eps0, b0, b), eps, rtol=1e-14)
    assert np.all(np.diff(eps) <= 0)
    assert eps[0] == pytest.approx(eps0, rel=1e-15)


@settings(max_examples=30, deadline=None)
@given(b0=st.integers(1, 64), increment=st.floats(0.5, 64.0), eps0=st.floats(1e-3, 10.0))
def test_derived_thresholds_agree_with_the_linear_rule(b0, increment, eps0):
    s = adaptive_linear(b0=b0, eta0=0.1, eps0=eps0, increment=increment, tau=10)
    b, _, eps = stage_values(s, np.arange(30))
    np.testing.assert_allclose(derived_threshold(eps0, b0, b), eps, rtol=1e-14)


@settings(max_examples=150, deadline=None)
@given(eta0=st.floats(1e-4, 10.0), gamma=st.floats(1.0 + 1e-6, 10.0), L=st.floats(1e-3, 100.0))
@example(eta0=0.1, gamma=1.4, L=1.0)
@example(eta0=0.5, gamma=2.0, L=1.0)
@example(eta0=0.125, gamma=2.0, L=1.0)
def test_max_lr_increases_is_exact_for_the_stability_limit(eta0, gamma, L):
    if not eta0 < 2.0 / L:
        with pytest.raises(ParameterError, match="'eta0'"):
            max_lr_increases(eta0, gamma, L=L)
        return
    m = max_lr_increases(eta0, gamma, L=L)
    assert isinstance(m, int) and m >= 0
    assert eta0 * gamma**m < 2.0 / L
    assert eta0 * gamma ** (m + 1) >= 2.0 / L
    # The closed form, up to rounding of the logarithms.
    crossing = float(derive_lr_increases().crossing_stability.subs({S.eta0: eta0, S.gamma: gamma, S.L: L}))
    assert abs(m - (math.ceil(crossing) - 1)) <= 1


@settings(max_examples=100, deadline=None)
@given(eta0=st.floats(1e-4, 1.0), gamma=st.floats(1.0 + 1e-6, 4.0), ratio=st.floats(1.0, 1e6))
@example(eta0=0.1, gamma=1.4, ratio=1.4**3)
def test_max_lr_increases_is_exact_for_eta_max(eta0, gamma, ratio):
    eta_max = eta0 * ratio
    m = max_lr_increases(eta0, gamma, eta_max=eta_max)
    assert eta0 * gamma**m <= eta_max
    assert eta0 * gamma ** (m + 1) > eta_max


@settings(max_examples=40, deadline=None)
@given(eta0=st.floats(1e-3, 1.0), gamma=st.floats(1.01, 3.0), L=st.floats(0.1, 1.9))
def test_max_lr_increases_matches_the_rule_learning_rates(eta0, gamma, L):
    if not eta0 < 2.0 / L:
        return
    m = max_lr_increases(eta0, gamma, L=L)
    s = adaptive_exponential(b0=1, eta0=eta0, eps0=1.0, delta=gamma**2 + 1.0, gamma=gamma, tau=1)
    with np.errstate(invalid="ignore", over="ignore"):  # b₀δ^m overflows int64 in stage_values; only η_m is used
        _, lr, _ = stage_values(s, np.array([m, m + 1]))
    assert lr[0] < 2.0 / L <= lr[1]


# -- symbolic identities ------------------------------------------------------------------------------------

def test_threshold_makes_b_the_critical_batch_size():
    d = derive_stage_thresholds()
    critical = derive_critical_batch_size().critical  # 2C₂/ε²
    assert sp.simplify(d.eps_of_batch - sp.sqrt(2 * S.C2 / S.b)) == 0
    assert sp.simplify(critical.subs(S.eps, d.eps_of_batch) - S.b) == 0
    assert sp.simplify(d.eps_m - S.eps0 * sp.sqrt(S.b0 / S.b)) == 0
    assert sp.simplify(d.eps_m.subs(S.b, S.b0) - S.eps0) == 0


def test_threshold_ratio_and_exponential_form():
    d = derive_stage_thresholds()
    assert sp.simplify(d.ratio - 1 / sp.sqrt(S.delta)) == 0
    assert sp.simplify(d.exponential - S.eps0 * S.delta ** (-S.m / 2)) == 0
    # ε_{m+1}/ε_m from the exponential form agrees with the ratio.
    assert sp.simplify(d.exponential.subs(S.m, S.m + 1) / d.exponential - d.ratio) == 0


def test_variance_condition_is_gamma_below_sqrt_delta():
    d = derive_variance_condition()
    assert isinstance(d.condition, sp.StrictLessThan)
    assert sp.simplify(d.condition.lhs - S.gamma) == 0
    assert sp.simplify(d.condition.rhs - sp.sqrt(S.delta)) == 0
    assert sp.simplify(d.closed_form - S.delta / (S.delta - S.gamma**2)) == 0
    assert d.boundary_sum == sp.oo
    # The raw Piecewise condition and γ < √δ agree on both sides of the boundary.
    for g, dl in [(1.4, 2.0), (1.5, 2.0), (1.0, 1.0 + 1e-9), (3.0, 8.0), (3.0, 10.0)]:
        point = {S.gamma: sp.nsimplify(g), S.delta: sp.nsimplify(dl)}
        assert bool(d.raw_condition.subs(point)) == bool(d.condition.subs(point))


def test_variance_sum_diverges_above_the_condition():
    # γ² > δ, written δ = γ²/(1 + u): sympy's condition is False there and the partial sums grow without bound.
    d = derive_variance_condition()
    above = {S.delta: S.gamma**2 / (1 + S.u)}
    assert d.raw_condition.subs(above) == sp.false
    condition = d.condition.subs(above)
    # γ < γ/√(1 + u) is false for u > 0: the ratio rhs/lhs squared is 1/(1 + u) < 1.
    assert sp.simplify((condition.rhs / condition.lhs) ** 2 - 1 / (1 + S.u)) == 0
    term = sp.powsimp(sp.simplify((S.gamma**2 / S.delta) ** S.m).subs(above), force=True)
    assert sp.simplify(term - (1 + S.u) ** S.m) == 0
    partial = sp.Sum(term, (S.m, 0, S.M - 1)).doit()
    assert sp.limit(partial, S.M, sp.oo) == sp.oo


def test_lr_crossings_solve_their_equations():
    d = derive_lr_increases()
    lr = S.eta0 * S.gamma**S.m
    assert sp.simplify(sp.expand_log(sp.log(lr.subs(S.m, d.crossing_stability)) - sp.log(2 / S.L), force=True)) == 0
    assert sp.simplify(sp.expand_log(sp.log(lr.subs(S.m, d.crossing_eta_max)) - sp.log(S.eta_max), force=True)) == 0
