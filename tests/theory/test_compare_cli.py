"""``sfo compare``: the table, the results JSON, the figure, the tuning rule, the expectation criterion, and
one-line errors with exit code 2 that write nothing."""

import contextlib
import io
import json
import math
import re

import numpy as np
import pytest

from sfotheory.cbs import first_mean_passage
from sfotheory.cli import command_entry_points, main
from sfotheory.compare import bootstrap_weights, complete_traces, mean_passage, pick_tuned
from sfotheory.compare_result import ComparisonResult
from sfotheory.policies import AdaScale
from sfotheory.problems import make_problem
from sfotheory.rule import adaptive_exponential, constant
from sfotheory.simulate_policies import simulate_policies

POLICIES = ["stage_rule", "constant", "norm_test"]
EPS = [0.05, 0.02]
SMALL = ["compare", "--problem", "least_squares", "--n", "200", "--dim", "5", "--policies", ",".join(POLICIES),
         "--eps", *map(str, EPS), "--replicates", "8", "--tune-replicates", "4", "--max-steps", "200",
         "--budget", "10000", "--resamples", "200"]
ROW = re.compile(r"^(\w+)\s+([\d.e+-]+)\s+(\S+)\s+\[(\S+), (\S+)\]\s+(\S+)\s+\[(\S+), (\S+)\]\s+(\S+)\s+"
                 r"\[(\S+), (\S+)\]\s+([\d.]+)$")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small comparison through the command line, with --out."""
    out = tmp_path_factory.mktemp("compare") / "out"
    buf = io.StringIO()                 # capsys is function-scoped: capture by hand
    with contextlib.redirect_stdout(buf):
        code = main(SMALL + ["--out", str(out)])
    return code, buf.getvalue(), out


def _rows(text):
    return [m.groups() for m in map(ROW.match, text.splitlines()) if m]


def _num(s):
    return math.inf if s in ("-", "inf") else float(s)


def test_compare_is_a_registered_subcommand():
    assert "compare" in [name for name, _ in command_entry_points()]


def test_table_has_a_row_per_policy_and_eps_with_three_intervals(run):
    code, text, _ = run
    assert code == 0
    rows = _rows(text)
    assert [(r[0], float(r[1])) for r in rows] == [(p, e) for p in POLICIES for e in EPS]
    for r in rows:
        for value, lo, hi in ((r[2], r[3], r[4]), (r[5], r[6], r[7]), (r[8], r[9], r[10])):
            v, lo, hi = _num(value), _num(lo), _num(hi)
            assert lo <= hi
            if math.isfinite(v):
                assert lo <= v <= hi or math.isinf(hi)
        assert 0.0 <= float(r[11]) <= 1.0
        assert _num(r[8]) >= _num(r[5])              # SFO with measurement >= training SFO
    # the stated grid, tuning rule, criterion and wall time are part of the output
    assert "grid: eta0 in {0.1, 0.3, 1}/L" in text and "least training SFO to the smallest eps" in text
    assert "mean over replicates of ||grad f(theta_t)|| <= eps" in text and re.search(r"wall time [\d.]+ s", text)


def test_results_json_round_trips_and_reprints_the_table(run):
    _, text, out = run
    raw = json.loads((out / "sfo_compare_least_squares.json").read_text())
    res = ComparisonResult.load(out / "sfo_compare_least_squares.json")
    assert res.to_dict() == raw
    assert ComparisonResult.from_dict(json.loads(json.dumps(res.to_dict()))) == res
    assert res.table() in text
    assert [(r["policy"], r["eps"]) for r in res.rows] == [(p, e) for p in POLICIES for e in EPS]
    assert res.command.startswith("sfo compare --problem least_squares --policies stage_rule,constant,norm_test")
    png = (out / "sfo_compare_least_squares.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_each_policy_runs_the_grid_point_its_tuning_rule_picks(run):
    res = ComparisonResult.load(run[2] / "sfo_compare_least_squares.json")
    for family, chosen in zip(res.families, res.chosen):
        tun = res.tuning[family]
        cands = tun["candidates"]
        assert chosen["policy"] == cands[tun["chosen"]]["policy"]
        reached = [e for i, e in enumerate(res.eps) if any(math.isfinite(c["sfo"][i]) for c in cands)]
        if reached:
            i = res.eps.index(min(reached))
            assert tun["eps_tune"] == min(reached)
            best = min(c["sfo"][i] for c in cands)
            assert cands[tun["chosen"]]["sfo"][i] == best


def test_tuning_rule_on_a_constructed_table():
    eps = [0.1, 0.05, 0.02]
    inf = math.inf
    # point 0: cheapest at 0.1 and 0.05 but never reaches 0.02; points 1 and 2 reach 0.02 at equal SFO, 2 in fewer
    # steps; point 3 reaches 0.02 at more SFO
    sfo = np.array([[10.0, 50.0, 40.0, 30.0], [20.0, 80.0, 70.0, 60.0], [inf, 200.0, 200.0, 300.0]])
    steps = np.array([[1.0, 5.0, 4.0, 3.0], [2.0, 8.0, 7.0, 6.0], [inf, 30.0, 20.0, 25.0]])
    assert pick_tuned(eps, sfo, steps, np.zeros(4)) == (2, 0.02, "least training SFO to eps = 0.02")
    # the targets may come in any order
    assert pick_tuned(eps[::-1], sfo[::-1], steps[::-1], np.zeros(4))[:2] == (2, 0.02)
    # nobody reaches 0.02: least SFO at 0.05 (point 0)
    assert pick_tuned(eps[:2], sfo[:2], steps[:2], np.zeros(4))[:2] == (0, 0.05)
    # nothing reached at all: the least floor
    none = np.full((3, 4), inf)
    assert pick_tuned(eps, none, none, np.array([0.3, 0.2, np.nan, 0.25]))[:2] == (1, None)


def test_mean_passage_is_first_mean_passage_and_resamples_are_reindexed_replicates():
    rng = np.random.default_rng(3)
    T, R, C = 40, 6, 3
    step = np.arange(T) * 5
    norm = np.exp(-np.arange(T)[:, None, None] / 10.0) * rng.uniform(0.5, 1.5, (T, R, C))
    sfo = np.cumsum(rng.integers(1, 9, (T, R, C)), axis=0).astype(float)
    eps = [0.8, 0.3, 0.05, 1e-9]
    w = bootstrap_weights(R, 5, seed=0)
    p = mean_passage(step, norm, sfo, sfo + 7.0, eps, w)
    assert p.steps.shape == (4, C, 6)
    for c in range(C):
        for e, target in enumerate(eps):
            assert p.steps[e, c, 0] == first_mean_passage(step, norm[:, :, c], target)
            for b in range(1, 6):                       # a weight row = the replicates drawn, each as often
                idx = np.repeat(np.arange(R), w[b].astype(int))
                t = first_mean_passage(step, norm[:, idx, c], target)
                assert p.steps[e, c, b] == t
                if math.isfinite(t):
                    k = int(np.flatnonzero(step == t)[0])
                    assert p.sfo[e, c, b] == pytest.approx(sfo[k, idx, c].mean())
                    assert p.measured[e, c, b] == pytest.approx(p.sfo[e, c, b] + 7.0)
                else:
                    assert math.isinf(p.sfo[e, c, b])
    assert np.all(np.isinf(p.steps[3]))
    # a run that ran out of budget (NaN) leaves the mean undefined from there on: not reached, although the
    # other replicate alone is below eps; a diverged run (inf) likewise; a resample without them reaches it
    spent = np.array([[2.0, 2.0], [2.0, 2.0], [np.nan, 0.1], [np.nan, 0.1]])[:, :, None]
    weights = np.array([[1.0, 1.0], [0.0, 2.0]])
    q = mean_passage(np.arange(4), spent, np.ones((4, 2, 1)), np.ones((4, 2, 1)), [0.5], weights)
    assert math.isinf(q.steps[0, 0, 0]) and q.steps[0, 0, 1] == 2.0
    q = mean_passage(np.arange(4), np.where(np.isnan(spent), np.inf, spent), np.ones((4, 2, 1)),
                     np.ones((4, 2, 1)), [0.5], weights)
    assert math.isinf(q.steps[0, 0, 0]) and q.steps[0, 0, 1] == 2.0


def test_completed_traces_keep_a_finished_run_and_drop_a_spent_one():
    p = make_problem("least_squares", n=100, dim=4, seed=0)
    finished = AdaScale(base_batch=4, scale=2, eta0=0.2, horizon=30.0)        # stops itself after <= 30 steps
    adaptive = adaptive_exponential(b0=4, eta0=0.2, eps0=0.2, delta=2, gamma=1.2, tau=5, b_max=100)
    res = simulate_policies(p, [finished, constant(b0=50, eta0=0.2), adaptive], eps=1e-6, replicates=3, seed=0,
                            max_steps=80, budget=2000, observe_every=1, stop_at_hit=False)
    assert (res.reasons()[:, 0] == "rule_stopped").all() and (res.reasons()[:, 1] == "budget").all()
    tr = complete_traces(res)
    late = tr.step > res.steps[:, 0].max()
    np.testing.assert_array_equal(tr.norm[late, :, 0], np.broadcast_to(res.final_norm[:, 0], (late.sum(), 3)))
    np.testing.assert_array_equal(tr.sfo[late, :, 0], np.broadcast_to(res.sfo[:, 0], (late.sum(), 3)))
    spent = tr.step > res.steps[:, 1].max()
    assert np.isnan(tr.norm[spent, :, 1]).all()
    # Algorithm 2 pays n = 100 per check, one check every tau = 5 steps
    ran = tr.step <= res.steps[:, 2].min()
    np.testing.assert_array_equal(tr.measured[ran, :, 2] - tr.sfo[ran, :, 2],
                                  np.broadcast_to((tr.step[ran] // 5 * 100)[:, None], (ran.sum(), 3)))


BAD = [
    (["--eps", "0"], "--eps", "must be finite and > 0"),
    (["--eps", "0.1", "nan"], "--eps", "Got --eps=nan"),
    (["--policies", "stage_rule,sgd"], "--policies", "distinct names among stage_rule,constant"),
    (["--policies", "norm_test,norm_test"], "--policies", "Got --policies='norm_test,norm_test'"),
    (["--replicates", "1"], "--replicates", "must be >= 2"),
    (["--tune-replicates", "0"], "--tune-replicates", "must be >= 1"),
    (["--max-steps", "0"], "--max-steps", "must be >= 1"),
    (["--budget", "0"], "--budget", "must be >= 1"),
    (["--b0", "1"], "--b0", "must be >= 2"),
    (["--b0", "500"], "--b0", "<= b_max = 200"),
    (["--observe-every", "0"], "--observe-every", "must be >= 1"),
    (["--resamples", "3"], "--resamples", "must be >= 10"),
    (["--problem", "mnist"], "--problem", "'quadratic', 'least_squares', 'logistic', 'cauchy'"),
    (["--dim", "-5"], "--dim", "Got --dim=-5"),
    (["--sigma2", "2"], "--sigma2", "one of the problem's parameters"),
]


@pytest.mark.parametrize("argv, flag, needle", BAD)
def test_bad_flag_is_one_line_naming_it_exit_2_and_writes_nothing(argv, flag, needle, tmp_path, capsys):
    out = tmp_path / "out"
    args = _override(SMALL, argv) + ["--out", str(out)]
    assert main(args) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.count("\n") == 1 and cap.err.startswith("sfo compare: error:")
    assert f"'{flag}'" in cap.err and needle in cap.err
    assert not any(inner in cap.err for inner in ("run_comparison", "GridContext", "make_problem", "simulate"))
    assert not out.exists()


def test_out_that_is_a_file_is_refused_before_running(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    assert main(SMALL + ["--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'--out'" in err and f.read_text() == "x"


def test_unparsable_flag_value_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(_override(SMALL, ["--replicates", "many"]) + ["--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--replicates" in err and not (tmp_path / "out").exists()


def _override(argv, changes):
    """``argv`` with the flags in ``changes`` replaced (their values up to the next flag)."""
    out, i = [], 0
    flags = {c for c in changes if c.startswith("--")}
    while i < len(argv):
        if argv[i] in flags:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                i += 1
            continue
        out.append(argv[i])
        i += 1
    return out + list(changes)


def test_results_do_not_depend_on_the_number_of_processes():
    from sfotheory.compare import run_comparison
    p = make_problem("least_squares", n=100, dim=4, seed=0)
    kw = dict(replicates=4, tune_replicates=2, seed=3, max_steps=60, budget=3000, resamples=20)
    counted = {1: [], 2: []}

    class Count:              # a progress bar's interface: what sfo compare's bar is told
        def __init__(self, jobs):
            self.jobs = jobs

        def update(self, n=1, **status):
            counted[self.jobs].append((n, status["last"]))

    one = run_comparison(p, ["constant", "norm_test"], [0.05, 0.02], jobs=1, progress=Count(1), **kw)
    two = run_comparison(p, ["constant", "norm_test"], [0.05, 0.02], jobs=2, progress=Count(2), **kw)
    assert one["rows"] == two["rows"] and one["tuning"] == two["tuning"] and one["stops"] == two["stops"]
    # one tick per finished simulation: each family's grid, then each chosen point
    for jobs in (1, 2):
        assert len(counted[jobs]) == 4 and all(n == 1 for n, _ in counted[jobs])
        assert sorted(last.split("×")[0] for _, last in counted[jobs]) == ["NormTest", "NormTest", "StageRule",
                                                                           "StageRule"]
