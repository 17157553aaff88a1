"""Proposition 2: closed-form tables, symbolic identities, hypothesis invariants, bad input."""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from sfotheory import symbols as S
from sfotheory.complexity import (
    C1_EXPR,
    C2_EXPR,
    critical_batch_size,
    critical_batch_size_sensitivity,
    derive_critical_batch_size,
    min_batch_size,
    sfo_complexity,
    steps_to_eps,
    theory_constants,
)
from sfotheory.constants import ProblemConstants, WithoutReplacement, WithReplacement
from sfotheory.validation import ParameterError
from tests.golden import COMPLEXITY_TABLE, OFF_CRITICAL, WITHOUT_REPLACEMENT


# -- closed-form tables -----------------------------------------------------------------------------

@pytest.mark.parametrize("row", COMPLEXITY_TABLE, ids=lambda r: f"L={r['L']},eta={r['eta']},eps={r['eps']}")
def test_closed_form_table(row):
    c = ProblemConstants(row["L"], row["sigma2"], row["gap"])
    c1, c2 = theory_constants(c, row["eta"])
    assert c1 == pytest.approx(row["C1"], rel=1e-12)
    assert c2 == pytest.approx(row["C2"], rel=1e-12)
    b_star = critical_batch_size(c, row["eta"], row["eps"])
    assert b_star == pytest.approx(row["b_star"], rel=1e-12)
    assert steps_to_eps(c, row["eta"], row["eps"], b_star) == pytest.approx(row["K"], rel=1e-12)
    assert sfo_complexity(c, row["eta"], row["eps"], b_star) == pytest.approx(row["N"], rel=1e-12)


def test_off_critical_values_and_unreachable_batch():
    r = OFF_CRITICAL
    c = ProblemConstants(r["L"], r["sigma2"], r["gap"])
    assert steps_to_eps(c, r["eta"], r["eps"], r["b"]) == pytest.approx(r["K"], rel=1e-12)
    assert sfo_complexity(c, r["eta"], r["eps"], r["b"]) == pytest.approx(r["N"], rel=1e-12)
    assert min_batch_size(c, r["eta"], r["eps"]) == pytest.approx(r["b_min"], rel=1e-12)
    assert math.isinf(steps_to_eps(c, r["eta"], r["eps"], r["b_min"]))
    assert math.isinf(sfo_complexity(c, r["eta"], r["eps"], r["b_min"] / 2))


def test_without_replacement_table_and_limit():
    c = ProblemConstants(1.0, 1.0, 1.0)
    w = WITHOUT_REPLACEMENT
    assert critical_batch_size(c, 1.0, 0.5, WithoutReplacement(w["n"])) == pytest.approx(w["b_star"], rel=1e-12)
    # full batch: zero variance, so K(n) = C1/eps^2 exactly
    c1, _ = theory_constants(c, 1.0)
    assert steps_to_eps(c, 1.0, 0.5, 1000, WithoutReplacement(1000)) == pytest.approx(c1 / 0.25)


def test_critical_batch_is_capped_at_n_without_replacement():
    # C2 = 1 > eps^2 (n - 1) = 0.25 * 3: N(b) decreases all the way to b = n
    c = ProblemConstants(1.0, 1.0, 1.0)
    assert critical_batch_size(c, 1.0, 0.5, WithoutReplacement(4)) == 4.0


def test_vectorised_over_eps_and_b():
    c = ProblemConstants(1.0, 1.0, 1.0)
    eps = np.array([0.5, 0.25, 0.125])
    np.testing.assert_allclose(critical_batch_size(c, 1.0, eps), [8.0, 32.0, 128.0])
    b = np.array([2.0, 8.0, 16.0])
    k = steps_to_eps(c, 1.0, 0.5, b)
    assert math.isinf(k[0]) and k[1] == pytest.approx(16.0) and k[2] == pytest.approx(2 * 16 / (4 - 1))


# -- symbolic identities ----------------------------------------------------------------------------

def test_symbolic_critical_batch_size_and_values():
    d = derive_critical_batch_size()
    assert sp.simplify(d.critical - 2 * S.C2 / S.eps**2) == 0
    assert sp.simplify(d.steps - S.C1 * S.b / (S.eps**2 * S.b - S.C2)) == 0
    assert sp.simplify(d.sfo - S.C1 * S.b**2 / (S.eps**2 * S.b - S.C2)) == 0
    assert sp.simplify(d.steps_at_critical - 2 * S.C1 / S.eps**2) == 0
    assert sp.simplify(d.sfo_at_critical - 4 * S.C1 * S.C2 / S.eps**4) == 0
    assert sp.simplify(d.min_batch - S.C2 / S.eps**2) == 0


def test_second_order_condition_is_positive():
    assert derive_critical_batch_size().second_derivative.is_positive
    d = derive_critical_batch_size("without_replacement")
    # n >= 2 written as n -> n + 1 with n >= 1
    assert sp.simplify(d.second_derivative.subs(S.n, S.n + 1)).is_positive


def test_without_replacement_tends_to_with_replacement():
    d = derive_critical_batch_size("without_replacement")
    assert sp.simplify(sp.limit(d.critical, S.n, sp.oo) - derive_critical_batch_size().critical) == 0
    assert sp.simplify(sp.limit(d.steps, S.n, sp.oo) - derive_critical_batch_size().steps) == 0


def test_critical_batch_size_in_problem_constants_and_its_eta_dependence():
    b_star = derive_critical_batch_size().critical.subs(S.C2, C2_EXPR)
    expected = 2 * S.L * S.sigma2 * S.eta / ((2 - S.L * S.eta) * S.eps**2)
    assert sp.simplify(b_star - expected) == 0
    slope = sp.diff(b_star, S.eta)
    assert sp.simplify(slope - 4 * S.L * S.sigma2 / (S.eps**2 * (2 - S.L * S.eta) ** 2)) == 0


def test_c1_c2_expressions():
    assert sp.simplify(C1_EXPR - 2 * S.gap / (S.eta * (2 - S.L * S.eta))) == 0
    assert sp.simplify(C2_EXPR - S.L * S.sigma2 * S.eta / (2 - S.L * S.eta)) == 0


# -- hypothesis invariants --------------------------------------------------------------------------

constants_st = st.builds(
    ProblemConstants,
    L=st.floats(0.1, 10.0), sigma2=st.floats(1e-3, 10.0), gap=st.floats(1e-2, 10.0))


@settings(max_examples=40, deadline=None)
@given(c=constants_st, eta_frac=st.floats(0.05, 0.95), eps=st.floats(0.01, 1.0))
@example(c=ProblemConstants(1.0, 1.0, 1.0), eta_frac=0.5, eps=0.5)
def test_sfo_is_convex_with_minimum_at_critical_batch(c, eta_frac, eps):
    eta = eta_frac * 2 / c.L
    b_star = critical_batch_size(c, eta, eps)
    lo = min_batch_size(c, eta, eps)
    res = minimize_scalar(lambda x: sfo_complexity(c, eta, eps, lo * math.exp(x)),
                          bracket=(0.1, math.log(b_star / lo), 5.0), tol=1e-10)
    assert lo * math.exp(res.x) == pytest.approx(b_star, rel=1e-3)
    # convex in b above the reachable domain: non-negative second differences on a uniform grid
    b = np.linspace(lo * 1.05, lo * 40, 400)
    n_b = sfo_complexity(c, eta, eps, b)
    second = n_b[2:] - 2 * n_b[1:-1] + n_b[:-2]
    assert np.all(second >= -1e-9 * np.abs(n_b[1:-1]))
    assert np.all(n_b >= sfo_complexity(c, eta, eps, b_star) * (1 - 1e-12))


@settings(max_examples=40, deadline=None)
@given(c=constants_st, eta_frac=st.floats(0.05, 0.95), eps=st.floats(0.01, 1.0))
def test_steps_decrease_in_batch_size_and_critical_scales_as_eps_minus_two(c, eta_frac, eps):
    eta = eta_frac * 2 / c.L
    lo = min_batch_size(c, eta, eps)
    b = lo * np.exp(np.linspace(0.01, 6.0, 100))
    k = steps_to_eps(c, eta, eps, b)
    assert np.all(np.diff(k) < 0)
    assert np.all(k > theory_constants(c, eta)[0] / eps**2)  # K(b) -> C1/eps^2 from above
    assert critical_batch_size(c, eta, eps / 2) == pytest.approx(4 * critical_batch_size(c, eta, eps), rel=1e-12)
    assert critical_batch_size_sensitivity(c, eta, eps) > 0


@settings(max_examples=30, deadline=None)
@given(c=constants_st, eta_frac=st.floats(0.05, 0.95), eps=st.floats(0.05, 1.0), n=st.integers(2, 10**6))
def test_without_replacement_critical_batch_minimises_sfo_on_integers(c, eta_frac, eps, n):
    eta = eta_frac * 2 / c.L
    w = WithoutReplacement(n)
    b_star = critical_batch_size(c, eta, eps, w)
    assert 0 < b_star <= n
    grid = np.unique(np.clip(np.round(b_star * np.exp(np.linspace(-2, 2, 41))), 1, n))
    n_grid = sfo_complexity(c, eta, eps, grid, w)
    assert np.all(n_grid >= sfo_complexity(c, eta, eps, b_star, w) * (1 - 1e-9))
    # for b >= 1 the factor (n - b)/(n - 1) <= 1: sampling without replacement never needs more SFO
    assert np.all(n_grid <= sfo_complexity(c, eta, eps, grid) * (1 + 1e-12))


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name, value", [
    (dict(eta=2.0), "eta", "eta=2.0"),
    (dict(eta=-0.1), "eta", "eta=-0.1"),
    (dict(eps=0.0), "eps", "eps=0.0"),
    (dict(eps=float("nan")), "eps", "eps=nan"),
    (dict(eta=float("inf")), "eta", "eta=inf"),
])
def test_bad_arguments_name_parameter_and_value(kwargs, name, value):
    args = dict(eta=0.1, eps=0.5) | kwargs
    with pytest.raises(ParameterError) as err:
        critical_batch_size(ProblemConstants(1.0, 1.0, 1.0), **args)
    assert f"'{name}' parameter of critical_batch_size" in str(err.value)
    assert f"Got {value} instead" in str(err.value)


@pytest.mark.parametrize("kwargs, name", [
    (dict(L=0.0, sigma2=1.0, gap=1.0), "L"),
    (dict(L=1.0, sigma2=-1.0, gap=1.0), "sigma2"),
    (dict(L=1.0, sigma2=1.0, gap=-0.5), "gap"),
    (dict(L=float("nan"), sigma2=1.0, gap=1.0), "L"),
])
def test_bad_constants_are_refused_eagerly(kwargs, name):
    with pytest.raises(ParameterError, match=f"'{name}' parameter of ProblemConstants"):
        ProblemConstants(**kwargs)


def test_wrong_types_are_type_errors_that_name_the_value():
    with pytest.raises(TypeError, match="'L' parameter of ProblemConstants must be a real number. Got L='1'"):
        ProblemConstants("1", 1.0, 1.0)
    with pytest.raises(TypeError, match="'variance' parameter"):
        critical_batch_size(ProblemConstants(1.0, 1.0, 1.0), 0.1, 0.5, variance="with")
    with pytest.raises(TypeError, match="'constants' parameter"):
        critical_batch_size({"L": 1.0}, 0.1, 0.5)


def test_batch_larger_than_data_set_is_refused_without_replacement():
    with pytest.raises(ParameterError, match=r"'b' parameter of sfo_complexity must be <= n = 10"):
        sfo_complexity(ProblemConstants(1.0, 1.0, 1.0), 0.1, 0.5, 11, WithoutReplacement(10))


def test_with_replacement_model_is_the_default():
    c = ProblemConstants(1.0, 1.0, 1.0)
    assert critical_batch_size(c, 1.0, 0.5) == critical_batch_size(c, 1.0, 0.5, WithReplacement())
