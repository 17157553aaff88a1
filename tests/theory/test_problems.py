"""Synthetic problems: exact gradients, certified L and sigma^2, oracles, samplers, registry."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfotheory.constants import WithoutReplacement, WithReplacement
from sfotheory.problems import PROBLEMS, StepRandom, make_problem, make_sampler
from sfotheory.validation import ParameterError

SMALL = {
    "quadratic": dict(dim=6, kappa=5.0, sigma2=2.0, gap=1.5, noise="hessian"),
    "least_squares": dict(n=120, dim=5, kappa=4.0, noise=0.3, ridge=0.05),
    "logistic": dict(n=150, dim=5, kappa=4.0, ridge=0.02),
    "cauchy": dict(n=130, dim=5, kappa=4.0, noise=1.0, ridge=0.01),
}
FINITE = ["least_squares", "logistic", "cauchy"]


def small(name, seed=0):
    return make_problem(name, SMALL[name], seed=seed)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_gradient_matches_central_finite_differences(name):
    p = small(name)
    rng = np.random.default_rng(1)
    theta = rng.standard_normal((3, p.dim))
    g = p.grad(theta)
    h = 1e-6
    fd = np.empty_like(theta)
    for j in range(p.dim):
        e = np.zeros(p.dim)
        e[j] = h
        fd[:, j] = (p.loss(theta + e) - p.loss(theta - e)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
    loss, norm, _ = p.observe(theta)
    np.testing.assert_allclose(norm, np.linalg.norm(g, axis=-1), rtol=1e-12)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_oracles_are_vectorised_over_leading_axes(name):
    p = small(name)
    theta = np.random.default_rng(2).standard_normal((2, 3, p.dim))
    loss, norm, s2 = p.observe(theta)
    assert loss.shape == norm.shape == s2.shape == (2, 3)
    assert p.grad(theta).shape == theta.shape
    np.testing.assert_allclose(p.grad(theta)[1, 2], p.grad(theta[1, 2]))


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_smoothness_constant_is_certified_on_random_pairs(name):
    p = small(name)
    rng = np.random.default_rng(3)
    x = 3 * rng.standard_normal((400, p.dim))
    y = x + rng.standard_normal((400, p.dim)) * rng.uniform(0.01, 3, (400, 1))
    ratio = np.linalg.norm(p.grad(x) - p.grad(y), axis=1) / np.linalg.norm(x - y, axis=1)
    assert ratio.max() <= p.L * (1 + 1e-12)


def test_least_squares_and_quadratic_smoothness_is_exact():
    # L = lambda_max of the Hessian: a step along the top eigenvector attains it.
    p = small("least_squares")
    H = p.X.T @ p.X / p.n + p.ridge * np.eye(p.dim)
    w, V = np.linalg.eigh(H)
    assert p.L == pytest.approx(w[-1], rel=1e-12)
    q = small("quadratic")
    assert q.L == q.eigenvalues.max() == 1.0


@pytest.mark.parametrize("name", FINITE)
def test_sigma2_at_equals_brute_force_per_sample_variance(name):
    p = small(name)
    theta = np.random.default_rng(4).standard_normal((2, p.dim))
    G = p.per_sample_grads(theta)                          # (2, n, d)
    brute = np.mean(np.sum((G - G.mean(axis=1, keepdims=True)) ** 2, axis=-1), axis=1)
    np.testing.assert_allclose(p.sigma2_at(theta), brute, rtol=1e-10)
    np.testing.assert_allclose(G.mean(axis=1), p.grad(theta), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["logistic", "cauchy"])
def test_global_sigma2_bound_holds_at_sampled_points_far_and_near(name):
    p = small(name)
    rng = np.random.default_rng(5)
    theta = rng.standard_normal((500, p.dim)) * rng.choice([0.1, 1.0, 10.0, 100.0], size=(500, 1))
    assert p.sigma2_at(theta).max() <= p.sigma2


def test_least_squares_sigma2_bound_holds_on_its_ball_and_is_attained_order():
    p = small("least_squares")
    rng = np.random.default_rng(6)
    u = rng.standard_normal((2000, p.dim))
    u *= (p.radius * rng.uniform(0, 1, (2000, 1)) ** (1 / p.dim)) / np.linalg.norm(u, axis=1, keepdims=True)
    s2 = p.sigma2_at(p.theta_star + u)
    assert s2.max() <= p.sigma2
    assert s2.max() >= 0.2 * p.sigma2        # the bound is not vacuous
    assert p.sigma2_at(p.theta_star) == pytest.approx(p.sigma2_star)


def test_f_star_is_exact_or_a_certified_lower_bound():
    ls = small("least_squares")
    assert np.linalg.norm(ls.grad(ls.theta_star)) < 1e-12
    rng = np.random.default_rng(7)
    pts = rng.standard_normal((300, ls.dim))
    assert ls.loss(ls.theta_star + pts).min() >= ls.f_star
    lg = small("logistic")
    assert lg.f_star <= lg.f_star_estimate <= lg.loss(lg.theta_hat + 1e-3 * pts).min() + 1e-15
    ca = small("cauchy")
    assert ca.f_star == 0.0 and ca.loss(10 * pts).min() >= 0.0


@pytest.mark.parametrize("name", FINITE)
@pytest.mark.parametrize("variance", ["with", "without"])
def test_minibatch_gradient_is_unbiased_with_variance_sigma2_phi_over_b(name, variance):
    # Monte Carlo over 4000 batches per row; tolerance 5 standard errors of each statistic.
    p = small(name)
    rows, draws = 3, 4000
    theta = np.random.default_rng(8).standard_normal(p.dim)
    b = np.array([1, 7, 30])
    model = WithReplacement() if variance == "with" else WithoutReplacement(p.n)
    sampler = make_sampler(p, model, rows * draws, seed=9)
    th = np.broadcast_to(theta, (rows * draws, p.dim)).copy()
    bb = np.repeat(b, draws)
    g = p.minibatch_grad(th, bb, np.random.default_rng(10), sampler=sampler).reshape(rows, draws, p.dim)
    full = p.grad(theta)
    s2 = float(p.sigma2_at(theta))
    for i in range(rows):
        dev = g[i] - full
        var_expected = model.factor(b[i]) * s2 / b[i]
        sq = np.sum(dev**2, axis=1)
        assert abs(sq.mean() - var_expected) <= 5 * sq.std() / np.sqrt(draws)
        assert np.all(np.abs(dev.mean(axis=0)) <= 5 * dev.std(axis=0) / np.sqrt(draws) + 1e-12)


def test_without_replacement_sampler_visits_each_sample_once_per_epoch():
    p = small("least_squares")
    sampler = make_sampler(p, WithoutReplacement(p.n), rows=2, seed=3)
    rng = np.random.default_rng(0)
    seen = [[], []]
    for _ in range(p.n // 10):                       # exactly one epoch at b = 10
        idx = sampler.indices(np.array([0, 1]), np.array([10, 10]), rng)
        seen[0] += idx[:10].tolist()
        seen[1] += idx[10:].tolist()
    assert sorted(seen[0]) == sorted(seen[1]) == list(range(p.n))
    assert seen[0] != seen[1]                         # each row has its own permutation
    sampler.indices(np.array([0]), np.array([10]), rng)
    assert sampler.epoch.tolist() == [1, 0]


def test_quadratic_noise_covariance_is_sigma_phi_over_b():
    q = small("quadratic")
    draws = 20000
    model = WithoutReplacement(50)
    sampler = make_sampler(q, model, draws, seed=0)
    g = q.minibatch_grad(np.zeros((draws, q.dim)), np.full(draws, 8), StepRandom(0, 0), sampler=sampler)
    var = g.var(axis=0)
    expected = q.noise_var * model.factor(8) / 8
    # Sample variance of a Gaussian: relative s.e. sqrt(2/draws) = 1%; allow 5 s.e.
    np.testing.assert_allclose(var, expected, rtol=0.05)
    assert q.sigma2 == pytest.approx(q.noise_var.sum())


def test_problems_are_reproducible_from_name_parameters_and_seed():
    for name in PROBLEMS:
        a, b, c = small(name, seed=4), make_problem(**{**small(name, seed=4).spec()}), small(name, seed=5)
        np.testing.assert_array_equal(a.theta0, b.theta0)
        assert a.L == b.L and a.sigma2 == b.sigma2
        if name != "quadratic":
            np.testing.assert_array_equal(a.X, b.X)
            assert not np.array_equal(a.X, c.X)


@settings(max_examples=15, deadline=None)
@given(dim=st.integers(2, 40), kappa=st.floats(1.0, 100.0), sigma2=st.floats(0.0, 10.0),
       gap=st.floats(0.01, 10.0), seed=st.integers(0, 2**16))
def test_quadratic_constants_are_exact_for_random_parameters(dim, kappa, sigma2, gap, seed):
    q = make_problem("quadratic", dim=dim, kappa=kappa, sigma2=sigma2, gap=gap, seed=seed)
    assert q.L == pytest.approx(1.0)
    assert q.eigenvalues.min() == pytest.approx(1.0 / kappa)
    assert float(q.loss(q.theta0)) == pytest.approx(gap, rel=1e-12)
    assert q.noise_var.sum() == pytest.approx(sigma2, abs=1e-12)
    assert q.constants().gap == pytest.approx(gap, rel=1e-12)


def test_unknown_problem_and_parameter_are_refused_with_the_names():
    with pytest.raises(ParameterError, match=r"'quadratic', 'least_squares', 'logistic', 'cauchy'.*"
                                             r"Got name='mnist'"):
        make_problem("mnist")
    with pytest.raises(ParameterError, match=r"keywords among n, dim.*Got params=\['depth'\]"):
        make_problem("least_squares", depth=3)
    with pytest.raises(ParameterError, match="kappa"):
        make_problem("quadratic", kappa=0.5)
    with pytest.raises(ParameterError, match=r"'kappa'.*1 when dim = 1"):
        make_problem("quadratic", dim=1, kappa=2.0)
    with pytest.raises(ParameterError, match="WithoutReplacement\\(n=120\\)"):
        make_sampler(small("least_squares"), WithoutReplacement(99), rows=1, seed=0)


def test_batch_larger_than_n_without_replacement_is_refused():
    p = small("logistic")
    sampler = make_sampler(p, WithoutReplacement(p.n), rows=1, seed=0)
    with pytest.raises(ParameterError, match=r"batch_size.*<= n = 150"):
        p.minibatch_grad(np.zeros((1, p.dim)), np.array([151]), np.random.default_rng(0), sampler=sampler)


@pytest.mark.parametrize("name", FINITE)
def test_link_derivative_is_the_links_derivative_bit_for_bit(name):
    p = make_problem(name, **SMALL[name], seed=1)
    z = 3.0 * np.random.default_rng(0).standard_normal(400)
    y = p.y[np.arange(400) % p.n]
    np.testing.assert_array_equal(p.link_derivative(z, y), p.link(z, y)[1])


def test_step_random_draws_are_those_of_the_seed_step_block_generators():
    r = StepRandom(5, 9, threads=2)
    x = r.standard_normal((300, 400))                # 120 000 numbers: filled on two threads
    np.testing.assert_array_equal(x[:150], np.random.default_rng([5, 9, 0]).standard_normal((150, 400)))
    np.testing.assert_array_equal(x[150:], np.random.default_rng([5, 9, 1]).standard_normal((150, 400)))
    np.testing.assert_array_equal(StepRandom(5, 9).integers(0, 10, size=7),
                                  np.random.default_rng([5, 9, 0]).integers(0, 10, size=7))
