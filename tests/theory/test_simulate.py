"""The vectorised simulator: it drives the one stage rule, counts SFO, stops and reports, saves and loads."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfotheory import rule
from sfotheory.constants import WithoutReplacement
from sfotheory.problems import make_problem
from sfotheory.rule import Event, Schedule, advance, check_due, constant, initial_state, periodic
from sfotheory.simulate import STOP_REASONS, SimulationResult, schedule_sequence, simulate
from sfotheory.validation import ParameterError


def quad(dim=40, **kw):
    return make_problem("quadratic", {"dim": dim, "kappa": 1.0, "sigma2": 1.0, "gap": 1.0, **kw}, seed=0)


def replay_transitions(schedule, norms_at, steps):
    """Drive rule.advance alone, scalar, with the simulator's recorded norms; return transition steps."""
    st_ = initial_state(schedule)
    out = []
    for t in range(steps):
        due = check_due(schedule, st_)
        st_, ev = advance(schedule, st_, st_.batch_size, norm=norms_at(t, st_) if due else None)
        if ev in (Event.ADVANCED, Event.PERIOD):
            out.append(st_.step)
    return out


@settings(max_examples=6, deadline=None)
@given(tau=st.integers(1, 7), eps0=st.floats(0.3, 0.9), delta=st.sampled_from([1.5, 2.0, 3.0]),
       seed=st.integers(0, 1000))
def test_adaptive_transitions_equal_the_rule_on_the_same_norm_sequence(tau, eps0, delta, seed):
    q = quad()
    sched = rule.adaptive_exponential(b0=2, eta0=0.2, eps0=eps0, delta=delta, gamma=1.1, tau=tau, b_max=512,
                                      eta_max=0.5)
    res = simulate(q, [sched], eps=1e-3, replicates=3, seed=seed, max_steps=150)
    assert res.stop_reason.tolist() == [[STOP_REASONS.index("max_steps")]] * 3
    for r in range(3):
        norms = res.trace_norm[:, r, 0]          # observed at every step: trace[t] = ||grad f(theta_t)||
        got = res.transition_step[r, 0][res.transition_step[r, 0] >= 0].tolist()
        want = replay_transitions(sched, lambda t, s: norms[t + 1], 150)
        assert got == want
        assert len(got) >= 1
        assert res.final_stage[r, 0] == len(got)


def test_before_update_order_uses_the_norm_at_theta_t():
    q = quad()
    sched = rule.adaptive_exponential(b0=2, eta0=0.2, eps0=0.8, delta=2, gamma=1.2, tau=3, b_max=256, eta_max=0.5)
    res = simulate(q, sched, eps=1e-3, replicates=2, seed=1, max_steps=90, check_order="before_update")
    for r in range(2):
        norms = res.trace_norm[:, r, 0]
        got = res.transition_step[r, 0][res.transition_step[r, 0] >= 0].tolist()
        assert got == replay_transitions(sched, lambda t, s: norms[t], 90)


def test_periodic_schedule_changes_stage_every_period_and_sfo_counts_samples():
    q = quad()
    sched = periodic(b0=3, eta0=0.1, delta=2, gamma=1.1, period=5, b_max=48, eta_max=0.5)
    res = simulate(q, sched, eps=1e-9, replicates=2, max_steps=30)
    assert res.transition_step[0, 0].tolist() == [5, 10, 15, 20]
    b, _ = schedule_sequence(sched, 30)
    assert res.sfo[0, 0] == b.sum() == 5 * (3 + 6 + 12 + 24) + 10 * 48
    assert res.transition_sfo[0, 0].tolist() == np.cumsum(5 * np.array([3, 6, 12, 24])).tolist()


def test_hit_step_and_sfo_are_consistent_with_the_trace():
    q = quad()
    res = simulate(q, [constant(b0=8, eta0=0.3), constant(b0=32, eta0=0.3)], eps=0.15, replicates=5, seed=2,
                   max_steps=400)
    assert res.hit.all()
    np.testing.assert_array_equal(res.hit_sfo, res.hit_step * np.array([8, 32]))
    for r in range(5):
        for c in range(2):
            k = res.hit_step[r, c]
            col = res.trace_norm[:, r, c]
            assert col[k] <= 0.15 and np.all(col[:k] > 0.15)
            assert np.all(np.isnan(col[k + 1:]))
    assert res.reasons()[0, 0] == "hit"


@pytest.mark.parametrize("check_order", ["after_update", "before_update"])
def test_the_traced_sfo_is_the_training_samples_that_produced_each_observed_theta(check_order):
    """trace_sfo[k] = Σ_{s<t} b_s for θ_t observed at t = trace_step[k], in both check orders (it lagged
    one step behind with the default order, where the observation precedes the rule)."""
    s = rule.adaptive_exponential(b0=8, eta0=0.3, eps0=5.0, delta=2, gamma=1.0, tau=3, b_max=64)
    res = simulate(quad(), [constant(b0=8, eta0=0.3), s], eps=1e-9, replicates=2, seed=0, max_steps=20,
                   stop_at_hit=False, check_order=check_order)
    # ε₀ = 5 is above every norm: each check moves a stage, and step t ran with b_t = 8·2^(moves made before it)
    moves = res.transition_step[1, 1]
    assert moves.size >= 3
    b_t = np.array([8 * 2 ** int(np.sum(moves <= t)) for t in range(20)])
    expected = np.concatenate([[0], np.cumsum(b_t)])[res.trace_step]
    np.testing.assert_array_equal(res.trace_sfo[:, 0, 0], 8 * res.trace_step)
    np.testing.assert_array_equal(res.trace_sfo[:, 1, 1], expected)
    np.testing.assert_array_equal(res.trace_sfo[-1], res.sfo)
    assert res.trace_step[-1] == 20


def test_exact_checks_on_a_finite_sum_cost_n_each_and_are_reported_apart():
    p = make_problem("logistic", n=200, dim=5, seed=1)
    sched = rule.adaptive_exponential(b0=4, eta0=0.5, eps0=0.05, delta=2, gamma=1.0, tau=10, b_max=64)
    res = simulate(p, sched, eps=1e-6, replicates=2, max_steps=55)
    assert res.checks.tolist() == [[5], [5]]
    assert res.check_sfo.tolist() == [[1000], [1000]]
    sub = simulate(p, sched, eps=1e-6, replicates=2, max_steps=55, monitor=("subsample", 32))
    assert sub.check_sfo.tolist() == [[160], [160]]


def test_without_replacement_runs_on_finite_sums_and_quadratic():
    p = make_problem("least_squares", n=100, dim=4, seed=0)
    res = simulate(p, [constant(b0=10, eta0=0.2), constant(b0=100, eta0=0.2)], eps=0.05, replicates=3,
                   variance=WithoutReplacement(100), max_steps=2000)
    assert res.hit.all()
    assert np.isfinite(res.sigma2_max).all() and (res.sigma2_max > 0).all()
    # b = n without replacement is full-batch gradient descent: every replicate is identical.
    assert len(set(res.hit_step[:, 1].tolist())) == 1
    simulate(quad(), constant(b0=8, eta0=0.3), eps=0.2, variance=WithoutReplacement(20), max_steps=50)


def test_budget_too_small_is_reported_per_replicate_not_raised():
    q = quad()
    res = simulate(q, [constant(b0=64, eta0=0.3), constant(b0=4, eta0=0.3)], eps=0.05, replicates=2,
                   budget=40, max_steps=100)
    assert not res.hit.any()
    assert (res.reasons() == "budget").all()
    assert res.exhausted.all()
    assert res.sfo[:, 0].tolist() == [0, 0] and res.sfo[:, 1].tolist() == [40, 40]
    assert np.isfinite(res.final_norm).all()


def test_save_and_load_round_trip(tmp_path):
    q = quad()
    sched = rule.adaptive_exponential(b0=2, eta0=0.2, eps0=0.8, delta=2, gamma=1.2, tau=3, b_max=64, eta_max=0.5)
    res = simulate(q, [sched, constant(b0=4, eta0=0.2)], eps=0.2, replicates=3, max_steps=60, seed=4)
    npz, js = res.save(tmp_path / "run")
    assert npz.exists() and js.exists()
    back = SimulationResult.load(tmp_path / "run.npz")
    assert back.config == res.config
    for f in ("hit", "hit_sfo", "transition_step", "trace_norm", "trace_sfo", "stop_reason", "final_lr"):
        np.testing.assert_array_equal(getattr(back, f), getattr(res, f))
    assert back.schedules[0] == sched
    np.testing.assert_array_equal(back.problem().theta0, q.theta0)


def test_same_seed_same_result_and_thread_count_does_not_matter():
    q = quad(dim=300)
    a = simulate(q, constant(b0=5, eta0=0.3), eps=0.1, replicates=40, seed=9, max_steps=30, threads=1)
    b = simulate(q, constant(b0=5, eta0=0.3), eps=0.1, replicates=40, seed=9, max_steps=30, threads=2)
    np.testing.assert_array_equal(a.trace_norm, b.trace_norm)


def test_the_simulators_single_blas_thread_computes_the_same_products_and_is_restored():
    """Within rounding: OpenBLAS may sum in another order with several threads (on some CPUs' kernels it
    does, by ~1e-13 relative), so bit equality is not a property of the code; the simulator itself always
    runs on the one thread, whose results do not depend on the machine's load."""
    from threadpoolctl import threadpool_info

    from sfotheory.simulate import _one_blas_thread

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    rng = np.random.default_rng(0)
    theta, X = rng.standard_normal((600, 20)), rng.standard_normal((1000, 20))   # big enough for threaded BLAS
    before = blas_threads()
    assert before, "numpy's BLAS is not seen by threadpoolctl"
    outside = (theta @ X.T, (theta @ X.T) @ X)
    with _one_blas_thread():
        assert all(n == 1 for n in blas_threads())
        inside = (theta @ X.T, (theta @ X.T) @ X)
    for a, b in zip(inside, outside):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(np.abs(b).max()))
    assert blas_threads() == before


def test_bad_input_messages_name_the_value():
    q = quad()
    with pytest.raises(ParameterError, match=r"'eta0'.*< 2/L = 2 for problem 'quadratic'.*Got eta0=2\.5"):
        simulate(q, constant(b0=4, eta0=2.5), eps=0.1)
    with pytest.raises(ParameterError, match=r"'eta_max'.*reaches"):
        simulate(q, periodic(b0=4, eta0=0.5, delta=4, gamma=1.9, period=5, b_max=4096), eps=0.1)
    p = make_problem("least_squares", n=50, dim=3)
    with pytest.raises(ParameterError, match=r"'b0'.*<= n = 50.*Got b0=64"):
        simulate(p, constant(b0=64, eta0=0.1), eps=0.1, variance=WithoutReplacement(50))
    with pytest.raises(ParameterError, match=r"'b_max'.*<= n = 50"):
        simulate(p, periodic(b0=8, eta0=0.1, delta=2, gamma=1.0, period=3, b_max=64), eps=0.1,
                 variance=WithoutReplacement(50))
    for eps in (0.0, -1.0):
        with pytest.raises(ParameterError, match=rf"'eps'.*> 0.*Got eps={eps}"):
            simulate(q, constant(b0=4, eta0=0.1), eps=eps)
    with pytest.raises(ParameterError, match="'budget'"):
        simulate(q, constant(b0=4, eta0=0.1), eps=0.1, budget=0)
    with pytest.raises(ParameterError, match="'monitor'"):
        simulate(q, constant(b0=4, eta0=0.1), eps=0.1, monitor="debiased")
    with pytest.raises(ParameterError, match="'check_order'"):
        simulate(q, constant(b0=4, eta0=0.1), eps=0.1, check_order="later")


def test_diverging_learning_rate_is_reported_when_allowed():
    q = quad()
    res = simulate(q, constant(b0=4, eta0=2.5), eps=0.1, replicates=2, max_steps=5000, allow_unstable=True)
    assert (res.reasons() == "diverged").all() and not res.hit.any()


def test_schedules_can_be_a_linear_per_stage_schedule_built_on_the_rule():
    q = quad()
    lin = Schedule("linear_periodic", b0=2, eta0=0.2, eps0=1.0, increment=3, trigger="period", period=4)
    res = simulate(q, lin, eps=1e-9, max_steps=16)
    b, _ = schedule_sequence(lin, 16)
    assert b[::4, 0].tolist() == [2, 5, 8, 11]
    assert res.sfo[0, 0] == b.sum()
