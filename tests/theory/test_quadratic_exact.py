"""Noisy quadratic: exact moments vs recursion and vs measurement; Proposition 1 bound vs measurement."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sfotheory.complexity import theory_constants
from sfotheory.constants import WithoutReplacement
from sfotheory.problems import make_problem
from sfotheory.quadratic_theory import expected_steps_to_eps, quadratic_moments
from sfotheory.rule import Schedule, constant, periodic
from sfotheory.simulate import schedule_sequence, simulate


def proposition1_bound(L, sigma2, gap, lrs, bs, eta_max=None):
    """B_T + V_T of Proposition 1 (docs/theory.md, "Proposition 1") for the steps t < T, written out here."""
    lrs, bs = np.asarray(lrs, float), np.asarray(bs, float)
    eta_max = lrs.max() if eta_max is None else eta_max
    s = lrs.sum()
    return 2 * gap / ((2 - L * eta_max) * s) + L * sigma2 / (2 - L * eta_max) * np.sum(lrs**2 / bs) / s


def test_closed_form_composed_per_stage_equals_the_step_recursion():
    q = make_problem("quadratic", dim=7, kappa=6.0, sigma2=2.0, gap=3.0, noise="hessian", seed=3)
    b, lr = schedule_sequence(periodic(b0=2, eta0=0.3, delta=2, gamma=1.2, period=9, b_max=64, eta_max=1.5), 80)
    m = quadratic_moments(q, b[:, 0], lr[:, 0], variance=WithoutReplacement(100))
    mu, v = q.theta0.copy(), np.zeros(q.dim)
    lam = q.eigenvalues
    for t in range(80):
        assert m.mean_sq_norm[t] == pytest.approx(lam**2 @ (mu**2 + v), rel=1e-10)
        assert m.var_sq_norm[t] == pytest.approx(lam**4 @ (2 * v**2 + 4 * mu**2 * v), rel=1e-9, abs=1e-300)
        assert m.mean_loss[t] == pytest.approx(0.5 * lam @ (mu**2 + v), rel=1e-10)
        phi = (100 - b[t, 0]) / 99
        a = 1 - lr[t, 0] * lam
        mu, v = a * mu, a**2 * v + lr[t, 0] ** 2 * q.noise_var * phi / b[t, 0]


def test_expected_steps_to_eps_is_the_first_crossing_of_the_moments():
    q = make_problem("quadratic", dim=30, kappa=3.0, sigma2=1.0, gap=1.0, seed=1)
    for b in (3, 6, 12, 50):
        m = quadratic_moments(q, [b] * 3000, [0.4] * 3000)
        hit = np.flatnonzero(m.mean_sq_norm <= 0.08**2)
        want = float(hit[0]) if hit.size else math.inf
        assert expected_steps_to_eps(q, b, 0.4, 0.08, max_steps=3000) == want


def schedules_for(case, b0, eta):
    if case == "constant":
        return constant(b0=b0, eta0=eta)
    if case == "linear":
        return Schedule("linear_periodic", b0=b0, eta0=eta, eps0=1.0, increment=2 * b0, trigger="period", period=10)
    return periodic(b0=b0, eta0=eta, delta=2.0, gamma=1.3, period=10, b_max=b0 * 2**6, eta_max=1.6)


# Statistical margin: the replicate mean of ||grad f||^2 has standard error sqrt(Var/R) with Var exact
# (Gaussian iterates); we allow 5 standard errors at 4 fixed times, so a false failure has probability
# below 4 * 6e-7 per example.
@settings(max_examples=6, deadline=None)
@given(case=st.sampled_from(["constant", "linear", "exponential"]), dim=st.integers(5, 60),
       kappa=st.floats(1.0, 20.0), sigma2=st.floats(0.1, 5.0), eta=st.floats(0.05, 0.6),
       b0=st.integers(1, 16), seed=st.integers(0, 10**6))
@example(case="exponential", dim=20, kappa=4.0, sigma2=1.0, eta=0.3, b0=2, seed=0)
def test_measured_mean_sq_norm_matches_the_exact_expectation(case, dim, kappa, sigma2, eta, b0, seed):
    q = make_problem("quadratic", dim=dim, kappa=kappa, sigma2=sigma2, gap=1.0, seed=seed % 97)
    sched = schedules_for(case, b0, eta)
    T, R = 60, 400
    res = simulate(q, sched, eps=1e-12, replicates=R, seed=seed, max_steps=T)
    b, lr = schedule_sequence(sched, T)
    m = quadratic_moments(q, b[:, 0], lr[:, 0])
    for t in (1, 7, 25, 60):
        measured = np.mean(res.trace_norm[t, :, 0] ** 2)
        se = math.sqrt(m.var_sq_norm[t] / R)
        assert abs(measured - m.mean_sq_norm[t]) <= 5 * se + 1e-12 * m.mean_sq_norm[t]


# Proposition 1 bounds min_t E||grad f(theta_t)||^2 over t < T. The measured E is a mean over R replicates;
# we allow it to exceed the bound by 4 standard errors at the minimising t (taking the min over t only
# lowers the measured value, so it cannot cause a false failure).
@settings(max_examples=8, deadline=None)
@given(case=st.sampled_from(["constant", "linear", "exponential"]), dim=st.integers(2, 60),
       kappa=st.floats(1.0, 10.0), sigma2=st.floats(0.1, 5.0), gap=st.floats(0.1, 5.0),
       eta=st.floats(0.05, 0.6), b0=st.integers(1, 32), T=st.integers(5, 80), seed=st.integers(0, 10**6))
@example(case="constant", dim=50, kappa=1.0, sigma2=1.0, gap=1.0, eta=0.6, b0=4, T=80, seed=1)
def test_measured_min_expected_sq_norm_never_exceeds_proposition_1(case, dim, kappa, sigma2, gap, eta, b0, T, seed):
    q = make_problem("quadratic", dim=dim, kappa=kappa, sigma2=sigma2, gap=gap, seed=seed % 89)
    sched = schedules_for(case, b0, eta)
    R = 200
    res = simulate(q, sched, eps=1e-12, replicates=R, seed=seed, max_steps=T)
    sq = res.trace_norm[:T, :, 0] ** 2            # theta_0 .. theta_{T-1}
    mean = sq.mean(axis=1)
    t_min = int(np.argmin(mean))
    se = sq[t_min].std() / math.sqrt(R)
    b, lr = schedule_sequence(sched, T)
    c = q.constants()
    bound = proposition1_bound(c.L, c.sigma2, c.gap, lr[:, 0], b[:, 0])
    if case == "constant":
        c1, c2 = theory_constants(c, eta)
        assert bound == pytest.approx(c1 / T + c2 / b0, rel=1e-12)
    assert mean[t_min] <= bound + 4 * se


def test_proposition_1_exponential_bound_decays_per_stage_with_slope_minus_log_gamma():
    # b_m = b0 delta^m, eta_m = eta0 gamma^m, K steps per stage: the bound after M stages is O(gamma^-M),
    # so log(bound) falls by log(gamma) per stage once the variance sum has converged (gamma^2 < delta).
    # eta_max is the run's cap, fixed for all M (Proposition 1 takes eta_t <= eta_max < 2/L).
    L, sigma2, gap, eta0, gamma, delta, K = 1.0, 1.0, 1.0, 1e-4, 1.3, 2.0, 50
    M = 30
    m = np.repeat(np.arange(M), K)
    lrs, bs = eta0 * gamma**m, 4 * delta**m
    eta_max = lrs.max()
    ends = np.array([proposition1_bound(L, sigma2, gap, lrs[: (j + 1) * K], bs[: (j + 1) * K], eta_max)
                     for j in range(M)])
    slopes = np.diff(np.log(ends))
    assert np.all(slopes < 0)
    assert slopes[-1] == pytest.approx(-math.log(gamma), rel=0.01)
    assert eta0 * gamma ** (M - 1) < 2 / L


@settings(max_examples=5, deadline=None)
@given(dim=st.integers(150, 300), sigma2=st.floats(0.5, 2.0), eta=st.floats(0.1, 0.4),
       under=st.floats(0.3, 0.8), seed=st.integers(0, 10**6))
@pytest.mark.slow
def test_exponential_schedule_reaches_eps_with_fewer_sfo_than_constant_b0(dim, sigma2, eta, under, seed):
    # b0 below the noise floor: constant b0 stalls at E||grad f||^2 ~ C2/b0 > eps^2 (the paper's point);
    # the exponential schedule (gamma = 1.2 < sqrt(delta) = sqrt(2)) keeps lowering the floor.
    q = make_problem("quadratic", dim=dim, kappa=1.0, sigma2=sigma2, gap=1.0, seed=seed % 31)
    c = q.constants()
    _, c2 = theory_constants(c, eta)
    b0 = 4
    eps = math.sqrt(c2 / b0 * under)                       # eps^2 = under * C2/b0 < floor at b0
    expo = periodic(b0=b0, eta0=eta, delta=2.0, gamma=1.2, period=40, b_max=b0 * 2**12, eta_max=1.5)
    res = simulate(q, [expo, constant(b0=b0, eta0=eta)], eps=eps, replicates=8, seed=seed, max_steps=3000)
    n_exp = np.where(res.hit[:, 0], res.hit_sfo[:, 0], np.inf)
    n_const = np.where(res.hit[:, 1], res.hit_sfo[:, 1], np.inf)
    assert res.hit[:, 0].all()
    assert np.median(n_exp) < np.median(n_const)
