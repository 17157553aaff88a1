"""benchmarks/bench_lm_schedules.py, its reading and aggregation part, on fabricated `sfo train` logs.

Two run folders, ``adaptive`` and ``constant``, each with seeds 0 and 1, written by hand in tmp_path in the
layout and record shapes `sfo train` writes (OUT/SCHEDULE/seedS/log.jsonl: 'start', 'check', 'eval', 'end').
The expected numbers are computed by hand in the comments. No training, no torch.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmark_module import benchmark_module



@pytest.fixture(scope="module")
def bench():
    with benchmark_module("bench_lm_schedules") as module:
        yield module


def check(step, samples, check_samples, stage, b, eta, eps_m, norm, *, advance=False):
    """A scheduler record as `sfo train` logs it; ``advance``: the stage grows here (b ×2, η ×1.4, ε_m /√2)."""
    return {"step": step, "samples": samples, "check_samples": check_samples, "sfo_total": samples + check_samples,
            "stage": stage, "b": b, "eta": eta, "eps_m": eps_m, "norm": norm, "monitor": "exact",
            "event": "ADVANCED" if advance else "CHECKED", "check": True,
            "stage_next": stage + 1 if advance else stage, "b_next": 2 * b if advance else b,
            "eta_next": 1.4 * eta if advance else eta, "eps_m_next": eps_m / math.sqrt(2) if advance else eps_m,
            "kind": "check"}


def evaluation(step, samples, check_samples, loss):
    return {"kind": "eval", "step": step, "samples": samples, "check_samples": check_samples, "test_loss": loss,
            "test_acc": 0.5, "n_test": 64}


def write_run(root, schedule, seed, records, *, wall_s):
    run_dir = root / schedule / f"seed{seed}"
    run_dir.mkdir(parents=True)
    start = {"kind": "start", "step": 0, "samples": 0, "seed": seed, "n": 2048, "n_test": 64,
             "schedule": {"name": schedule, "b0": 8, "eta0": 0.1, "tau": 100}, "config": {}}
    last = records[-1]
    end = {"kind": "end", "step": last["step"], "samples": last["samples"], "status": "finished",
           "summary": {"wall_s": wall_s, "check_s": wall_s / 2}}
    with open(run_dir / "log.jsonl", "w", encoding="utf-8") as fh:
        for rec in [start, *records, end]:
            fh.write(json.dumps(rec) + "\n")


@pytest.fixture
def runs_dir(tmp_path):
    # Algorithm 2: b = 8 for 100 steps (800 samples), stage change at the check of step 100; then b = 16.
    # Final evaluation at step 300, 800 + 200·16 = 4 000 training samples; 2 checks of 2 048 = 4 096 measured.
    write_run(tmp_path, "adaptive", 0, [
        check(100, 800, 2048, 0, 8, 0.1, 1.0, 0.5, advance=True), evaluation(100, 800, 2048, 3.2),
        check(200, 2400, 4096, 1, 16, 0.14, 0.7071, 0.9), evaluation(200, 2400, 4096, 2.8),
        evaluation(300, 4000, 4096, 2.6)], wall_s=100.0)
    write_run(tmp_path, "adaptive", 1, [
        check(100, 800, 2048, 0, 8, 0.1, 1.0, 0.6, advance=True), evaluation(100, 800, 2048, 3.4),
        check(200, 2400, 4096, 1, 16, 0.14, 0.7071, 0.8), evaluation(200, 2400, 4096, 3.0),
        evaluation(300, 4000, 4096, 2.7)], wall_s=120.0)
    # constant b = 128: checks and evaluations at steps 16 and 32 (2 048 and 4 096 samples); no stage change.
    write_run(tmp_path, "constant", 0, [
        check(16, 2048, 2048, 0, 128, 0.1, 1.0, 1.5), evaluation(16, 2048, 2048, 3.0),
        check(32, 4096, 4096, 0, 128, 0.1, 1.0, 1.1), evaluation(32, 4096, 4096, 2.5)], wall_s=80.0)
    write_run(tmp_path, "constant", 1, [
        check(16, 2048, 2048, 0, 128, 0.1, 1.0, 1.6), evaluation(16, 2048, 2048, 2.9),
        check(32, 4096, 4096, 0, 128, 0.1, 1.0, 1.2), evaluation(32, 4096, 4096, 2.4)], wall_s=90.0)
    return tmp_path


def test_runs_are_read_with_their_evaluations_stage_changes_and_sfo(bench, runs_dir):
    runs = bench.load_runs(str(runs_dir), ["adaptive", "constant"], [0, 1])
    a0 = runs["adaptive"][0]
    assert a0.evals == [(100, 800, 3.2), (200, 2400, 2.8), (300, 4000, 2.6)]
    assert a0.final_loss == 2.6 and a0.finished
    assert (a0.train_sfo, a0.measure_sfo) == (4000, 4096)
    assert [(c["step"], c["b"], c["b_next"], c["eta"], c["eta_next"]) for c in a0.changes] == \
        [(100, 8, 16, 0.1, pytest.approx(0.14))]
    assert [c["norm"] for c in a0.checks] == [0.5, 0.9]
    assert runs["constant"][1].changes == []


def test_equal_sfo_points_span_the_range_every_run_covers(bench, runs_dir):
    runs = bench.load_runs(str(runs_dir), ["adaptive", "constant"], [0, 1])
    # first evaluations 800 (adaptive) and 2 048 (constant) → from 2 048; last 4 000 and 4 096 → to 4 000;
    # 3 points: 2 048, 2 048 + 1 952/2 = 3 024, 4 000
    assert bench.sfo_points(runs, count=3) == [2048, 3024, 4000]
    # 4 points: 2 048 + 1 952·{0, 1/3, 2/3, 1} = 2 048, 2 698.67 → 2 699, 3 349.33 → 3 349, 4 000
    assert bench.sfo_points(runs) == [2048, 2699, 3349, 4000]


def test_loss_at_equal_sfo_interpolates_between_the_evaluations_around_it(bench, runs_dir):
    runs = bench.load_runs(str(runs_dir), ["adaptive", "constant"], [0, 1])
    a0, c0 = runs["adaptive"][0], runs["constant"][0]
    # adaptive seed 0 between (800, 3.2) and (2400, 2.8): 3.2 + (2048 − 800)/1600 · (−0.4) = 3.2 − 0.312
    assert a0.loss_at(2048) == pytest.approx(2.888, abs=1e-12)
    # between (2400, 2.8) and (4000, 2.6): 2.8 + (3024 − 2400)/1600 · (−0.2) = 2.8 − 0.078
    assert a0.loss_at(3024) == pytest.approx(2.722, abs=1e-12)
    # constant seed 0 between (2048, 3.0) and (4096, 2.5): 3.0 + (3024 − 2048)/2048 · (−0.5) = 3.0 − 0.23828125
    assert c0.loss_at(3024) == pytest.approx(2.76171875, abs=1e-12)
    assert c0.loss_at(2048) == 3.0                     # on an evaluation: its value
    assert a0.loss_at(700) is None and c0.loss_at(4097) is None       # outside the evaluations: none


def test_paired_differences_are_taken_seed_by_seed_with_a_t_interval(bench, runs_dir):
    runs = bench.load_runs(str(runs_dir), ["adaptive", "constant"], [0, 1])
    result = bench.compare(runs, [3024])
    final = result["paired"]["constant"]["final"]
    # seed 0: 2.6 − 2.5 = 0.1; seed 1: 2.7 − 2.4 = 0.3 (paired by seed, not 2.6 − 2.4 or 2.7 − 2.5)
    assert [s for s, _ in final] == [0, 1]
    assert [d for _, d in final] == pytest.approx([0.1, 0.3], abs=1e-12)
    mean, half = bench.t_interval([d for _, d in final])
    # mean 0.2; s = √((0.1² + 0.1²)/1) = 0.141421; s/√2 = 0.1; t₀.₉₇₅ with 1 degree of freedom = 12.7062047
    assert mean == pytest.approx(0.2, abs=1e-12)
    assert half == pytest.approx(1.27062047, rel=1e-7)
    at = result["paired"]["constant"][3024]
    # seed 0: 2.722 − 2.76171875 = −0.03971875
    # seed 1: adaptive 3.0 + 624/1600 · (2.7 − 3.0) = 2.883; constant 2.9 + 976/2048 · (−0.5) = 2.66171875;
    #         2.883 − 2.66171875 = 0.22128125
    assert [d for _, d in at] == pytest.approx([-0.03971875, 0.22128125], abs=1e-12)
    s = result["schedules"]
    assert s["adaptive"]["train_sfo"] == [4000, 4000] and s["constant"]["measure_sfo"] == [4096, 4096]
    assert s["adaptive"]["wall_s"] == [100.0, 120.0]


def test_a_single_seed_has_a_mean_and_no_interval(bench):
    assert bench.t_interval([0.25]) == (0.25, None)
    assert bench.fmt_ci([0.25, None]) == "0.2500 (n=1)"


def test_reuse_prints_the_comparison_and_draws_the_figure_without_training(bench, runs_dir, tmp_path, capsys):
    figure = tmp_path / "figure" / "lm.png"
    report = tmp_path / "report.txt"
    rc = bench.main(["--reuse", "--out", str(runs_dir), "--schedules", "adaptive", "constant", "--seeds", "0", "1",
                     "--figure", str(figure), "--report", str(report)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "adaptive - constant" in out
    assert "0.2000 ± 1.2706 (n=2)" in out               # the paired final difference and its interval
    command, _, written = report.read_text(encoding="utf-8").partition("\n")
    assert command.startswith("$ python benchmarks/bench_lm_schedules.py --reuse --out ")
    assert written == out
    assert figure.stat().st_size > 10_000
    assert not (runs_dir / "cosine").exists()            # --reuse trains nothing


def test_a_folder_holding_a_run_of_another_configuration_is_refused(bench, runs_dir, capsys):
    # the fabricated runs' 'start' records hold no configuration tables: they are not the configs' runs
    rc = bench.main(["--out", str(runs_dir), "--schedules", "constant", "--seeds", "0"])
    assert rc == 2
    assert "differs in" in capsys.readouterr().err
