"""Tests of the per-sample-norm hooks and the debiased monitor that uses them
(sfotorch.monitors.per_sample_norms, variance_source="per_sample_norms", decision="upper")."""

import math
import pytest
from scipy.stats import t as student_t

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.models import build_model  # noqa: E402
from sfotorch.monitors import DebiasedMonitor  # noqa: E402
from sfotorch.monitors.per_sample_norms import PerSampleNorms  # noqa: E402


def brute_per_sample_sq_norms(model, x, y, loss_fn):
    """‖∇_θ f_i‖² by torch.func (vmap over grad of the one-sample loss), float64 sums."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    frozen.update(dict(model.named_buffers()))

    def one(theta, xi, yi):
        return loss_fn(functional_call(model, {**frozen, **theta}, (xi[None],)), yi[None])

    grads = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    return sum(g.reshape(x.shape[0], -1).double().pow(2).sum(1) for g in grads.values())


class Head(nn.Module):
    """Sums a (b, T, C) feature map over T before the loss: a Linear / LayerNorm with extra dims."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        out = self.body(x)
        return out.reshape(out.shape[0], -1, out.shape[-1]).mean(1)


def models_and_inputs():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    frozen_bias = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    frozen_bias[0].bias.requires_grad_(False)
    frozen_weight = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    frozen_weight[2].weight.requires_grad_(False)
    bn_eval = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    bn_eval[1].running_mean.uniform_(-0.5, 0.5)
    bn_eval[1].running_var.uniform_(0.5, 2.0)
    nn.init.normal_(bn_eval[1].weight)
    bn_eval.eval()
    cases = {
        "linear": (frozen_bias, torch.randn(7, 6, generator=g)),
        "linear-frozen-weight": (frozen_weight, torch.randn(7, 6, generator=g)),
        "linear-extra-dims": (Head(nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.LayerNorm(5), nn.Linear(5, 3))),
                              torch.randn(7, 4, 6, generator=g)),
        "linear-extra-dims-gram": (Head(nn.Sequential(nn.Linear(40, 30), nn.Tanh(), nn.Linear(30, 3))),
                                   torch.randn(7, 2, 40, generator=g)),
        "conv2d": (nn.Sequential(nn.Conv2d(2, 6, 3, stride=2, padding=1, dilation=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(6, 4, 3, groups=2, dilation=2, padding="same", padding_mode="reflect"),
                                 nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4 * 25, 3)),
                   torch.randn(7, 2, 9, 9, generator=g)),
        "conv1d": (nn.Sequential(nn.Conv1d(3, 4, 3, stride=2, padding=2), nn.ReLU(), nn.Conv1d(4, 2, 2, bias=False),
                                 nn.Flatten(), nn.Linear(2 * 6, 3)),
                   torch.randn(7, 3, 12, generator=g)),
        "batchnorm-eval": (bn_eval, torch.randn(7, 2, 6, 6, generator=g)),
        "small_cnn": (build_model("small_cnn", 3, in_channels=1), torch.randn(7, 1, 12, 12, generator=g)),
    }
    return cases


CASES = models_and_inputs()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_hook_per_sample_norms_equal_torch_func_per_sample_gradient_norms(case, reduction):
    # float32 on both sides; relative tolerance 1e-5 (the sums of ~1e3 float32 products)
    model, x = CASES[case]
    y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(1))
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    expected = brute_per_sample_sq_norms(model, x, y, nn.CrossEntropyLoss())
    params = [p for p in model.parameters() if p.requires_grad]
    norms = PerSampleNorms(model, params, where="test")
    with norms.recording():
        loss_fn(model(x), y).backward()
    c = 1.0 / x.shape[0] if reduction == "mean" else 1.0
    torch.testing.assert_close(norms.sq_norms.double() / c ** 2, expected, rtol=1e-5, atol=1e-9)
    model.zero_grad(set_to_none=True)


def test_hook_trace_equals_the_torch_func_trace_on_the_same_batch():
    model, x = CASES["conv2d"]
    y = torch.randint(0, 3, (7,), generator=torch.Generator().manual_seed(2))
    loss_fn = nn.CrossEntropyLoss()
    hooks = DebiasedMonitor(model, loss_fn, variance_source="per_sample_norms")
    func = DebiasedMonitor(model, loss_fn, variance_source="per_sample")
    hooks.backward(x, y)
    model.zero_grad(set_to_none=True)
    func.backward(x, y)
    model.zero_grad(set_to_none=True)
    a, b = hooks.measure(), func.measure()
    assert a.trace_cov == pytest.approx(b.trace_cov, rel=1e-5)
    assert a.sq_norm == pytest.approx(b.sq_norm, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("existing_grad", [False, True])
def test_monitored_backward_leaves_exactly_the_plain_backward_grad(reduction, existing_grad):
    # bit for bit (torch.equal): the hooks only read; the statistics step is the plain backward
    model = build_model("small_cnn", 3, in_channels=1)
    twin = build_model("small_cnn", 3, in_channels=1)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(6, 1, 10, 10, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (6,), generator=torch.Generator().manual_seed(4))
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    if existing_grad:
        for p, q in zip(model.parameters(), twin.parameters()):
            p.grad = torch.full_like(p, 0.25)
            q.grad = torch.full_like(q, 0.25)
    mon = DebiasedMonitor(model, loss_fn, variance_source="per_sample_norms", stats_every=2, plain_step_norms=False)
    for _ in range(3):                                 # statistics step, plain step, statistics step
        loss = mon.backward(x, y)
        expected = loss_fn(twin(x), y)
        expected.backward()
        assert torch.equal(loss, expected.detach())
        for p, q in zip(model.parameters(), twin.parameters()):
            assert torch.equal(p.grad, q.grad)
    m = mon.measure()
    assert m.extra["steps"] == 3 and m.extra["effective_steps"] == 2 and m.cost == 0


def test_hooks_exist_only_during_a_statistics_step_and_are_removed_on_error():
    model = build_model("small_cnn", 3, in_channels=1)
    mon = DebiasedMonitor(model, nn.CrossEntropyLoss(), variance_source="per_sample_norms")
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def hooks():
        return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
                   for m in model.modules())

    assert hooks() == 0
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,))
    mon.backward(x, y)
    assert hooks() == 0
    with pytest.raises(RuntimeError):
        mon.backward(torch.randn(4, 2, 8, 8), y)       # wrong channel count: the forward raises
    assert hooks() == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert [m.training for m in model.modules()] == [True] * len(list(model.modules()))


def least_squares(n, d, seed, noise):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + noise * torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64) * 0.3)
    per_sample = 2.0 * (x @ model.weight[0].detach() - y)[:, None] * x
    full = per_sample.mean(0)
    trace_pop = float((per_sample - full).pow(2).sum() / n)
    return model, x, y[:, None], float(full.pow(2).sum()), trace_pop


def test_hook_trace_and_debiased_norm_are_unbiased_on_least_squares():
    # θ fixed, T = 1500 i.i.d. batches of b = 8 from n = 64 samples (with replacement: E tr Σ̂ = tr Σ,
    # denominator n). Tolerance: 4 standard errors of the mean of the T per-step values. The test
    # first checks that the bias it guards against (the whole correction tr Σ/b) exceeds it.
    n, b, steps = 64, 8, 1500
    model, x, y, true_sq, trace_pop = least_squares(n, 3, seed=5, noise=1.5)
    mon = DebiasedMonitor(model, nn.MSELoss(), variance_source="per_sample_norms")
    g = torch.Generator().manual_seed(6)
    us, trs = [], []
    for _ in range(steps):
        idx = torch.randint(0, n, (b,), generator=g)
        mon.backward(x[idx], y[idx])
        model.weight.grad = None
        st = mon.state_dict()["stats"]
        us.append(st["u"])
        trs.append(st["tr"])
    u = torch.tensor(us).diff(prepend=torch.zeros(1))
    tr = torch.tensor(trs).diff(prepend=torch.zeros(1))
    tol_u = 4 * float(u.std()) / math.sqrt(steps)
    tol_tr = 4 * float(tr.std()) / math.sqrt(steps)
    assert trace_pop / b > 2 * tol_u
    m = mon.measure()
    assert m.sq_norm == pytest.approx(true_sq, abs=tol_u)
    assert m.trace_cov == pytest.approx(trace_pop, abs=tol_tr)
    assert m.extra["paired"] and m.extra["sq_norm_se"] == pytest.approx(tol_u / 4, rel=0.01)


def test_upper_bound_decision_does_not_advance_while_the_exact_norm_is_well_above_eps():
    # Seeded: least squares with ‖∇f‖² = 2.25 ε² (‖∇f‖ = 1.5 ε) and tr Σ/b ≈ 6 ε² at b = 4, so
    # single u_t are far noisier than the gap. 100 windows of τ = 20 steps, hooks on one step in 2.
    # The point estimate crosses ε early in some windows (the scenario is hard enough to matter);
    # the one-sided 99% upper bound (Student t, 9 dof) must not cross in any window (≤ 1 expected
    # if the u_t were i.i.d. normal and the truth at ε; here it is 1.5 ε; the u_t are heavy-tailed).
    n, b, tau, windows = 200, 4, 20, 100
    model, x, y, true_sq, trace_pop = least_squares(n, 4, seed=8, noise=3.0)
    eps = math.sqrt(true_sq) / 1.5
    assert trace_pop / b > 5 * eps ** 2
    kwargs = dict(variance_source="per_sample_norms", stats_every=2, plain_step_norms=False, population=None)
    upper = DebiasedMonitor(model, nn.MSELoss(), decision="upper", confidence=0.99, **kwargs)
    point = DebiasedMonitor(model, nn.MSELoss(), decision="estimate", **kwargs)
    g = torch.Generator().manual_seed(9)
    crossed = {"upper": 0, "estimate": 0}
    for _ in range(windows):
        for _ in range(tau):
            idx = torch.randint(0, n, (b,), generator=g)
            for mon in (upper, point):
                mon.backward(x[idx], y[idx])
                model.weight.grad = None
        mu, mp = upper.measure(), point.measure()
        assert mu.norm >= mp.norm
        z = float(student_t.ppf(0.99, mp.extra["effective_steps"] - 1))
        assert mu.norm == pytest.approx(math.sqrt(max(mp.sq_norm + z * mp.extra["sq_norm_se"], 0.0)))
        crossed["upper"] += mu.norm <= eps
        crossed["estimate"] += mp.norm <= eps
    assert crossed["estimate"] >= 3
    assert crossed["upper"] == 0


def test_steps_without_statistics_record_nothing_but_are_counted():
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    mon = DebiasedMonitor(model, nn.CrossEntropyLoss(), variance_source="per_sample_norms", stats_every=3,
                          stats_phase=2, plain_step_norms=False)
    for _ in range(6):
        mon.backward(x, y)
    st = mon.state_dict()["stats"]
    assert st["steps"] == 6 and st["samples"] == 48 and st["ws"] == 2 and st["w"] == 2   # steps 2 and 5


def test_refusals_name_the_parameter_and_the_module():
    bn_train = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ParameterError, match=r"'variance_source' parameter of DebiasedMonitor.*BatchNorm"):
        DebiasedMonitor(bn_train, nn.CrossEntropyLoss(), variance_source="per_sample_norms")
    conv3d = nn.Sequential(nn.Conv3d(1, 2, 1), nn.Flatten(), nn.Linear(16, 2))
    with pytest.raises(ParameterError, match=r"0 \(Conv3d\): no per-sample norm formula"):
        DebiasedMonitor(conv3d, nn.CrossEntropyLoss(), variance_source="per_sample_norms")
    bn_eval = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    mon = DebiasedMonitor(bn_eval, nn.CrossEntropyLoss(), variance_source="per_sample_norms")
    bn_eval.train()                                    # switched to train mode after construction
    with pytest.raises(ParameterError, match="BatchNorm in train mode couples the samples"):
        mon.backward(torch.randn(4, 4), torch.randint(0, 2, (4,)))

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    shared = Shared()                  # a layer called twice is exact, its two uses added before the norm
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    norms = PerSampleNorms(shared, list(shared.parameters()), where="test")
    with norms.recording():
        nn.MSELoss(reduction="sum")(shared(x), y).backward()
    expected = brute_per_sample_sq_norms(shared, x, y, nn.MSELoss(reduction="sum"))
    torch.testing.assert_close(norms.sq_norms.double(), expected, rtol=1e-5, atol=1e-9)
    with pytest.raises(ParameterError, match="'decision' parameter"):
        DebiasedMonitor(nn.Linear(2, 2), nn.MSELoss(), decision="lower")
    with pytest.raises(ParameterError, match="stats_phase=3"):
        DebiasedMonitor(nn.Linear(2, 2), nn.MSELoss(), stats_every=3, stats_phase=3)


# -- inside the TrainingLoop ---------------------------------------------------------------------------

def _loop_run(cap, monitor_kwargs, steps=12, b=6):
    """A TrainingLoop on an MLP with a DebiasedMonitor (the scheduler measures with it every 4 steps)."""
    from sfotorch.loop import TrainingLoop
    from sfotorch.sampler import ResizableLoader
    from sfotorch.scheduler import StageScheduler

    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(48, 6, generator=g), torch.randint(0, 3, (48,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=b, seed=1)
    if monitor_kwargs is None:                      # the reference: no debiased monitor, the exact one
        from sfotorch.monitors import ExactMonitor
        mon, debiased = ExactMonitor(model, (x, y), loss_fn), None
    else:
        mon = debiased = DebiasedMonitor(model, loss_fn, population=48, **monitor_kwargs)
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=mon, b0=b, eta0=0.1, eps0=1e-9,
                           delta=2, gamma=1.2, tau=4, b_max=b)
    loop = TrainingLoop(model, opt, sched, loader, loss_fn, max_micro_batch=cap, debiased=debiased)
    log = []
    sched._log = log
    results = loop.run(max_steps=steps)
    return model, mon, sched, results, log


def test_the_loop_runs_the_monitors_own_backward_on_a_batch_of_one_micro_batch():
    """b ≤ c on one process: the loop calls DebiasedMonitor.backward, so the hooks run on the statistics
    steps only (phase 3 of 4: the check steps), every check has a finite estimate at no SFO, and θ
    equals that of a loop without the debiased monitor, bit for bit (the hooks only read)."""
    kwargs = {"variance_source": "per_sample_norms", "stats_every": 4, "stats_phase": 3, "plain_step_norms": False}
    model, mon, sched, results, log = _loop_run(cap=64, monitor_kwargs=kwargs)
    checks = [r for r in log if r["check"]]
    assert len(checks) == 3 and all(math.isfinite(r["norm"]) and r["monitor"] == "debiased" for r in checks)
    assert int(sched.state.check_samples) == 0 and mon.steps_seen == 12
    plain, *_ = _loop_run(cap=64, monitor_kwargs=None)
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p, q)


def test_a_batch_split_into_micro_batches_feeds_the_monitor_the_free_statistics():
    """b > c: the loop's float64 micro-batch sums give tr Σ̂ on every step; the monitor's estimate
    equals the one its own micro-batch backward (k = 3, same split) gives on the same run."""
    model, mon, sched, results, log = _loop_run(cap=2, monitor_kwargs={"micro_batches": 3})
    own, mon_own, sched_own, *_ , log_own = _loop_run(cap=64, monitor_kwargs={"micro_batches": 3})
    assert mon.steps_seen == mon_own.steps_seen == 12
    got = [r["norm"] for r in log if r["check"]]
    ref = [r["norm"] for r in log_own if r["check"]]
    assert len(got) == 3 and got == pytest.approx(ref, rel=1e-5)


def test_short_batches_on_statistics_steps_are_split_as_far_as_they_go():
    """The short last batch of an epoch: b = 3 < k = 4 is split into 3 micro-batches, b = 1 counts as a
    step without statistics (no tr Σ̂ from one sample) instead of stopping the run."""
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(3, 6), torch.randint(0, 3, (3,))
    mon = DebiasedMonitor(model, nn.CrossEntropyLoss(), micro_batches=4)
    mon.backward(x, y)
    mon.backward(x[:1], y[:1])
    st = mon.state_dict()
    assert st["steps_seen"] == 2 and st["stats"]["ws"] == 1 and st["stats"]["samples"] == 4
    assert math.isfinite(mon.measure().sq_norm)


def test_a_skipped_non_finite_step_leaves_no_trace_in_the_monitor_on_either_path():
    """skip policy, a NaN in one sample of step 2: the monitor's state after the run is the same
    whether the batch ran as one backward (the monitor's own) or as micro-batches (fed by the loop),
    and no check reads NaN."""
    from sfotorch.loop import TrainingLoop
    from sfotorch.sampler import ResizableLoader
    from sfotorch.scheduler import StageScheduler

    states, norms = [], []
    for cap in (64, 3):
        g = torch.Generator().manual_seed(5)
        x, y = torch.randn(48, 6, generator=g), torch.randint(0, 3, (48,), generator=g)
        loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=6, seed=1)
        x[loader.epoch_order(0)[7], 0] = float("nan")          # step 2's batch
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = DebiasedMonitor(model, nn.CrossEntropyLoss(), micro_batches=2, population=48)
        sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=mon, b0=6, eta0=0.1, eps0=1e-9,
                               delta=2, gamma=1.2, tau=4, b_max=6, on_nonfinite="warn")
        log = []
        sched._log = log
        loop = TrainingLoop(model, opt, sched, loader, nn.CrossEntropyLoss(), max_micro_batch=cap, debiased=mon,
                            on_nonfinite="skip")
        loop.run(max_steps=9)
        assert loop.skipped == 1
        states.append(mon.state_dict())
        norms.append([r["norm"] for r in log if r["check"]])
    assert states[0]["steps_seen"] == states[1]["steps_seen"] == 8 and states[0]["nonfinite_count"] == 0
    assert all(math.isfinite(v) for v in norms[0]) and norms[0] == pytest.approx(norms[1], rel=1e-5)


def test_stale_gradients_of_parameters_outside_the_optimizer_do_not_enter_the_step():
    """Only the head is optimised; the body's .grad from an earlier backward must not leak into ‖g_B‖."""
    from sfotorch.loop import TrainingLoop
    from sfotorch.sampler import ResizableLoader
    from sfotorch.scheduler import StageScheduler

    grads = []
    for cap in (64, 3):
        g = torch.Generator().manual_seed(5)
        x, y = torch.randn(48, 6, generator=g), torch.randint(0, 3, (48,), generator=g)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        opt = torch.optim.SGD(model[2].parameters(), lr=0.1)
        loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=6, seed=1)
        sched = StageScheduler(opt, "constant", loader=loader, b0=6, eta0=0.1, on_nonfinite="warn")
        loop = TrainingLoop(model, opt, sched, loader, nn.CrossEntropyLoss(), max_micro_batch=cap)
        grads.append([r.grad_norm for r in loop.run(max_steps=5)])
    assert grads[0] == pytest.approx(grads[1], rel=1e-5)


# -- no advance on no information (docs/theory.md, "Estimating ‖∇f(θ)‖") --------------


def _plain_loop_scheduler(decision):
    """A plain loop's scheduler over a debiased monitor fed by update(): τ = 2, ε_0 = 0.5 (ε_0² = 0.25), b = 8."""
    from sfotorch.scheduler import StageScheduler

    model = nn.Linear(2, 1)
    mon = DebiasedMonitor(model, nn.MSELoss(), decision=decision)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = StageScheduler(opt, "adaptive_exponential", monitor=mon, b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4,
                           tau=2)
    return mon, sched


@pytest.mark.parametrize("decision", ["estimate", "upper"])
def test_a_clamped_window_is_undecided_and_does_not_advance_a_stage(decision):
    """ū = mean(‖g_B‖² − tr Σ̂/8) = 0.015 − 1.1/8 < 0: the noise term swamped the signal. Clamping it
    to 0 made the point estimate 0 ≤ ε_0 and advanced the stage at the first check of a plain loop."""
    from sfotheory.rule import Event

    mon, sched = _plain_loop_scheduler(decision)
    mon.update(0.01, 1.0, 8)                    # u_1 = 0.01 − 0.125 = −0.115
    assert sched.step() == Event.NONE
    mon.update(0.02, 1.2, 8)                    # u_2 = 0.02 − 0.15 = −0.13; ū = −0.1225, se = 0.0075
    assert sched.step() == Event.CHECKED
    assert sched.stage == 0 and sched.batch_size == 8


def test_a_window_whose_standard_error_exceeds_half_eps_squared_does_not_advance():
    """u_t = 1.0 and −0.9 (tr Σ̂ = 0): ū = 0.05 ≤ ε_0² = 0.25 but se = 0.95 > ε_0²/2 = 0.125 — the window
    cannot tell ‖∇f‖² = 0 from ‖∇f‖² = 2ε_0², so it is undecided; the point estimate √0.05 = 0.22 used to
    advance."""
    from sfotheory.rule import Event

    mon, sched = _plain_loop_scheduler("estimate")
    mon.update(1.0, 0.0, 8)
    sched.step()
    mon.update(0.0, 7.2, 8)                     # u_2 = 0 − 7.2/8 = −0.9
    assert sched.step() == Event.CHECKED
    assert sched.stage == 0


def test_a_precise_window_below_eps_still_advances():
    """u_t = 0.10 and 0.12: ū = 0.11 ≤ 0.25 with se = 0.01 ≤ 0.125: decided below, the stage advances."""
    from sfotheory.rule import Event

    mon, sched = _plain_loop_scheduler("estimate")
    mon.update(0.10, 0.0, 8)
    sched.step()
    mon.update(0.12, 0.0, 8)
    assert sched.step() == Event.ADVANCED
    assert sched.stage == 1 and sched.batch_size == 16
