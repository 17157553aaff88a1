"""The sequential monitor (sfotorch.monitors.sequential): exact at the whole set, each sample evaluated
once, decisions in the right direction, wrong decisions within the stated level, resume on the same
subsets, and use from a plain loop, TrainingLoop and sfo train.

The problem with a known gradient: linear least squares, f_i(w) = (x_iᵀw − y_i)² (nn.MSELoss on one
output), ∇f_i = 2 x_i (x_iᵀw − y_i), ∇f(w) = H (w − w_ls) with H = (2/n) XᵀX (Xᵀ(X w_ls − y) = 0).
"""

import math

import numpy as np
import pytest
from scipy.stats import binom

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from sfotheory.rule import Event  # noqa: E402
from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.monitors import ExactMonitor, SequentialMonitor, block_estimate  # noqa: E402

N, D = 1024, 4


def least_squares(n=N, d=D, seed=0):
    """X (n × d, column scales 0.5 … 2), y = X w* + noise, float64; and w_ls, H."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    w_ls = torch.linalg.lstsq(x, y).solution
    return x, y[:, None], w_ls, 2.0 * x.T @ x / n


def model_at(x, w_ls, hess, sq_norm, direction=(1.0, -1.0, 0.5, 2.0)):
    """A bias-free Linear(d, 1) at w = w_ls + c·v with ‖∇f(w)‖² = ‖c H v‖² = ``sq_norm``."""
    v = torch.tensor(direction, dtype=torch.float64)
    c = math.sqrt(sq_norm) / float(torch.linalg.vector_norm(hess @ v))
    model = nn.Linear(x.shape[1], 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_((w_ls + c * v)[None])
    return model


def closed_form_sq_norm(model, x, y):
    residual = x @ model.weight.detach()[0] - y[:, 0]
    grad = 2.0 * x.T @ residual / x.shape[0]
    return float(grad @ grad)


def trace_sigma(model, x, y):
    """tr S² of the per-sample gradients 2 x_i r_i (denominator n − 1)."""
    residual = x @ model.weight.detach()[0] - y[:, 0]
    per_sample = 2.0 * x * residual[:, None]
    return float(per_sample.var(0, unbiased=True).sum())


@pytest.fixture(scope="module")
def problem():
    return least_squares()


# -- the estimate --------------------------------------------------------------------------------------


def test_block_estimate_is_the_unbiased_finite_population_estimate():
    """Blocks of one sample from n = 10: U = ‖ḡ‖² − (1 − s/n) tr Σ̂/s, tr Σ̂ the sample variance
    (numpy's ddof = 1); and its mean over every subset of size 3 of the population is ‖∇f‖² exactly."""
    from itertools import combinations

    a = np.array([2.0, 0.0, 1.0, 3.0, -1.0, 0.5, 4.0, -2.0, 1.5, 0.25])
    n, s = a.size, 3
    u, _, tr = block_estimate(np.outer(a[:s], a[:s]), [1] * s, n)
    assert tr == pytest.approx(np.var(a[:s], ddof=1))
    assert u == pytest.approx(a[:s].mean() ** 2 - (1 - s / n) * np.var(a[:s], ddof=1) / s)
    mean_u = np.mean([block_estimate(np.outer(a[list(c)], a[list(c)]), [1] * s, n)[0]
                      for c in combinations(range(n), s)])
    assert mean_u == pytest.approx(a.mean() ** 2, rel=1e-12)


def test_reaching_the_whole_set_gives_the_exact_norm(problem):
    """ε_m at the true norm: no look can decide, the subset grows to all n samples and the
    measurement is the exact norm (the exact monitor's and the closed form's), with no error."""
    x, y, w_ls, hess = problem
    model = model_at(x, w_ls, hess, 0.05)
    truth = closed_form_sq_norm(model, x, y)
    mon = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, seed=3)
    m = mon.measure(eps_m=math.sqrt(truth))
    exact = ExactMonitor(model, (x, y), nn.MSELoss()).measure()
    assert m.extra["decision"] == "exact" and m.cost == m.samples_used == N
    assert [look["samples"] for look in m.extra["looks"]] == [64, 128, 256, 512, N]
    assert m.sq_norm == pytest.approx(truth, rel=1e-10) and m.norm == pytest.approx(exact.norm, rel=1e-10)
    assert m.margin == 0.0 and m.lower == m.upper == m.norm and m.confidence == 1.0
    one_look = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=4 * N).measure(eps_m=1.0)
    assert one_look.cost == N and one_look.norm == pytest.approx(exact.norm, rel=1e-10)


class CountingDataset(torch.utils.data.Dataset):
    """Counts how often each sample is read."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.reads = np.zeros(len(x), dtype=np.int64)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads[i] += 1
        return self.x[i], self.y[i]


def test_each_look_extends_the_same_subset_and_no_sample_is_evaluated_twice(problem):
    """The samples read are exactly the first `cost` of the call's order, each once, over several looks."""
    x, y, w_ls, hess = problem
    model = model_at(x, w_ls, hess, 0.05)
    data = CountingDataset(x, y)
    mon = SequentialMonitor(model, data, nn.MSELoss(), initial_size=64, blocks=8, batch_size=50, seed=1)
    order = mon.order()
    m = mon.measure(eps_m=math.sqrt(closed_form_sq_norm(model, x, y)) * 1.02)
    assert len(m.extra["looks"]) >= 3                        # it did extend
    assert data.reads.max() == 1 and data.reads.sum() == m.cost == m.extra["looks"][-1]["samples"]
    assert set(np.flatnonzero(data.reads)) == set(order[:m.cost].tolist())
    assert not torch.equal(mon.order(), order)               # the next call draws a fresh subset


# -- decisions -----------------------------------------------------------------------------------------


def eps_squared(problem, noise_units):
    """ε_m² = ``noise_units`` · tr Σ / s_0 (s_0 = 64): the threshold in units of the noise of the first look."""
    x, y, w_ls, hess = problem
    return noise_units * trace_sigma(model_at(x, w_ls, hess, 0.3), x, y) / 64


@pytest.mark.parametrize("ratio, right, max_cost", [(1 / 9, "below", N // 4), (9.0, "above", N // 4),
                                                    (0.6, "below", N), (1.6, "above", N)])
def test_decides_in_the_right_direction_far_from_and_near_the_threshold(problem, ratio, right, max_cost):
    """‖∇f‖² = ratio · ε_m² with ε_m² = 16 tr Σ / s_0: far from ε_m (ratio 1/9 or 9) a quarter of the set
    decides; near it (0.6, 1.6) the decision is right, or exact at the whole set (seeds 0–3)."""
    x, y, w_ls, hess = problem
    eps = math.sqrt(eps_squared(problem, 16.0))
    model = model_at(x, w_ls, hess, ratio * eps * eps)
    for seed in range(4):
        m = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, seed=seed).measure(eps_m=eps)
        assert m.extra["decision"] in (right, "exact") and m.cost <= max_cost, (seed, m.extra["decision"], m.cost)
        assert (m.norm <= eps) == (right == "below")


def wrong_decisions(problem, ratio, confidence, checks, seed):
    """How many of ``checks`` fresh-subset checks at ‖∇f‖² = ratio · ε_m² (ε_m² = 4 tr Σ / s_0) decide
    the wrong side, and how many stopped before the whole set."""
    x, y, w_ls, hess = problem
    eps = math.sqrt(eps_squared(problem, 4.0))
    mon = SequentialMonitor(model_at(x, w_ls, hess, ratio * eps * eps), (x, y), nn.MSELoss(), initial_size=64,
                            blocks=8, confidence=confidence, seed=seed)
    decisions = [mon.measure(eps_m=eps).extra["decision"] for _ in range(checks)]
    return decisions.count("below" if ratio > 1 else "above"), checks - decisions.count("exact")


@pytest.mark.parametrize("ratio", [0.8, 1.25])
def test_wrong_decisions_stay_within_the_stated_level_over_seeded_checks(problem, ratio):
    """α = 0.2 (a loose level, so that wrong decisions are not rare), 100 fresh-subset checks at
    ‖∇f‖² = 0.8 ε_m² and at 1.25 ε_m² (near the threshold, where errors happen). The stated bound is
    P(wrong) ≤ α per check; tolerance: the count may not exceed the 99.9% quantile of Binomial(100, α),
    which a procedure exactly at the level exceeds once in a thousand runs."""
    alpha, checks = 0.2, 100
    wrong, early = wrong_decisions(problem, ratio, 1 - alpha, checks, seed=10)
    assert wrong <= binom.ppf(0.999, checks, alpha)
    assert early >= checks // 4                  # the checks did decide before the whole set, often


@pytest.mark.slow
def test_wrong_decisions_at_the_default_level_over_a_thousand_checks(problem):
    """confidence = 0.95: 1000 checks at ‖∇f‖² = 1.25 ε_m² (the worse side in the fast test); the count
    may not exceed the 99.9% quantile of Binomial(1000, 0.05) (= 72, a rate of 7.2%)."""
    wrong, _ = wrong_decisions(problem, 1.25, 0.95, 1000, seed=20)
    assert wrong <= binom.ppf(0.999, 1000, 0.05)


def test_the_indifference_zone_stops_a_check_at_the_threshold_before_the_whole_set(problem):
    """‖∇f‖ = ε_m exactly, ‖∇f‖² = 8 (large against the per-sample noise): without a zone every check
    (seeds 0–7) grows to all n samples; with ρ = 0.25 most stop at the first look whose q·se ≤ ρ·ε_m,
    earlier than n, deciding by the point estimate."""
    x, y, w_ls, hess = problem
    model = model_at(x, w_ls, hess, 8.0)
    eps = math.sqrt(closed_form_sq_norm(model, x, y))
    zone = []
    for seed in range(8):
        plain = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, seed=seed).measure(eps_m=eps)
        assert plain.extra["decision"] == "exact"
        m = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, tolerance=0.25,
                              seed=seed).measure(eps_m=eps)
        if m.extra["decision"].endswith("(zone)"):
            zone.append(seed)
            assert m.cost < N and m.extra["looks"][-1]["samples"] == m.cost
            assert m.margin <= 0.25 * eps and (m.norm <= eps) == (m.extra["decision"] == "below (zone)")
    assert len(zone) >= 6, zone


@pytest.mark.parametrize("ratio", [0.6, 1.7])
def test_outside_the_zone_wrong_decisions_stay_within_the_stated_level(problem, ratio):
    """ρ = 0.25, α = 0.2, 100 fresh-subset checks at ‖∇f‖ = √0.6 ε_m ≈ 0.77 ε_m and √1.7 ε_m ≈ 1.30 ε_m:
    both outside [(1 − ρ)ε_m, (1 + ρ)ε_m], where the stated bound P(wrong) ≤ α holds; the count may not
    exceed the 99.9% quantile of Binomial(100, α). The zone did stop checks, and the same checks without
    it reach the whole set more often and cost more."""
    x, y, w_ls, hess = problem
    alpha, checks, rho = 0.2, 100, 0.25
    eps = math.sqrt(eps_squared(problem, 4.0))
    mon = SequentialMonitor(model_at(x, w_ls, hess, ratio * eps * eps), (x, y), nn.MSELoss(), initial_size=64,
                            blocks=8, confidence=1 - alpha, tolerance=rho, seed=30)
    measured = [mon.measure(eps_m=eps) for _ in range(checks)]
    wrong = sum((m.norm <= eps) != (ratio < 1) for m in measured)
    assert wrong <= binom.ppf(0.999, checks, alpha)
    plain = SequentialMonitor(mon.model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, confidence=1 - alpha,
                              seed=30)
    unzoned = [plain.measure(eps_m=eps) for _ in range(checks)]          # the same subsets, no zone
    zoned = [m for m in measured if m.extra["decision"].endswith("(zone)")]
    assert zoned and sum((m.norm <= eps) != (ratio < 1) for m in zoned) <= binom.ppf(0.999, len(zoned), alpha)
    assert sum(m.cost == N for m in measured) < sum(m.cost == N for m in unzoned)
    assert sum(m.cost for m in measured) < sum(m.cost for m in unzoned)


def test_a_clamped_estimate_never_decides_below(problem):
    """‖∇f‖ = ε_m with ‖∇f‖² = 0.05, small against the per-sample noise: subsets whose U falls below 0
    are common. 60 checks: none decides "below" on a clamped estimate, and none decides on a look whose
    jackknife standard error is 0 before the whole set (a leave-one-out U clamped to 0 everywhere)."""
    x, y, w_ls, hess = problem
    model = model_at(x, w_ls, hess, 0.05)
    eps = math.sqrt(closed_form_sq_norm(model, x, y))
    mon = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, seed=0)
    measured = [mon.measure(eps_m=eps) for _ in range(60)]
    decided = [m for m in measured if m.extra["decision"] != "exact"]
    assert not any(m.clamped and m.norm <= eps for m in decided)
    assert all(m.extra["norm_se"] > 0 for m in decided)
    assert any(look["sq_norm"] < 0 for m in measured for look in m.extra["looks"])   # clamped looks did occur


def test_a_nonfinite_gradient_gives_a_nan_measurement_at_once(problem):
    x, y, w_ls, hess = problem
    bad = y.clone()
    bad[::7] = float("nan")
    m = SequentialMonitor(model_at(x, w_ls, hess, 0.1), (x, bad), nn.MSELoss(), initial_size=64,
                          blocks=8).measure(eps_m=0.5)
    assert math.isnan(m.norm) and m.cost == 64 and m.extra["decision"] == "nonfinite"


def test_refusals_name_the_parameter_and_the_value(problem):
    x, y, w_ls, hess = problem
    model = model_at(x, w_ls, hess, 0.1)
    with pytest.raises(ParameterError, match=r"'blocks' parameter of SequentialMonitor must be >= 3.*blocks=2"):
        SequentialMonitor(model, (x, y), nn.MSELoss(), blocks=2)
    with pytest.raises(ParameterError, match=r"'initial_size' .* must be >= blocks = 16.*initial_size=8"):
        SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=8)
    with pytest.raises(ParameterError, match=r"'tolerance' parameter of SequentialMonitor must be >= 0 and < 1.*"
                                             r"indifference zone.*tolerance=1"):
        SequentialMonitor(model, (x, y), nn.MSELoss(), tolerance=1.0)
    with pytest.raises(ParameterError, match=r"'eps_m' parameter of SequentialMonitor.measure must be given"):
        SequentialMonitor(model, (x, y), nn.MSELoss()).measure()
    with pytest.raises(ParameterError, match=r"'state' parameter .* Got state=\{'call': 1\}"):
        SequentialMonitor(model, (x, y), nn.MSELoss()).load_state_dict({"call": 1})


# -- in a training loop --------------------------------------------------------------------------------


def _plain_run(x, y, w_ls, hess, steps, *, resume_from=None, stop_at=None):
    """SGD on the least-squares model with a StageScheduler and the sequential monitor (τ = 4); stops
    after ``stop_at`` steps with the checkpoint content, or runs ``steps`` and returns the log."""
    from sfotorch.sampler import ResizableLoader
    from sfotorch.scheduler import StageScheduler

    model = model_at(x, w_ls, hess, 4.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, seed=0)
    mon = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, seed=5)
    log = []
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=mon, log=log, b0=8, eta0=0.01,
                           eps0=1.0, delta=2, gamma=1.2, tau=4, b_max=64)
    start = 0
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        opt.load_state_dict(resume_from["opt"])
        sched.load_state_dict(resume_from["sched"])
        loader.load_state_dict(resume_from["loader"])
        mon.load_state_dict(resume_from["monitor"])
        start = resume_from["step"]
    it = iter(loader)
    for t in range(start, steps):
        if stop_at is not None and t == stop_at:
            return {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "loader": loader.state_dict(), "monitor": mon.state_dict(), "step": t}
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            xb, yb = next(it)
        opt.zero_grad()
        loss = nn.MSELoss()(model(xb), yb)
        loss.backward()
        opt.step()
        sched.step(loss=loss)
    return log, sched


def test_a_plain_loop_advances_stages_and_a_resumed_run_measures_on_the_same_subsets(problem):
    """Save → rebuild → load → replay: the resumed run's checks equal the uninterrupted run's (norms,
    costs, stages), because check c always draws the subset of (seed, c)."""
    import copy

    x, y, w_ls, hess = problem
    full_log, sched = _plain_run(x, y, w_ls, hess, 24)
    checks = [r for r in full_log if r["check"]]
    assert len(checks) == 6 and sched.stage >= 1 and all(r["monitor"] == "sequential" for r in checks)
    assert sched.state.check_samples == sum(r["check_samples"] - p for r, p in
                                            zip(checks, [0] + [c["check_samples"] for c in checks[:-1]]))
    saved = copy.deepcopy(_plain_run(x, y, w_ls, hess, 24, stop_at=10))
    assert saved["monitor"] == {"calls": 2}
    resumed_log, _ = _plain_run(x, y, w_ls, hess, 24, resume_from=saved)
    tail = [r for r in full_log if r["step"] > 10]
    assert [(r["step"], r["norm"], r["check_samples"], r["stage"]) for r in resumed_log] == \
        [(r["step"], r["norm"], r["check_samples"], r["stage"]) for r in tail]


def test_the_training_loop_checkpoints_and_resumes_the_monitor(problem, tmp_path):
    """TrainingLoop with the monitor on its scheduler: the checkpoint holds the monitor's call count,
    and a run resumed from it ends with the same parameters, stage and check SFO."""
    from sfotorch.loop import TrainingLoop
    from sfotorch.sampler import ResizableLoader
    from sfotorch.scheduler import StageScheduler

    x, y, w_ls, hess = problem

    def build(path):
        model = model_at(x, w_ls, hess, 4.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, seed=0)
        mon = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, seed=2)
        sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=mon, b0=8, eta0=0.01, eps0=1.0,
                               delta=2, gamma=1.2, tau=4, b_max=64, on_nonfinite="warn")
        return TrainingLoop(model, opt, sched, loader, nn.MSELoss(), max_micro_batch=64, checkpoint_path=path,
                            checkpoint_every=12), model, mon

    whole, model_a, _ = build(tmp_path / "a.pt")
    whole.run(max_steps=36)
    first, _, mon_b = build(tmp_path / "b.pt")
    first.run(max_steps=12)
    assert mon_b.calls == 3
    second, model_b, mon_c = build(tmp_path / "b.pt")
    assert second.resume() and mon_c.calls == 3
    second.run(max_steps=36)
    assert torch.equal(model_a.weight, model_b.weight)
    assert second.scheduler.state == whole.scheduler.state and whole.scheduler.stage >= 1


def test_sfo_train_builds_the_sequential_monitor_from_the_config(tmp_path):
    """[monitor] kind = "sequential" (initial_size, blocks, confidence) on generated Fashion-MNIST files:
    every check costs between s_0 and n samples, and the log names the monitor; a bad pair of keys is
    refused naming the key."""
    from sfotorch.config import apply_overrides, load_config_text
    from sfotorch.datasets import write_fashion_mnist
    from sfotorch.sfolog import read_log
    from sfotorch.train import train

    write_fashion_mnist(tmp_path / "data", train_size=96, test_size=16, seed=3)
    text = ('[run]\nname = "seq"\nprogress_every = 0.0\n'
            f'[data]\ndataset = "fashion_mnist"\nroot = "{tmp_path / "data"}"\naugment = true\n'
            '[model]\nname = "small_cnn"\n'
            '[schedule]\npolicy = "adaptive_exponential"\nb0 = 4\neta0 = 0.05\neps0 = 10.0\ndelta = 2.0\n'
            'gamma = 1.4\ntau = 2\nb_max = 16\n'
            '[monitor]\nkind = "sequential"\ninitial_size = 16\nblocks = 4\nbatch_size = 32\n'
            '[train]\nmax_steps = 6\n[eval]\nevery = "end"\n')
    cfg = load_config_text(text)
    train(cfg, out_dir=str(tmp_path / "run"))
    checks = [r for r in read_log(tmp_path / "run" / "seed0" / "log.jsonl") if r["kind"] == "check"]
    assert len(checks) == 3 and all(r["monitor"] == "sequential" for r in checks)
    costs = np.diff([0] + [r["check_samples"] for r in checks])
    assert all(16 <= c <= 96 for c in costs) and checks[0]["stage_next"] == 1     # ε_0 = 10: far above ‖∇f‖
    with pytest.raises(ParameterError, match=r"'monitor.initial_size' .* must be >= monitor.blocks = 4"):
        apply_overrides(cfg, ["monitor.initial_size=3"])
