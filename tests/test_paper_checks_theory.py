"""The helpers of the simulator checks of paper_checks on known inputs (every check runs end to end in
smoke mode in tests/test_reproduce.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest


# -- check_critical_batch_size: the U-shape detector ------------------------------------------------

def test_u_shape_detector_accepts_a_sampled_proposition2_curve():
    from paper_checks.check_critical_batch_size import is_u_shaped

    C1, C2, eps = 10.0, 0.05, 0.05
    b = np.geomspace(10, 1000, 15)
    N = np.where(b > C2 / eps**2, C1 * b**2 / (eps**2 * b - C2), np.inf)
    shape = is_u_shaped(N)
    assert shape.ok
    assert abs(math.log(b[shape.argmin] / (2 * C2 / eps**2))) <= math.log(b[1] / b[0])


@pytest.mark.parametrize("values, reason", [
    ([1.0, 2.0, 3.0], "first grid point"),
    ([3.0, 2.0, 1.0], "last grid point"),
    ([5.0, 2.0, 6.0, 4.0, 8.0], "right arm falls"),
    ([float("inf")] * 4, "no finite value"),
    ([1.0, 2.0], "fewer than 3"),
])
def test_u_shape_detector_rejects_curves_that_are_not_u_shaped(values, reason):
    from paper_checks.check_critical_batch_size import is_u_shaped

    shape = is_u_shaped(values)
    assert not shape.ok and reason in shape.reason


def test_u_shape_detector_forgives_steps_within_the_uncertainty_only():
    from paper_checks.check_critical_batch_size import is_u_shaped

    v = [5.0, 3.0, 3.5, 2.0, 4.0]
    assert not is_u_shaped(v).ok
    assert is_u_shaped(v, uncertainty=[0, 0.3, 0.3, 0, 0]).ok
    assert not is_u_shaped(v, uncertainty=[0, 0.2, 0.2, 0, 0]).ok
    # both ends must stand above the minimum beyond their uncertainty
    assert not is_u_shaped([2.1, 2.0, 3.0], uncertainty=[0.1, 0.1, 0.0]).ok


# -- check_exponential_vs_linear: decay slope and first hits ---------------------------------------

@pytest.mark.parametrize("ratio", [0.5, 1 / 1.4, 0.9, 1.3])
def test_decay_slope_of_a_geometric_sequence_is_log_of_its_ratio(ratio):
    from paper_checks.check_exponential_vs_linear import per_stage_decay_slope

    assert per_stage_decay_slope(3.0 * ratio ** np.arange(8)) == pytest.approx(math.log(ratio), rel=1e-12)


def test_first_hits_returns_the_first_crossing_per_replicate_and_inf_where_never():
    from paper_checks.check_exponential_vs_linear import first_hits

    norm = np.array([[2.0, 2.0, 2.0], [0.9, 1.5, 2.0], [1.2, 0.8, 2.0], [0.1, 0.1, 1.1]])
    x = np.arange(4)[:, None] * np.array([[1, 10, 100]])
    np.testing.assert_array_equal(first_hits(norm, x, 1.0), [1.0, 20.0, np.inf])


# -- check_gamma_boundary: the variance-sum classification -----------------------------------------

@pytest.mark.parametrize("gamma, delta, bounded", [(1.0, 2.0, True), (1.4, 2.0, True), (math.sqrt(2), 2.0, False),
                                                   (1.5, 2.0, False), (1.9, 4.0, True), (2.0, 4.0, False)])
def test_variance_sum_is_bounded_exactly_below_sqrt_delta(gamma, delta, bounded):
    from paper_checks.check_gamma_boundary import variance_sum_bounded

    assert variance_sum_bounded(gamma, delta) is bounded


# -- check_eps0_sensitivity: stall prediction and racing count -------------------------------------

def test_predicted_stall_stage_is_the_first_stage_whose_floor_exceeds_its_threshold():
    from paper_checks.check_eps0_sensitivity import predicted_stall_stage

    rows = [(8, 0.1, 0.5, 0.2), (16, 0.14, 0.35, 0.1), (32, 0.2, 0.25, 0.07), (64, 0.27, 0.18, 0.05)]
    assert predicted_stall_stage(rows) == 2             # 0.07 > 0.25^2 = 0.0625
    assert predicted_stall_stage(rows[:2]) is None      # the last stage (b_max) has no threshold to pass


def test_predicted_stall_stage_matches_the_closed_form_for_gamma_above_one():
    """With eps0 = eps_ref, the floor C2(eta_m)/b_m passes eps_m^2 = 2 C2(eta0)/b_m once C2(eta_m) > 2 C2(eta0)."""
    from paper_checks.check_eps0_sensitivity import _floors, predicted_stall_stage
    from sfotheory.complexity import theory_constants
    from sfotheory.constants import ProblemConstants
    from sfotheory.rule import adaptive_exponential

    c = ProblemConstants(L=1.0, sigma2=1.0, gap=1.0)
    _, c2 = theory_constants(c, 0.1)
    s = adaptive_exponential(b0=8, eta0=0.1, eps0=math.sqrt(2 * c2 / 8), delta=2, gamma=1.4, tau=10, b_max=1024)
    m = next(k for k in range(20) if theory_constants(c, 0.1 * 1.4**k)[1] > 2 * c2)
    assert predicted_stall_stage(_floors(s, c)) == m


def test_racing_stages_counts_stages_left_at_their_first_check():
    from paper_checks.check_eps0_sensitivity import racing_stages

    assert racing_stages(np.array([10, 20, 30]), tau=10) == 3
    assert racing_stages(np.array([50, 60, 200, -1, -1]), tau=10) == 1
    assert racing_stages(np.array([-1, -1]), tau=10) == 0
