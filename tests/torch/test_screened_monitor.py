"""The screened monitor (sfotorch.monitors.screened): the debiased window rules checks out for free,
the sequential test decides the others, so that no stage advances on the window alone.

The screen is fed chosen statistics through DebiasedMonitor.update (‖g_B‖², tr Σ̂, b per step); the
test measures a linear least-squares model whose ‖∇f‖ is known in closed form (the problem of
test_sequential_monitor).
"""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.monitors import DebiasedMonitor, ExactMonitor, ScreenedMonitor, SequentialMonitor  # noqa: E402
from tests.torch.test_sequential_monitor import N, least_squares, model_at  # noqa: E402

EPS = 0.5


def monitors(sq_norm, seed=0):
    """(screen, test) on a model with ‖∇f‖² = ``sq_norm``."""
    x, y, w_ls, hess = least_squares()
    model = model_at(x, w_ls, hess, sq_norm)
    screen = DebiasedMonitor(model, nn.MSELoss(), variance_source="per_sample_norms", population=N)
    test = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, seed=seed)
    return screen, test


def feed(screen, values, trace=0.0, b=32):
    """One step per value: ‖g_B‖² = value, tr Σ̂ = ``trace`` (so u_t = value − (1 − b/n) trace / b)."""
    for v in values:
        screen.update(v, trace, b)


def test_a_window_that_says_below_does_not_advance_when_the_test_at_theta_says_above():
    """‖∇f‖² = 9 ε_m² at θ, but the window's steps say u_t ≈ 0.25 ε_m² with a small spread (a window that
    drifted): alone, the debiased monitor decides "below" (a stage would advance); screened, the sequential
    test measures at θ, decides "above" and charges its samples."""
    screen, test = monitors(9 * EPS * EPS)
    window = [0.25 * EPS * EPS * (1 + 0.01 * (i % 3)) for i in range(8)]
    feed(screen, window)
    alone = screen.measure(eps_m=EPS)
    assert alone.decides_below(EPS) and not alone.undecided
    screen, test = monitors(9 * EPS * EPS)
    feed(screen, window)
    m = ScreenedMonitor(screen, test).measure(eps_m=EPS)
    assert not m.decides_below(EPS) and m.extra["decision"] in ("above", "exact")
    assert m.cost == m.extra["looks"][-1]["samples"] > 0 and test.calls == 1
    assert m.monitor == "screened" and m.extra["screen"]["norm"] == pytest.approx(alone.norm)
    exact = ExactMonitor(test.model, test.dataset, nn.MSELoss()).measure()
    assert exact.norm == pytest.approx(3 * EPS, rel=1e-9)


def test_a_window_whose_interval_lies_above_eps_rules_the_check_out_at_no_cost():
    """u_t ≈ 16 ε_m² on every step: the window's lower bound is far above ε_m, the check is "above" with
    cost 0 and the sequential test is not called (its call count, which fixes its subsets, stays 0)."""
    screen, test = monitors(0.01)
    feed(screen, [16 * EPS * EPS * (1 + 0.02 * (i % 4)) for i in range(8)])
    mon = ScreenedMonitor(screen, test)
    m = mon.measure(eps_m=EPS)
    assert m.cost == 0 and test.calls == 0 and mon.screened_out == 1
    assert m.extra["decision"] == "above (screen)" and m.lower > EPS and not m.decides_below(EPS)


@pytest.mark.parametrize("window", ["clamped", "empty"])
def test_a_window_that_cannot_tell_hands_the_check_to_the_test(window):
    """A clamped window (ū < 0) or an empty one (no statistics step: NaN) rules nothing out: the test
    decides; with ‖∇f‖² = ε_m²/16 at θ it decides "below" (the stage may advance) and charges its samples."""
    screen, test = monitors(EPS * EPS / 16)
    if window == "clamped":
        feed(screen, [0.0, 0.001, 0.0, 0.002], trace=5.0)
    m = ScreenedMonitor(screen, test).measure(eps_m=EPS)
    assert test.calls == 1 and m.cost > 0 and m.decides_below(EPS)
    assert m.extra["screen"]["undecided"] or math.isnan(m.extra["screen"]["norm"])


def test_state_round_trips_and_a_resumed_monitor_measures_the_same():
    screen, test = monitors(EPS * EPS / 16)
    mon = ScreenedMonitor(screen, test)
    mon.measure(eps_m=EPS)
    feed(screen, [0.0, 0.001, 0.0], trace=5.0)         # a clamped window: the next check goes to the test
    state = mon.state_dict()
    twin_screen, twin_test = monitors(EPS * EPS / 16)
    twin = ScreenedMonitor(twin_screen, twin_test)
    twin.load_state_dict(state)
    assert twin.state_dict() == state
    a, b = mon.measure(eps_m=EPS), twin.measure(eps_m=EPS)
    assert a.cost > 0 and test.calls == twin_test.calls == 2          # the restored test measured, on call 1
    assert (a.norm, a.cost, a.extra["decision"]) == (b.norm, b.cost, b.extra["decision"])


def test_refusals_name_the_parameter():
    screen, test = monitors(0.1)
    with pytest.raises(ParameterError, match=r"'screen' parameter of ScreenedMonitor must be a DebiasedMonitor"):
        ScreenedMonitor(test, test)
    with pytest.raises(ParameterError, match=r"'test' parameter of ScreenedMonitor must be a SequentialMonitor"):
        ScreenedMonitor(screen, screen)
    with pytest.raises(ParameterError, match=r"'eps_m' parameter of ScreenedMonitor.measure must be given"):
        ScreenedMonitor(screen, test).measure()
    with pytest.raises(ParameterError, match=r"'state' parameter of ScreenedMonitor.load_state_dict"):
        ScreenedMonitor(screen, test).load_state_dict({"screen": {}})
