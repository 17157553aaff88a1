"""The empirical critical batch size: order-statistic CI, the K(b) fit, b-hat* vs b* on the noisy quadratic."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfotheory.cbs import CBSResult, cbs_sweep, fit_steps_curve, log_grid, median_ci, plot_cbs
from sfotheory.complexity import theory_constants
from sfotheory.problems import make_problem
from sfotheory.validation import ParameterError


@settings(max_examples=25, deadline=None)
@given(c1=st.floats(0.1, 100.0), c2=st.floats(0.01, 10.0), eps=st.floats(0.05, 1.0), spread=st.floats(1.2, 20.0))
def test_fit_recovers_c1_c2_from_the_exact_curve(c1, c2, eps, spread):
    b_min = c2 / eps**2
    b = b_min * np.geomspace(1.1, 1.1 * spread, 9)
    K = c1 * b / (eps**2 * b - c2)
    f1, f2 = fit_steps_curve(b, K, eps)
    assert f1 == pytest.approx(c1, rel=1e-5)
    assert f2 == pytest.approx(c2, rel=1e-5)


def test_median_ci_covers_the_median_about_as_often_as_stated():
    # 2000 samples of size 32 from an exponential law: coverage of the true median must be >= 95% minus
    # 3 binomial standard errors (0.5%), the order-statistic interval being conservative by construction.
    rng = np.random.default_rng(0)
    x = rng.exponential(size=(32, 2000))
    _, lo, hi = median_ci(x, 0.95)
    cover = np.mean((lo <= math.log(2)) & (math.log(2) <= hi))
    assert cover >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / 2000)
    med, lo, hi = median_ci(np.array([[1.0], [2.0], [np.inf], [np.inf], [np.inf]]))
    assert math.isinf(med[0])


# Stated factor, observed on the well-conditioned noisy quadratic (kappa <= 1.1, isotropic noise, d >= 200):
# the measured critical batch size is b-hat* = (0.48 .. 0.56) b*, i.e. at the noise floor C2/eps^2 = b*/2 (see
# sfotheory.quadratic_theory for why). We assert b-hat*/b* in [0.4, 0.75], b-hat* within [0.8, 1.5] of the
# floor, and within 25% of the exact-expectation minimiser; 8 replicates, so the median N has some noise.
@settings(max_examples=6, deadline=None)
@given(dim=st.integers(200, 500), kappa=st.floats(1.0, 1.1), sigma2=st.floats(0.5, 2.0), eta=st.floats(0.05, 0.3),
       b_star=st.floats(20.0, 80.0), seed=st.integers(0, 10**6))
@pytest.mark.slow
def test_measured_critical_batch_size_sits_at_the_noise_floor_about_half_of_b_star(dim, kappa, sigma2, eta,
                                                                                   b_star, seed):
    q = make_problem("quadratic", dim=dim, kappa=kappa, sigma2=sigma2, gap=1.0, seed=seed % 101)
    _, c2 = theory_constants(q.constants(), eta)
    eps = math.sqrt(2 * c2 / b_star)
    r = cbs_sweep(q, eps=eps, eta=eta, num_batch_sizes=12, span=(0.25, 4.0), replicates=8, seed=seed,
                  max_steps=800, refine=1)
    assert r.b_star == pytest.approx(b_star, rel=1e-9)
    assert 0.4 <= r.ratio_measured <= 0.75
    assert 0.8 <= r.b_hat_measured / r.b_min <= 1.5
    assert abs(r.b_hat_measured / r.b_hat_expected - 1) <= 0.25
    # The bound's C1 is loose by orders of magnitude on a strongly convex problem; C2 (the pole) much less.
    assert r.C1_fit < 0.1 * r.C1
    assert 0.2 < r.C2_fit / r.C2 < 1.5


def test_sweep_result_table_json_plot_and_round_trip(tmp_path):
    q = make_problem("quadratic", dim=100, seed=1)
    r = cbs_sweep(q, eps=0.08, eta=0.2, num_batch_sizes=6, replicates=4, max_steps=300)
    assert len(r.batch_sizes) == 6 and r.batch_sizes == sorted(r.batch_sizes)
    text = r.table()
    assert "b* = 2 C2/eps^2" in text and "measured" in text
    back = CBSResult.load(r.save(tmp_path / "cbs.json"))
    assert back == r
    json.loads((tmp_path / "cbs.json").read_text())
    png = plot_cbs(r, tmp_path / "cbs.png")
    assert png.stat().st_size > 10_000


def test_sweep_on_a_finite_sum_has_no_exact_expectation_column():
    p = make_problem("least_squares", n=200, dim=5, seed=0)
    r = cbs_sweep(p, eps=0.05, batch_sizes=[2, 8, 32], replicates=4, max_steps=1500)
    assert math.isnan(r.b_hat_expected)
    assert "exact E" not in r.table()
    assert all(h > 0 for h in r.hit_fraction)


def test_log_grid_and_bad_input():
    assert log_grid(0.2, 3, 5).tolist() == [1, 2, 3]
    q = make_problem("quadratic", dim=10)
    with pytest.raises(ParameterError, match=r"'eps'.*Got eps=0\.0"):
        cbs_sweep(q, eps=0.0)
    with pytest.raises(ParameterError, match=r"'eta'.*< 2/L = 2.*Got eta=2\.0"):
        cbs_sweep(q, eps=0.1, eta=2.0)
    with pytest.raises(ParameterError, match="'batch_sizes'"):
        cbs_sweep(q, eps=0.1, batch_sizes=[0, 4])
