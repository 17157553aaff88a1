"""Proposition 1: closed-form tables, hypothesis invariants, symbolic identities, measured vs derived orders."""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sfotheory import symbols as S
from sfotheory.bounds import (
    BOUND_EXPR,
    POLYNOMIAL_REGIMES,
    BoundTrace,
    derive_constant_case,
    derive_exponential_stages,
    derive_polynomial_growth,
    general_bound,
    proposition1_bound,
)
from sfotheory.complexity import C1_EXPR, C2_EXPR, theory_constants
from sfotheory.constants import ProblemConstants, WithoutReplacement
from sfotheory.validation import ParameterError

UNIT = ProblemConstants(L=1.0, sigma2=1.0, gap=1.0)
PHI = {"with_replacement": sp.Integer(1), "without_replacement": (S.n - S.b) / (S.n - 1)}


# -- closed-form tables (hand-computed) ------------------------------------------------------------------

def test_constant_sequence_table():
    # L = σ² = Δ = η = 1, b = 8: C₁ = 2/(1·1) = 2, C₂ = 1/(2 − 1) = 1, bound = 2/T + 1/8.
    r = proposition1_bound(UNIT, np.full(4, 1.0), np.full(4, 8.0))
    assert isinstance(r, BoundTrace)
    np.testing.assert_allclose(r.bias, [2.0, 1.0, 2 / 3, 0.5], rtol=1e-15)
    np.testing.assert_allclose(r.variance, [0.125] * 4, rtol=1e-15)
    np.testing.assert_allclose(r.total, [2.125, 1.125, 2 / 3 + 0.125, 0.625], rtol=1e-15)


def test_varying_sequence_table_running_max():
    # L = 1, σ² = 2, Δ = 3, η = (0.5, 1.0), b = (2, 4), η_max = running max (0.5, then 1.0):
    #   T = 1: Ση = 0.5, Σφη²/b = 0.125, 2 − Lη_max = 1.5: B = 6/(1.5·0.5) = 8, V = (2/1.5)(0.125/0.5) = 1/3
    #   T = 2: Ση = 1.5, Σφη²/b = 0.375, 2 − Lη_max = 1:   B = 6/1.5 = 4,      V = 2·0.375/1.5 = 0.5
    r = proposition1_bound(ProblemConstants(1.0, 2.0, 3.0), [0.5, 1.0], [2.0, 4.0])
    np.testing.assert_allclose(r.bias, [8.0, 4.0], rtol=1e-14)
    np.testing.assert_allclose(r.variance, [1 / 3, 0.5], rtol=1e-14)
    np.testing.assert_allclose(r.total, [25 / 3, 4.5], rtol=1e-14)


def test_varying_sequence_table_given_eta_max():
    # Same run with η_max = 1.5, 2 − Lη_max = 0.5:
    #   T = 1: B = 6/(0.5·0.5) = 24, V = (2/0.5)(0.125/0.5) = 1;  T = 2: B = 6/(0.5·1.5) = 8, V = 4·0.375/1.5 = 1
    r = proposition1_bound(ProblemConstants(1.0, 2.0, 3.0), [0.5, 1.0], [2.0, 4.0], eta_max=1.5)
    np.testing.assert_allclose(r.bias, [24.0, 8.0], rtol=1e-14)
    np.testing.assert_allclose(r.variance, [1.0, 1.0], rtol=1e-14)


def test_without_replacement_table():
    # n = 11, b = 6: φ = (11 − 6)/10 = 0.5, so V = C₂φ/b = 1·0.5/6 = 1/12; at b = n = 11, V = 0.
    r = proposition1_bound(UNIT, np.ones(2), np.array([[6.0, 6.0], [11.0, 11.0]]), variance=WithoutReplacement(11))
    np.testing.assert_allclose(r.variance, [[1 / 12, 1 / 12], [0.0, 0.0]], atol=1e-16)
    np.testing.assert_allclose(r.bias, [[2.0, 1.0], [2.0, 1.0]], rtol=1e-15)


def test_leading_axes_and_per_run_eta_max():
    etas = np.array([[0.5, 0.5, 0.5], [1.0, 0.5, 0.25]])
    eta_max = np.array([0.5, 1.5])
    r = proposition1_bound(UNIT, etas, 8.0, eta_max=eta_max)
    assert r.total.shape == (2, 3)
    for i in range(2):
        one = proposition1_bound(UNIT, etas[i], np.full(3, 8.0), eta_max=eta_max[i])
        np.testing.assert_array_equal(r.total[i], one.total)


# -- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name, fragment", [
    (dict(etas=[0.5, 2.0], batch_sizes=[8, 8]), "etas", "< 2/L = 2"),
    (dict(etas=[0.5, 1.0], batch_sizes=[8, 8], eta_max=0.8), "etas", "<= eta_max"),
    (dict(etas=[0.5, 1.0], batch_sizes=[8, 8], eta_max=2.0), "eta_max", "< 2/L = 2"),
    (dict(etas=[0.5, -1.0], batch_sizes=[8, 8]), "etas", "> 0"),
    (dict(etas=[0.5, 1.0], batch_sizes=[8, 0]), "batch_sizes", "> 0"),
    (dict(etas=[0.5, float("nan")], batch_sizes=[8, 8]), "etas", "finite"),
    (dict(etas=[0.5, 1.0], batch_sizes=[8, 12], variance=WithoutReplacement(10)), "batch_sizes", "<= n = 10"),
    (dict(etas=0.5, batch_sizes=8), "etas", "step axis"),
    (dict(etas=np.ones((2, 3)) * 0.5, batch_sizes=8, eta_max=np.ones(3)), "eta_max", "broadcastable"),
])
def test_bad_input_names_parameter_rule_and_value(kwargs, name, fragment):
    with pytest.raises(ParameterError) as info:
        proposition1_bound(UNIT, **kwargs)
    msg = str(info.value)
    assert f"The '{name}' parameter of proposition1_bound must be" in msg
    assert fragment in msg
    assert f"Got {name}=" in msg


def test_bad_input_types():
    with pytest.raises(TypeError, match="'constants' parameter"):
        proposition1_bound({"L": 1.0}, [0.5], [8])
    with pytest.raises(TypeError, match="'variance' parameter"):
        proposition1_bound(UNIT, [0.5], [8], variance="with_replacement")
    with pytest.raises(ParameterError, match="'part' parameter"):
        general_bound(S.T, S.T, part="everything")
    with pytest.raises(ParameterError, match="'regime' parameter"):
        derive_polynomial_growth("quadratic")
    with pytest.raises(ParameterError, match="'per' parameter"):
        derive_polynomial_growth("linear", per="epoch")


# -- hypothesis invariants --------------------------------------------------------------------------------

positive = st.floats(min_value=1e-3, max_value=1e3)
fraction = st.floats(min_value=1e-3, max_value=0.999)  # η = fraction · 2/L


@settings(max_examples=60, deadline=None)
@given(L=positive, sigma2=positive, gap=positive, frac=fraction, b=st.floats(1.0, 1e4),
       steps=st.integers(1, 50))
@example(L=1.0, sigma2=1.0, gap=1.0, frac=0.5, b=8.0, steps=4)
def test_constant_sequences_equal_c1_over_t_plus_c2_over_b(L, sigma2, gap, frac, b, steps):
    c = ProblemConstants(L, sigma2, gap)
    eta = frac * 2 / L
    c1, c2 = theory_constants(c, eta)
    r = proposition1_bound(c, np.full(steps, eta), np.full(steps, b))
    T = np.arange(1, steps + 1)
    np.testing.assert_allclose(r.total, c1 / T + c2 / b, rtol=1e-10)
    np.testing.assert_allclose(r.bias, c1 / T, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(L=positive, sigma2=positive, gap=positive, frac=fraction, n=st.integers(2, 10_000),
       share=st.floats(0.0, 1.0), steps=st.integers(1, 20))
def test_constant_sequences_without_replacement_equal_c1_over_t_plus_phi_c2_over_b(L, sigma2, gap, frac, n, share,
                                                                                   steps):
    c = ProblemConstants(L, sigma2, gap)
    eta = frac * 2 / L
    b = 1 + share * (n - 1)
    c1, c2 = theory_constants(c, eta)
    model = WithoutReplacement(n)
    r = proposition1_bound(c, np.full(steps, eta), np.full(steps, b), variance=model)
    T = np.arange(1, steps + 1)
    np.testing.assert_allclose(r.total, c1 / T + c2 * model.factor(b) / b, rtol=1e-9, atol=1e-300)


@settings(max_examples=60, deadline=None)
@given(frac=fraction, b=st.floats(1.0, 1e4), grow=st.floats(1.0, 100.0), steps=st.integers(1, 30),
       seed=st.integers(0, 2**32 - 1))
@example(frac=0.5, b=8.0, grow=2.0, steps=3, seed=0)
def test_bound_is_monotone_in_batch_sizes(frac, b, grow, steps, seed):
    rng = np.random.default_rng(seed)
    etas = frac * rng.uniform(0.1, 1.0, steps) * 2.0  # L = 1
    small = b * rng.uniform(1.0, 2.0, steps)
    large = small * grow
    lo = proposition1_bound(UNIT, etas, large).total
    hi = proposition1_bound(UNIT, etas, small).total
    assert np.all(lo <= hi * (1 + 1e-12))


@settings(max_examples=40, deadline=None)
@given(frac=fraction, steps=st.integers(2, 40), seed=st.integers(0, 2**32 - 1))
def test_bias_decreases_with_t_for_a_fixed_eta_max(frac, steps, seed):
    rng = np.random.default_rng(seed)
    etas = frac * rng.uniform(0.01, 1.0, steps) * 2.0
    r = proposition1_bound(UNIT, etas, rng.uniform(1, 100, steps), eta_max=frac * 2.0)
    assert np.all(np.diff(r.bias) < 0)


@settings(max_examples=60, deadline=None)
@given(L=st.floats(0.1, 10.0), sigma2=st.floats(0.0, 10.0), theta0=st.floats(-10.0, 10.0),
       steps=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
@example(L=1.0, sigma2=1.0, theta0=1.0, steps=10, seed=0)
def test_bound_holds_on_a_quadratic_with_exact_second_moments(L, sigma2, theta0, steps, seed):
    """f(θ) = Lθ²/2 with gradient noise of variance σ²/b_t: E θ_{t+1}² = (1 − η_t L)² E θ_t² + η_t² σ²/b_t exactly.

    E‖∇f(θ_t)‖² = L² E θ_t², Δ = Lθ₀²/2; the bound must hold (one-sided) for every T.
    """
    rng = np.random.default_rng(seed)
    etas = rng.uniform(0.01, 0.99, steps) * 2.0 / L
    b = rng.integers(1, 512, steps).astype(float)
    second = np.empty(steps)
    m2 = theta0**2
    for i in range(steps):
        second[i] = m2
        m2 = (1 - etas[i] * L) ** 2 * m2 + etas[i] ** 2 * sigma2 / b[i]
    measured = np.minimum.accumulate(L**2 * second)
    bound = proposition1_bound(ProblemConstants(L, sigma2, L * theta0**2 / 2), etas, b).total
    assert np.all(measured <= bound * (1 + 1e-9) + 1e-300)


# -- symbolic identities -----------------------------------------------------------------------------------

@pytest.mark.parametrize("variance", ["with_replacement", "without_replacement"])
def test_case_i_reduces_to_c1_over_t_plus_c2_over_b(variance):
    d = derive_constant_case(variance)
    assert sp.simplify(d.bound - (C1_EXPR / S.T + C2_EXPR * PHI[variance] / S.b)) == 0
    assert sp.simplify(d.steps_coefficient - C1_EXPR) == 0
    assert sp.simplify(d.floor - C2_EXPR * PHI[variance] / S.b) == 0


def test_case_i_floor_does_not_vanish_unless_b_grows():
    floor = derive_constant_case().floor
    assert sp.simplify(floor * (2 - S.L * S.eta)).is_positive
    assert sp.limit(floor, S.b, sp.oo) == 0


def test_general_bound_parts_add_up():
    total = general_bound(S.T, S.T**2)
    parts = general_bound(S.T, S.T**2, part="bias") + general_bound(S.T, S.T**2, part="variance")
    assert sp.simplify(total - parts) == 0
    assert sp.simplify(BOUND_EXPR.subs({S.sum_eta: S.T, S.sum_eta2_b: S.T**2}) - total) == 0


CASE_II = [(regime, per) for regime in POLYNOMIAL_REGIMES for per in ("step", "stage")]


@pytest.mark.parametrize("regime, per", CASE_II)
def test_case_ii_exact_bound_form_and_numeric_path(regime, per):
    d = derive_polynomial_growth(regime, per)
    x = S.t if per == "step" else S.m
    X = d.variable
    steps = 1 if per == "step" else S.K
    inverse_sum = sp.Sum(1 / d.batch, (x, 0, X - 1))
    assert sp.simplify(d.bound - (S.C1 / steps + S.C2 * inverse_sum) / X) == 0
    # The same numbers from proposition1_bound: L = σ² = 1, Δ = 0.3, η = 0.5, a = 0.7, b₀ = 3, s = 0.5, K = 4.
    eta, gap = 0.5, 0.3
    c1, c2 = theory_constants(ProblemConstants(1.0, 1.0, gap), eta)
    values = {S.C1: c1, S.C2: c2, S.a: 0.7, S.b0: 3.0, S.s: 0.5, S.K: 4}
    n_outer = 6
    batch = sp.lambdify(x, d.batch.subs(values), modules="numpy")(np.arange(n_outer, dtype=float))
    k = 1 if per == "step" else 4
    numeric = proposition1_bound(ProblemConstants(1.0, 1.0, gap), np.full(n_outer * k, eta), np.repeat(batch, k))
    symbolic = float(d.bound.subs(values).subs(X, n_outer).doit())
    assert numeric.total[-1] == pytest.approx(symbolic, rel=1e-12)


@pytest.mark.parametrize("regime, per", CASE_II)
def test_case_ii_limit_constants_are_finite_and_positive(regime, per):
    d = derive_polynomial_growth(regime, per)
    for constant in (d.constant_lower, d.constant_upper):
        assert constant.is_positive is True
        assert constant.is_finite is True
    assert sp.simplify(d.constant_upper - d.constant_lower).is_nonnegative


@pytest.mark.parametrize("regime, per", CASE_II)
def test_case_ii_a_faster_rate_gives_infinity_and_a_slower_one_zero(regime, per):
    d = derive_polynomial_growth(regime, per)
    X = d.variable
    if regime == "linear":
        faster, slower = 1 / X, sp.log(X) ** 2 / X
    else:
        faster, slower = d.rate * X ** (-S.s / (1 + S.s)), d.rate * X ** (S.s / (1 + S.s))
    assert sp.limit(d.bound_lower / faster, X, sp.oo) == sp.oo
    assert sp.limit(d.bound_upper / slower, X, sp.oo) == 0


@pytest.mark.parametrize("regime, per", CASE_II)
def test_case_ii_integral_is_an_antiderivative_and_the_sum_is_sandwiched(regime, per):
    d = derive_polynomial_growth(regime, per)
    x = S.t if per == "step" else S.m
    X = d.variable
    assert sp.simplify(sp.diff(d.integral, X) - (1 / d.batch).subs(x, X)) == 0
    assert sp.simplify(d.integral.subs(X, 0)) == 0
    values = {S.a: 0.7, S.b0: 3.0, S.s: 0.5}
    f = sp.lambdify(x, (1 / d.batch).subs(values))
    for n_terms in (1, 2, 10, 1000):
        total = math.fsum(f(k) for k in range(n_terms))
        assert float(d.sum_lower.subs(values).subs(X, n_terms)) <= total
        assert total <= float(d.sum_upper.subs(values).subs(X, n_terms))


def test_case_ii_constants_in_closed_form():
    c = 1 / (1 + S.s)  # sublinear exponent
    assert sp.simplify(derive_polynomial_growth("linear").constant_lower - S.C2 / S.a) == 0
    assert sp.simplify(derive_polynomial_growth("linear", "stage").constant_upper - S.C2 / S.a) == 0
    sub = derive_polynomial_growth("sublinear").constant_lower
    assert sp.simplify(sub - S.C2 * S.a ** (-c) / (1 - c)) == 0
    sup = derive_polynomial_growth("superlinear").constant_lower
    assert sp.simplify(sup - (S.C1 + S.C2 * S.b0 ** (-S.s) / (S.a * S.s))) == 0
    sup_stage = derive_polynomial_growth("superlinear", "stage").constant_lower
    assert sp.simplify(sup_stage - (S.C1 / S.K + S.C2 * S.b0 ** (-S.s) / (S.a * S.s))) == 0


def test_case_iii_geometric_sums():
    d = derive_exponential_stages()
    sub = d.substitution  # γ = 1 + s, δ = γ²(1 + u): away from the Piecewise branches γ = 1, γ² = δ
    g, q = S.gamma, S.gamma**2 / S.delta
    assert sp.simplify(d.sum_eta.subs(sub) - (S.K * S.eta0 * (g**S.M - 1) / (g - 1)).subs(sub)) == 0
    assert sp.simplify(d.sum_eta2_b.subs(sub)
                       - (S.K * S.eta0**2 / S.b0 * (1 - q**S.M) / (1 - q)).subs(sub)) == 0


def test_case_iii_order_gamma_to_the_minus_m():
    d = derive_exponential_stages()
    margin = 2 - S.L * S.eta_max
    target = (S.gamma - 1) / margin * (2 * S.gap / (S.K * S.eta0)
                                       + S.L * S.sigma2 * S.eta0 / (S.b0 * (1 - S.gamma**2 / S.delta)))
    assert sp.simplify(d.constant - target) == 0
    assert sp.simplify((d.constant * margin).subs(d.substitution)).is_positive
    assert sp.simplify(d.norm_constant**2 - d.constant) == 0
    scaled = sp.piecewise_fold(d.bound.subs(d.substitution)) * margin
    g = 1 + S.s
    assert sp.limit(scaled * g ** (2 * S.M), S.M, sp.oo) == sp.oo   # not O(γ^{−2M})
    assert sp.limit(scaled * g ** (S.M / 2), S.M, sp.oo) == 0        # better than O(γ^{−M/2})


def test_case_iii_needs_gamma_squared_below_delta():
    d = derive_exponential_stages()
    # γ² > δ: δ = γ²/(1 + u) with γ = 1 + s. The bound is no longer O(γ^{−M}).
    unstable = {S.gamma: 1 + S.s, S.delta: (1 + S.s) ** 2 / (1 + S.u)}
    scaled = sp.piecewise_fold(d.bound.subs(unstable)) * (2 - S.L * S.eta_max)
    assert sp.limit(scaled * (1 + S.s) ** S.M, S.M, sp.oo) == sp.oo


CASE_III_VALUES = {S.L: 1.0, S.sigma2: 2.0, S.gap: 3.0, S.eta_max: 1.5, S.K: 100, S.eta0: 0.1, S.b0: 8.0,
                   S.gamma: 1.4, S.delta: 4.0}


def test_case_iii_symbolic_bound_equals_the_numeric_path():
    # M = 8 stages of K = 100 steps: the largest η is 0.1·1.4⁷ = 1.054 <= η_max = 1.5 < 2/L = 2 (valid).
    M = 8
    m = np.repeat(np.arange(M), 100)
    numeric = proposition1_bound(ProblemConstants(1.0, 2.0, 3.0), 0.1 * 1.4**m, 8.0 * 4.0**m, eta_max=1.5)
    symbolic = float(derive_exponential_stages().bound.subs(CASE_III_VALUES).subs(S.M, M))
    assert numeric.total[-1] == pytest.approx(symbolic, rel=1e-12)
    assert bool(derive_exponential_stages().validity.subs(CASE_III_VALUES).subs(S.M, M))
    assert not bool(derive_exponential_stages().validity.subs(CASE_III_VALUES).subs(S.M, M + 2))


def test_case_iii_bound_times_gamma_to_the_m_approaches_the_constant():
    # The order is that of the bound for a fixed cap η_max (formal in M; see ExponentialStagesOrder).
    d = derive_exponential_stages()
    constant = d.constant.subs(CASE_III_VALUES)
    assert constant.is_positive
    scaled = [float(d.bound.subs(CASE_III_VALUES).subs(S.M, M)) * 1.4**M for M in (10, 20, 40)]
    errors = [abs(v / float(constant) - 1) for v in scaled]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-5  # (γ²/δ)^40 = 0.49^40 and γ^{-40} = 1.4^{-40} ≈ 1.4e-6


# -- measured vs derived orders ---------------------------------------------------------------------------

@pytest.mark.parametrize("regime, c, s_value, tol", [
    ("superlinear", 2.0, 1.0, 0.01),
    # log T / T: the ratio bound/rate tends to C₂/a only as 1/log T (C₁ and Euler's constant), hence 0.05.
    ("linear", 1.0, None, 0.05),
    ("sublinear", 0.5, 1.0, 0.02),
])
def test_polynomial_growth_measured_slope_matches_derived_rate(regime, c, s_value, tol):
    d = derive_polynomial_growth(regime)
    assert sp.simplify(d.exponent - c if s_value is None else d.exponent.subs(S.s, s_value) - c) == 0
    T = 10**6
    t = np.arange(T, dtype=float)
    batch = (t + 1.0) ** c  # a = b₀ = 1
    total = proposition1_bound(ProblemConstants(1.0, 1.0, 0.01), np.full(T, 1.0), batch).total
    rate = sp.lambdify(S.T, d.rate.subs(S.s, s_value) if s_value is not None else d.rate, modules="numpy")
    lo, hi = 10**3, 10**6
    measured = np.log(total[hi - 1] / total[lo - 1]) / np.log(hi / lo)
    derived = np.log(rate(float(hi)) / rate(float(lo))) / np.log(hi / lo)
    assert measured == pytest.approx(derived, abs=tol)
    # The exact sandwich of the derivation, at every decade.
    values = {S.C1: 2 * 0.01 / 1.0, S.C2: 1.0, S.a: 1.0, S.b0: 1.0, S.s: s_value if s_value is not None else 1.0}
    lower = sp.lambdify(S.T, d.bound_lower.subs(values), modules="numpy")
    upper = sp.lambdify(S.T, d.bound_upper.subs(values), modules="numpy")
    for k in range(0, 7):
        n_steps = 10**k
        assert lower(float(n_steps)) <= total[n_steps - 1] * (1 + 1e-9)
        assert total[n_steps - 1] <= upper(float(n_steps)) * (1 + 1e-9)
