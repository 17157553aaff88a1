"""The torch paper checks (claims 3, 6, 7) in smoke mode, and the run helpers they share.

Smoke mode exercises each check's code in seconds; its verdicts are not evidence.
"""

import math

import pytest

torch = pytest.importorskip("torch")

from sfotheory import rule  # noqa: E402

from paper_checks.torch_runs import (  # noqa: E402
    RunResult,
    build_optimizer,
    fmt_mean_std,
    mean_std,
    scaled_to_subset,
    synthetic_data,
    train_run,
)



@pytest.fixture(scope="module")
def data():
    return synthetic_data(96, seed=1)


# -- the helpers ---------------------------------------------------------------------------------------

def test_training_sfo_counts_true_batch_lengths_including_the_short_last_batch(data):
    # n = 96, b = 40: every epoch is 40 + 40 + 16; 7 steps = 40+40+16 + 40+40+16 + 40 = 232
    s = rule.constant(b0=40, eta0=0.05, tau=7)
    run = train_run(s, data, seed=0, max_steps=7, widths=(4, 4, 4))
    assert run.steps == 7
    assert run.train_samples == 232
    assert run.batch_sizes == {40: 5, 16: 2}


@pytest.mark.slow
def test_every_check_records_the_exact_norm_and_costs_n_for_every_schedule(data):
    n = len(data)
    for s in (rule.constant(b0=8, eta0=0.05, tau=3),
              rule.periodic(b0=8, eta0=0.05, delta=2, gamma=1.4, period=4, tau=3),
              rule.adaptive_exponential(b0=8, eta0=0.05, eps0=10.0, delta=2, gamma=1.4, tau=3)):
        run = train_run(s, data, seed=0, max_steps=12, widths=(4, 4, 4))
        assert [r.step for r in run.records] == [3, 6, 9, 12]
        assert all(math.isfinite(r.norms["exact"]) and r.norms["exact"] >= 0 for r in run.records)
        assert [r.check_samples for r in run.records] == [n, 2 * n, 3 * n, 4 * n]
        assert run.check_samples == 4 * n


def test_a_diverging_run_ends_as_diverged_with_what_it_recorded(data):
    """A schedule whose η grows past 2/L diverges: the run is a result (censored), not an error."""
    s = rule.constant(b0=8, eta0=1e30, tau=2)
    run = train_run(s, data, seed=0, max_steps=50, widths=(4, 4, 4))
    assert run.stop_reason == "diverged" and run.steps < 50


def test_adaptive_run_advances_on_the_exact_norm_and_records_the_stage_it_ran_with():
    # ε₀ = 10 is above any norm here: every check advances, so b doubles at each check
    s = rule.adaptive_exponential(b0=4, eta0=0.05, eps0=10.0, delta=2, gamma=1.4, tau=2, b_max=32)
    run = train_run(s, synthetic_data(160, seed=2), seed=0, max_steps=8, widths=(4, 4, 4))
    assert [r.b for r in run.records] == [4, 8, 16, 32]
    assert [r.event for r in run.records] == ["ADVANCED"] * 3 + ["AT_MAX"]
    assert run.train_samples == 2 * (4 + 8 + 16 + 32)


@pytest.mark.slow
def test_extra_monitors_measure_at_the_same_checks_and_the_exact_norm_is_deterministic(data):
    s = rule.constant(b0=8, eta0=0.05, tau=4)
    kw = dict(seed=3, max_steps=8, widths=(4, 4, 4))
    a = train_run(s, data, extra_monitors={"sub": {"sample_size": 32}},
                  debiased={"variance_source": "per_sample_norms"}, timing_reps=1, **kw)
    b = train_run(s, data, **kw)
    assert all(set(r.norms) == {"exact", "sub", "debiased"} for r in a.records)
    assert [r.norms["exact"] for r in a.records] == pytest.approx([r.norms["exact"] for r in b.records], rel=1e-5)
    assert a.check_samples == b.check_samples      # the deciding monitor (exact) is what the scheduler counts
    assert set(a.backward_timing) == {8} and a.debiased_overhead_s() >= 0


def test_crossing_counts_a_threshold_only_when_reached_from_above():
    def rec(norm, step):
        from paper_checks.torch_runs import CheckRecord
        return CheckRecord(step=step, train_samples=10 * step, check_samples=100 * step, stage=0, b=10, eta=0.1,
                           eps_m=1.0, event="CHECKED", norms={"exact": norm}, loss=0.0, train_wall_s=0.0,
                           measure_wall_s={})
    run = RunResult(label="x", seed=0, schedule={"trigger": "norm"}, optimizer="sgd", n=100,
                    records=[rec(0.2, 1), rec(1.5, 2), rec(0.8, 3)], transitions=[], steps=3, train_samples=30,
                    check_samples=300, train_wall_s=0.0, measure_wall_s={}, stop_reason="max_steps")
    assert run.crossing(1.0).step == 3
    assert run.crossing(1.0, from_above=False).step == 1
    assert run.sfo_to(1.0, counted=False) == 30 and run.sfo_to(1.0, counted=True) == 330
    assert run.steps_to(0.1) == math.inf
    run.schedule = {"trigger": "never"}     # a baseline needs no checks: counted = training only
    assert run.sfo_to(1.0, counted=True) == 30


def test_scaled_settings_keep_the_authors_values_in_epochs():
    assert scaled_to_subset(50_000) == {"tau": 1000, "period": 20_000, "b_const": 128}
    assert scaled_to_subset(10_000)["tau"] == 200       # the reference CPU run's τ


def test_optimizers_and_summaries():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert type(build_optimizer("adam", p, 1e-3)).__name__ == "Adam"
    assert build_optimizer("momentum", p, 0.01).param_groups[0]["momentum"] == 0.9
    assert build_optimizer("sgd", p, 0.1).param_groups[0]["momentum"] == 0
    assert mean_std([2.0, 4.0]) == (3.0, pytest.approx(math.sqrt(2)))
    assert fmt_mean_std([1.0, math.inf]).startswith("not reached in 1 of 2")


def test_evaluations_at_chosen_steps_leave_the_run_as_it_was(data):
    s = rule.constant(b0=8, eta0=0.05, tau=4)
    kw = dict(seed=3, max_steps=8, widths=(4, 4, 4))
    a = train_run(s, data, evaluate_at=[2, 8, 50], test_data=synthetic_data(40, seed=5), **kw)
    b = train_run(s, data, **kw)
    assert sorted(a.evaluations) == [2, 8]              # step 50 is never reached
    e = a.evaluations[8]
    assert set(e) == {"train_loss", "test_loss", "test_acc"} and 0 <= e["test_acc"] <= 1
    assert e["train_loss"] > 0 and b.evaluations == {}
    # evaluating draws no random number and restores train mode: the trajectory is unchanged
    assert [r.norms["exact"] for r in a.records] == [r.norms["exact"] for r in b.records]
    assert [r.loss for r in a.records] == [r.loss for r in b.records]


def test_the_debiased_wall_fraction_is_not_measured_when_its_timing_exceeds_the_training():
    """The hooks' paired timing × steps ≥ the run's training wall time (the load changed in between):
    the fraction is NaN, not a ratio over a clamped denominator (it printed 2.4e+09 under load)."""
    from types import SimpleNamespace

    from paper_checks.check_measurement_cost import wall_fraction

    def run(over, train):
        return SimpleNamespace(debiased_overhead_s=lambda: over, train_wall_s=train, measure_wall_s={"exact": 3.0})

    assert wall_fraction(run(1.0, 11.0), "debiased") == pytest.approx(0.1)
    assert math.isnan(wall_fraction(run(11.0, 11.0), "debiased"))
    assert math.isnan(wall_fraction(run(12.0, 11.0), "debiased"))
    assert wall_fraction(run(1.0, 12.0), "exact") == pytest.approx(0.25)
