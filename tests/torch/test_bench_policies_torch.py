"""benchmarks/bench_policies_torch.py: its aggregation on fabricated runs, its raw file, and one tiny real run.

The fabricated runs are observed at the training-SFO marks 0, 100, 200, 300 (n = 100, 3 epochs, K = n), two seeds,
three policies: ``algorithm2`` (reaches some targets), ``constant`` (for accuracy at equal SFO) and ``adascale``
(never below any target; seed 1 diverges after the first mark). Expected numbers are computed by hand in the
comments. The last test trains two policies for 2 epochs of 200 images on a 386-parameter CNN (a few seconds).
"""

from __future__ import annotations

import math

from pathlib import Path

import pytest

from tests.benchmark_module import benchmark_module

torch = pytest.importorskip("torch")

from sfotorch.datasets import DEBIAN_FASHION_MNIST  # noqa: E402

T_975_1 = 12.706204736174694            # t quantile 0.975 with 1 degree of freedom


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("bench_policies_torch") as module:
        yield module


def fake_run(norm, acc, sfo, step, meas, *, wall=10.0, diverged_after=None):
    """A run record as ``run`` returns it; observations after index ``diverged_after`` are those of a divergence."""
    obs = []
    for j, values in enumerate(zip(step, sfo, meas, norm, acc)):
        if diverged_after is not None and j > diverged_after:
            obs.append({"step": None, "sfo": None, "meas": None, "norm": math.inf, "acc": None, "b": None,
                        "eta": None})
        else:
            st, sf, me, no, ac = values
            obs.append({"step": st, "sfo": sf, "meas": me, "norm": no, "acc": ac, "b": 8, "eta": 0.1})
    return {"policy_config": {}, "observations": obs, "marks": [0, 100, 200, 300], "transitions": [], "wall_s": wall,
            "observe_s": 1.0, "train_sfo": sfo[-1], "measure_sfo": meas[-1], "steps": step[-1], "final_b": 8,
            "final_eta": 0.1, "moves": 0, "one_sample_checks": 0,
            "diverged": None if diverged_after is None else {"step": 5, "sfo": 120, "error": "nan"},
            "threads": 1, "params": 386}


POLICIES = ["algorithm2", "constant", "adascale"]
SEEDS = [0, 1]


@pytest.fixture
def runs():
    return {
        # means over the seeds of ‖∇f‖ at j = 1, 2, 3: 0.7, 0.5, 0.25 (θ₀'s 0.1 is left out of the search)
        ("algorithm2", 0): fake_run(norm=[0.1, 0.9, 0.4, 0.2], acc=[0.1, 0.5, 0.6, 0.7], sfo=[0, 104, 200, 304],
                                    step=[0, 12, 20, 26], meas=[0, 0, 1000, 1000], wall=10.0),
        ("algorithm2", 1): fake_run(norm=[0.1, 0.5, 0.6, 0.3], acc=[0.1, 0.4, 0.6, 0.8], sfo=[0, 100, 208, 300],
                                    step=[0, 13, 19, 27], meas=[0, 1000, 1000, 2000], wall=12.0),
        ("constant", 0): fake_run(norm=[0.1, 1.0, 1.0, 1.0], acc=[0.1, 0.3, 0.5, 0.6], sfo=[0, 128, 256, 384],
                                  step=[0, 1, 2, 3], meas=[0, 0, 0, 0]),
        ("constant", 1): fake_run(norm=[0.1, 1.0, 1.0, 1.0], acc=[0.1, 0.2, 0.4, 0.7], sfo=[0, 128, 256, 384],
                                  step=[0, 1, 2, 3], meas=[0, 0, 0, 0]),
        ("adascale", 0): fake_run(norm=[0.1, 2.0, 2.0, 2.0], acc=[0.1, 0.3, 0.3, 0.3], sfo=[0, 128, 256, 384],
                                  step=[0, 2, 4, 6], meas=[0, 0, 0, 0]),
        ("adascale", 1): fake_run(norm=[0.1, 2.0, 0, 0], acc=[0.1, 0.3, 0, 0], sfo=[0, 128, 0, 0],
                                  step=[0, 2, 0, 0], meas=[0, 0, 0, 0], diverged_after=1),
    }


def rows_by(rows):
    return {(r["policy"], r["eps"]): r for r in rows}


def test_expectation_criterion_finds_the_first_mark_where_the_mean_norm_is_below_eps(bench, runs):
    obs = bench.observed(runs, POLICIES, SEEDS)
    rows = rows_by(bench.passage_rows(obs, POLICIES, [0.6, 0.3, 0.2], resamples=1000, seed=0, confidence=0.95))
    r = rows[("algorithm2", 0.6)]
    # mean norm 0.7 at j = 1 (> 0.6), 0.5 at j = 2: t* = the mark 200
    assert r["mark"] == 200
    assert r["steps"] == pytest.approx((20 + 19) / 2)               # 19.5
    assert r["sfo"] == pytest.approx((200 + 208) / 2)               # 204
    assert r["measured"] == pytest.approx((1200 + 1208) / 2)        # training + measurement: 1204
    assert r["acc"] == pytest.approx(0.6)                           # (0.6 + 0.6)/2
    assert r["reached"] == 1.0
    r = rows[("algorithm2", 0.3)]
    # 0.5 at j = 2 (> 0.3), 0.25 at j = 3: t* = the mark 300
    assert (r["mark"], r["steps"], r["sfo"]) == (300, pytest.approx(26.5), pytest.approx(302))
    assert r["measured"] == pytest.approx((1304 + 2300) / 2)        # 1802
    assert r["acc"] == pytest.approx(0.75)


def test_bootstrap_interval_resamples_seeds(bench, runs):
    obs = bench.observed(runs, POLICIES, SEEDS)
    r = rows_by(bench.passage_rows(obs, POLICIES, [0.6], resamples=1000, seed=0, confidence=0.95))[("algorithm2", 0.6)]
    # the three resamples of two seeds, with probabilities 1/4, 1/2, 1/4:
    #   seed 1 twice: its own 0.5 at j = 1 is <= 0.6, so t* = j1: SFO 100, steps 13
    #   one of each: the estimate, SFO 204, steps 19.5;   seed 0 twice: 0.9 then 0.4: t* = j2, SFO 200, steps 20
    # sorted SFO: 100 (25%), 200 (25%), 204 (50%) -> the 2.5% and 97.5% quantiles are 100 and 204
    assert (r["sfo_lo"], r["sfo_hi"]) == (100, 204)
    assert (r["steps_lo"], r["steps_hi"]) == (13, 20)
    # with measurement: seed 1 twice 100 + 1000 = 1100 (25%); seed 0 twice 200 + 1000 = 1200 (25%); 1204 (50%)
    assert (r["measured_lo"], r["measured_hi"]) == (1100, 1204)


def test_a_policy_that_never_reaches_eps_is_not_reached_and_a_lone_seed_counts_in_reached(bench, runs):
    obs = bench.observed(runs, POLICIES, SEEDS)
    rows = rows_by(bench.passage_rows(obs, POLICIES, [0.6, 0.2], resamples=200, seed=0, confidence=0.95))
    never = rows[("adascale", 0.6)]
    assert math.isinf(never["mark"]) and math.isinf(never["sfo"]) and math.isinf(never["sfo_hi"])
    assert never["reached"] == 0.0
    # algorithm2 at 0.2: means 0.7, 0.5, 0.25 never <= 0.2; but seed 0's own 0.2 at j = 3 is: reached 1/2
    low = rows[("algorithm2", 0.2)]
    assert math.isinf(low["mark"]) and low["reached"] == 0.5


def test_theta0_is_left_out_of_the_search(bench, runs):
    obs = bench.observed(runs, POLICIES, SEEDS)
    # every run starts at 0.1 <= 0.15; constant never goes back below 1.0 after it
    r = rows_by(bench.passage_rows(obs, POLICIES, [0.15], resamples=50, seed=0, confidence=0.95))[("constant", 0.15)]
    assert math.isinf(r["mark"]) and r["reached"] == 0.0


def test_accuracy_at_equal_sfo_is_interpolated_and_paired_with_algorithm2(bench, runs):
    obs = bench.observed(runs, POLICIES, SEEDS)
    acc = bench.accuracy_at(obs, [150, 300])
    # algorithm2 seed 0 between (104, 0.5) and (200, 0.6): 0.5 + 46/96 · 0.1 = 0.547916...
    # seed 1 between (100, 0.4) and (208, 0.6): 0.4 + 50/108 · 0.2 = 0.492592...
    assert acc[0, :, 0] == pytest.approx([0.5 + 46 / 96 * 0.1, 0.4 + 50 / 108 * 0.2], abs=1e-12)
    # at 300: seed 0 between (200, 0.6) and (304, 0.7): 0.6 + 100/104 · 0.1; seed 1 observed at exactly 300: 0.8
    assert acc[1, :, 0] == pytest.approx([0.6 + 100 / 104 * 0.1, 0.8], abs=1e-12)
    # constant at 150, between (128, ·) and (256, ·): seed 0 0.3 + 22/128 · 0.2 = 0.334375, seed 1 0.234375
    assert acc[0, :, 1] == pytest.approx([0.334375, 0.234375], abs=1e-12)
    # adascale seed 1 diverged after 128 SFO: no accuracy at 150
    assert acc[0, 0, 2] == pytest.approx(0.3) and math.isnan(acc[0, 1, 2])

    rows = {(r["policy"], r["sfo"]): r for r in bench.accuracy_rows(obs, POLICIES, [150, 300])}
    a = rows[("algorithm2", 150)]
    # mean (0.5479167 + 0.4925926)/2 = 0.5202546; s = 0.0553241/√2; half = t · s/√2 = t · 0.0553241/2 = 0.3514795
    assert a["acc"] == pytest.approx(0.5202546296296297, abs=1e-12)
    assert a["acc_half"] == pytest.approx(0.3514795060122398, rel=1e-9) and a["n"] == 2
    assert a["diff"] is None                                      # the reference has no difference to itself
    c = rows[("constant", 150)]
    # paired, seed by seed: 0.334375 − 0.5479167 = −0.2135417 and 0.234375 − 0.4925926 = −0.2582176
    # mean −0.2358796; half = t · |d0 − d1|/2 = 12.7062047 · 0.0223380 = 0.2838307
    assert c["diff"] == pytest.approx(-0.2358796296296297, abs=1e-12)
    assert c["diff_half"] == pytest.approx(0.2838307307964947, rel=1e-9) and c["diff_n"] == 2
    d = rows[("adascale", 150)]
    # one seed left: 0.3 − 0.5479167 = −0.2479167, n = 1, no interval
    assert (d["n"], d["diff_n"], d["diff_half"]) == (1, 1, None)
    assert d["diff"] == pytest.approx(0.3 - (0.5 + 46 / 96 * 0.1), abs=1e-12)


def test_t_interval_matches_hand_values(bench):
    mean, half = bench.t_interval([0.1, 0.3])            # s = 0.141421, s/√2 = 0.1
    assert mean == pytest.approx(0.2) and half == pytest.approx(0.1 * T_975_1, rel=1e-12)
    assert bench.t_interval([0.25]) == (0.25, None)


def fake_cfg(bench):
    return dict(bench.CONFIG, n=100, epochs=3)           # marks 0, 100, 200, 300; b_max 25


def write_raw(bench, path, cfg, runs):
    """Append the runs as ``run`` would have made them under ``cfg`` (with the policy it builds)."""
    for (p, s), r in runs.items():
        bench.append_raw(path, cfg, p, s, dict(r, policy_config=bench.make_policy(p, bench.resolved(cfg)).to_dict()))


def test_raw_file_keeps_runs_of_the_same_configuration_only(bench, runs, tmp_path):
    path = str(tmp_path / "raw.jsonl")
    cfg = fake_cfg(bench)
    write_raw(bench, path, cfg, runs)
    write_raw(bench, path, dict(cfg, eta0=0.05), {("constant", 7): runs[("constant", 0)]})   # another configuration
    bench.append_raw(path, cfg, "cosine", 0, runs[("constant", 0)])        # a policy make_policy no longer builds
    loaded = bench.load_raw(path, cfg)
    assert sorted(loaded) == sorted(runs)
    assert loaded[("adascale", 1)]["observations"][3]["norm"] == math.inf      # ∞ survives JSON
    assert loaded[("algorithm2", 0)]["observations"] == runs[("algorithm2", 0)]["observations"]
    # what only the report reads does not split configurations
    assert sorted(bench.load_raw(path, dict(cfg, targets=(0.1,), threads=2))) == sorted(runs)
    assert bench.load_raw(path, dict(cfg, eta0=0.05)).keys() == {("constant", 7)}


def test_report_only_prints_the_comparison_and_draws_the_figure(bench, runs, tmp_path, capsys):
    path = str(tmp_path / "raw.jsonl")
    cfg = fake_cfg(bench)
    write_raw(bench, path, cfg, runs)
    out, figure = tmp_path / "report.txt", tmp_path / "fig" / "policies.png"
    rc = bench.main(["--report-only", "--raw", path, "--n", "100", "--epochs", "3", "--seeds", "0,1",
                     "--policies", ",".join(POLICIES), "--out", str(out), "--figure", str(figure)])
    assert rc == 0
    text = capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == text
    lines = [line for line in text.splitlines() if line.startswith("adascale ")]
    assert lines and all("not reached" in line for line in lines[:3])       # every target of the passage table
    assert "seeds [0, 1]" in text
    assert figure.stat().st_size > 10_000
    rc = bench.main(["--report-only", "--raw", path, "--n", "100", "--epochs", "3", "--seeds", "0,1,2",
                     "--policies", "algorithm2"])
    assert rc == 2
    assert "('algorithm2', 2)" in capsys.readouterr().err


@pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST, "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST})")
def test_tiny_real_runs_are_paired_observed_at_the_marks_and_charged(bench):
    cfg = bench.resolved(dict(bench.CONFIG, n=200, test_n=200, epochs=2, widths=(4, 4, 4)))
    data = bench.load_data(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {(p, 0): bench.run(p, cfg, data, seed=0) for p in ("algorithm2", "norm_test")}
    finally:
        torch.set_num_threads(threads)
    for (p, _), r in results.items():
        obs = r["observations"]
        assert r["marks"] == [0, 200, 400] and len(obs) == 3 and r["diverged"] is None
        assert obs[0]["sfo"] == 0 and obs[0]["step"] == 0
        for mark, o in zip(r["marks"][1:], obs[1:]):          # the first step that reaches the mark
            assert mark <= o["sfo"] < mark + cfg["b_max"]
        assert 400 <= r["train_sfo"] < 400 + r["final_b"] and r["wall_s"] > 0
        assert 0.0 <= obs[-1]["acc"] <= 1.0 and math.isfinite(obs[-1]["norm"])
    a2 = results[("algorithm2", 0)]
    # τ = 40 steps: every 40th step costs one exact pass over n = 200 images
    assert a2["measure_sfo"] == (a2["steps"] // 40) * 200 and a2["measure_sfo"] > 0
    assert results[("norm_test", 0)]["measure_sfo"] == 0
    # paired seeds: the same initialisation, so the same ‖∇f(θ₀)‖ and test accuracy before the first step
    assert a2["observations"][0]["norm"] == results[("norm_test", 0)]["observations"][0]["norm"]
    assert a2["observations"][0]["acc"] == results[("norm_test", 0)]["observations"][0]["acc"]
    text = bench.report(results, cfg, ["algorithm2", "norm_test"], [0])
    assert "algorithm2" in text and "norm_test" in text
