"""Tests of the gradient-norm monitors (sfotorch.monitors): exact values, no trace, costs,
statistical properties with stated tolerances, and bad input."""

import copy
import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.monitors import (  # noqa: E402
    DebiasedMonitor,
    ExactMonitor,
    Measurement,
    SubsampledMonitor,
    confidence_radius,
)

# -- tiny problems ------------------------------------------------------------------------------------


def classification_data(n=60, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def image_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def mlp(seed=0, d=5, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, classes))


def bn_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(),
                         nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def brute_force_gradient(model, x, y, loss_fn):
    """∇f over the whole set in one float64 eval-mode pass (reduction-independent: mean of f_i)."""
    m = copy.deepcopy(model).double().eval()
    loss = loss_fn(m(x.double()), y)
    if loss_fn.reduction == "sum":
        loss = loss / x.shape[0]
    params = [p for p in m.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


def brute_force_norm(model, x, y, loss_fn):
    return math.sqrt(sum(float(g.pow(2).sum()) for g in brute_force_gradient(model, x, y, loss_fn)))


def least_squares(n, d, seed, noise=1.0):
    """f_i(θ) = (x_iᵀθ − y_i)² with a linear model; per-sample gradients in closed form."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + noise * torch.randn(n, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64) * 0.3)
    per_sample = 2.0 * (x @ model.weight[0].detach() - y)[:, None] * x          # ∇f_i, shape (n, d)
    full = per_sample.mean(0)
    centred = per_sample - full
    trace_pop = float(centred.pow(2).sum() / n)          # tr Σ (denominator n: i.i.d. draws from the n samples)
    trace_s2 = float(centred.pow(2).sum() / (n - 1))     # tr S² (denominator n − 1: without replacement)
    return model, x, y[:, None], float(full.pow(2).sum()), trace_pop, trace_s2


def snapshot(model, optimizer):
    return {
        "modes": [m.training for m in model.modules()],
        "buffers": [b.clone() for b in model.buffers()],
        "grad_ids": [id(p.grad) if p.grad is not None else None for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "opt": copy.deepcopy(optimizer.state_dict()),
        "rng": torch.get_rng_state().clone(),
    }


def assert_same(before, after):
    assert before["modes"] == after["modes"]
    assert all(torch.equal(a, b) for a, b in zip(before["buffers"], after["buffers"]))
    assert before["grad_ids"] == after["grad_ids"]
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(before["params"], after["params"]))
    sa, sb = before["opt"], after["opt"]
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        for name, v in sa["state"][k].items():
            w = sb["state"][k][name]
            assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w
    assert torch.equal(before["rng"], after["rng"])


def trained_bn_model():
    """A BN + dropout CNN after 3 momentum-SGD steps, in train mode but with one BN in eval mode,
    with one .grad set to None: every piece of state a measurement could disturb is non-trivial."""
    model = bn_cnn()
    x, y = image_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for i in range(3):
        opt.zero_grad()
        loss_fn(model(x[8 * i: 8 * i + 8]), y[8 * i: 8 * i + 8]).backward()
        opt.step()
    model.train()
    model[6].eval()                       # mixed modes must come back as they were
    model[0].bias.grad = None             # a None grad must stay None
    return model, opt, x, y, loss_fn


# -- exact ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("chunk", [7, 1000])
def test_exact_monitor_equals_brute_force_float64_full_gradient_norm(reduction, chunk):
    x, y = classification_data()
    model = mlp()
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    m = ExactMonitor(model, (x, y), loss_fn, batch_size=chunk).measure()
    expected = brute_force_norm(model, x, y, nn.CrossEntropyLoss(reduction=reduction))
    assert m.norm == pytest.approx(expected, rel=1e-6)
    assert m.cost == m.samples_used == 60 and m.margin == 0.0 and m.monitor == "exact"


def test_exact_monitor_uses_eval_mode_statistics_of_batchnorm():
    model, _, x, y, loss_fn = trained_bn_model()
    m = ExactMonitor(model, (x, y), loss_fn, batch_size=9).measure()
    assert m.norm == pytest.approx(brute_force_norm(model, x, y, loss_fn), rel=1e-5)
    model.train()
    train_mode_loss = loss_fn(model(x), y)   # what the reference code measured: a different function
    g = torch.autograd.grad(train_mode_loss, [p for p in model.parameters()])
    assert math.sqrt(sum(float(t.pow(2).sum()) for t in g)) != pytest.approx(m.norm, rel=1e-3)


def test_exact_monitor_works_through_a_dataloader_dataset_and_transform():
    x, y = classification_data()
    model = mlp()

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 60

        def __getitem__(self, i):
            return x[i], y[i]

    loss_fn = nn.CrossEntropyLoss()
    m = ExactMonitor(model, Pairs(), loss_fn, batch_size=16, transform=lambda t: 2.0 * t).measure()
    assert m.norm == pytest.approx(brute_force_norm(model, 2.0 * x, y, loss_fn), rel=1e-6)


@pytest.mark.parametrize("make", [
    lambda model, data, loss_fn: ExactMonitor(model, data, loss_fn, batch_size=16),
    lambda model, data, loss_fn: SubsampledMonitor(model, data, loss_fn, sample_size=20, micro_batches=4),
    lambda model, data, loss_fn: SubsampledMonitor(model, data, loss_fn, sample_size=20, variance_source="per_sample"),
], ids=["exact", "subsampled-micro", "subsampled-per-sample"])
def test_measurement_leaves_mode_buffers_optimizer_grads_and_rng_untouched(make):
    model, opt, x, y, loss_fn = trained_bn_model()
    before = snapshot(model, opt)
    monitor = make(model, (x, y), loss_fn)
    for _ in range(2):
        monitor.measure()
    assert_same(before, snapshot(model, opt))


def test_no_trace_guard_restores_state_that_user_code_changed_inside():
    from sfotorch.monitors import leave_no_trace

    model, opt, x, y, loss_fn = trained_bn_model()
    before = snapshot(model, opt)
    with leave_no_trace(model):
        model.train()
        loss_fn(model(x), y).backward()          # writes .grad and BN buffers, draws dropout masks
    assert_same(before, snapshot(model, opt))


# -- subsampled -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["micro_batches", "per_sample"])
@pytest.mark.parametrize("fresh", [True, False])
def test_subsampled_with_whole_dataset_equals_exact_with_zero_margin(source, fresh):
    x, y = classification_data()
    model = mlp()
    loss_fn = nn.CrossEntropyLoss()
    exact = ExactMonitor(model, (x, y), loss_fn).measure()
    sub = SubsampledMonitor(model, (x, y), loss_fn, sample_size=60, fresh=fresh, variance_source=source,
                            batch_size=13).measure()
    assert sub.norm == pytest.approx(exact.norm, rel=1e-6)
    assert sub.margin == 0.0 and sub.lower == pytest.approx(exact.norm, rel=1e-6)
    assert sub.cost == 60


def test_subsampled_subsets_are_a_function_of_seed_and_call_index():
    x, y = classification_data()
    model, loss_fn = mlp(), nn.CrossEntropyLoss()
    fresh = SubsampledMonitor(model, (x, y), loss_fn, sample_size=10, seed=3)
    fixed = SubsampledMonitor(model, (x, y), loss_fn, sample_size=10, seed=3, fresh=False)
    assert not torch.equal(fresh.subset(0), fresh.subset(1))
    assert torch.equal(fixed.subset(0), fixed.subset(5)) and torch.equal(fixed.subset(0), fresh.subset(0))
    a = [fresh.measure().norm for _ in range(3)]
    resumed = SubsampledMonitor(model, (x, y), loss_fn, sample_size=10, seed=3)
    resumed.load_state_dict({"calls": 1})
    assert [resumed.measure().norm for _ in range(2)] == a[1:]
    other = SubsampledMonitor(model, (x, y), loss_fn, sample_size=10, seed=4)
    assert other.measure().norm != a[0]


@pytest.mark.parametrize("source,bound", [("per_sample", "markov"), ("per_sample", "gaussian"),
                                          ("micro_batches", "gaussian")])
def test_subsampled_margin_covers_true_norm_and_debiasing_removes_the_trace_bias(source, bound):
    # n = 400, s = 25, fresh subsets. Over R = 300 calls the coverage of a 95% interval must be
    # >= 0.95 - 3 binomial standard errors (0.888). The mean of the debiased ‖∇f‖² estimate must be
    # within 4 standard errors of the truth, while the uncorrected ‖g_S‖² is off by tr C, which the
    # problem makes > 8 standard errors (so a missing correction fails the test).
    n, s, reps = 400, 25, 300
    model, x, y, true_sq, _, trace_s2 = least_squares(n, 4, seed=1, noise=2.0)
    loss_fn = nn.MSELoss(reduction="sum")
    k = None if source == "per_sample" else 5
    mon = SubsampledMonitor(model, (x, y), loss_fn, sample_size=s, seed=7, confidence=0.95, bound=bound,
                            variance_source=source, micro_batches=k)
    ms = [mon.measure() for _ in range(reps)]
    truth = math.sqrt(true_sq)
    coverage = sum(m.lower <= truth <= m.upper for m in ms) / reps
    assert coverage >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / reps)
    trace_c = (1 - s / n) * trace_s2 / s
    sq = torch.tensor([m.sq_norm for m in ms])
    se = float(sq.std()) / math.sqrt(reps)
    assert trace_c > 8 * se
    assert float(sq.mean()) == pytest.approx(true_sq, abs=4 * se)
    raw = torch.tensor([m.raw_norm ** 2 for m in ms])
    assert float(raw.mean()) == pytest.approx(true_sq + trace_c, abs=4 * float(raw.std()) / math.sqrt(reps))
    tr = torch.tensor([m.trace_cov for m in ms])
    assert float(tr.mean()) == pytest.approx(trace_s2, abs=4 * float(tr.std()) / math.sqrt(reps))
    assert all(m.cost == s for m in ms)


def test_confidence_radius_markov_and_gaussian_closed_forms():
    assert confidence_radius(4.0, 0.9, "markov") == pytest.approx(math.sqrt(4.0 / 0.1))
    assert confidence_radius(4.0, 0.99, "gaussian") == pytest.approx(2.0 * 2.5758293, rel=1e-6)


# -- debiased -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("source,k", [("micro_batches", 3), ("micro_batches", 10), ("per_sample", None)])
def test_debiased_backward_leaves_the_same_grad_and_loss_as_one_big_backward(reduction, source, k):
    x, y = classification_data(n=10)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    big, small = mlp(), mlp()
    for p in list(big.parameters()) + list(small.parameters()):
        p.grad = torch.full_like(p, 0.5)        # backward accumulates into existing .grad
    small[0].bias.grad = None
    big[0].bias.grad = None
    loss_big = loss_fn(big(x), y)
    loss_big.backward()
    mon = DebiasedMonitor(small, loss_fn, variance_source=source, micro_batches=3 if k is None else k)
    loss_small = mon.backward(x, y, micro_batches=k)
    assert float(loss_small) == pytest.approx(loss_big.item(), rel=1e-6)
    for a, b in zip(big.parameters(), small.parameters()):   # float32 rounding of the big backward: ~1e-7
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)
    assert mon.measure().cost == 0


def test_debiased_steps_without_statistics_also_leave_the_big_batch_grad():
    x, y = classification_data(n=40)
    loss_fn = nn.CrossEntropyLoss()
    big, small = mlp(), mlp()
    mon = DebiasedMonitor(small, loss_fn, micro_batches=4, stats_every=3)
    for i in range(0, 40, 8):
        for model in (big, small):
            model.zero_grad(set_to_none=True)
        loss_fn(big(x[i:i + 8]), y[i:i + 8]).backward()
        mon.backward(x[i:i + 8], y[i:i + 8])
        for a, b in zip(big.parameters(), small.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)
    assert mon.state_dict()["stats"]["steps"] == 5 and mon.state_dict()["stats"]["ws"] == 2   # steps 0 and 3


def test_debiased_backward_with_batchnorm_in_eval_matches_one_big_backward():
    model, _, x, y, loss_fn = trained_bn_model()
    model.eval()
    twin = copy.deepcopy(model)
    for p in list(model.parameters()) + list(twin.parameters()):
        p.grad = None
    loss_fn(twin(x[:12]), y[:12]).backward()
    DebiasedMonitor(model, loss_fn, micro_batches=4).backward(x[:12], y[:12])
    for a, b in zip(twin.parameters(), model.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)


def test_per_sample_and_single_sample_micro_batches_give_the_same_trace():
    x, y = classification_data(n=12)
    loss_fn = nn.CrossEntropyLoss()
    a = DebiasedMonitor(mlp(), loss_fn, micro_batches=12)
    b = DebiasedMonitor(mlp(), loss_fn, variance_source="per_sample")
    a.backward(x, y)
    b.backward(x, y)
    ma, mb = a.measure(), b.measure()
    assert mb.trace_cov == pytest.approx(ma.trace_cov, rel=1e-5)
    assert mb.sq_norm == pytest.approx(ma.sq_norm, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("without_replacement,stats_every", [(False, 1), (True, 1), (False, 2)])
@pytest.mark.slow
def test_debiased_estimate_is_unbiased_on_least_squares(without_replacement, stats_every):
    # θ held fixed; T = 2000 batches of b = 16 in micro-batches of 4. With i.i.d. (with replacement)
    # batches E‖g_B‖² = ‖∇f‖² + tr Σ/b; without replacement from n = 32 it is ‖∇f‖² + (1 − b/n) tr S²/b.
    # Tolerance: 4 standard errors of the window mean (spread of the per-step estimates / √T); the
    # test first checks that the bias it guards against (the whole correction, or the wrong c_b)
    # exceeds that tolerance, so a wrong estimator cannot pass.
    n, b, steps = 32, 16, 2000
    model, x, y, true_sq, trace_pop, trace_s2 = least_squares(n, 3, seed=2, noise=1.5)
    loss_fn = nn.MSELoss()
    mon = DebiasedMonitor(model, loss_fn, micro_batches=4, population=n if without_replacement else None,
                          stats_every=stats_every)
    g = torch.Generator().manual_seed(11)
    us = []
    for t in range(steps):
        if without_replacement:
            if t % (n // b) == 0:
                perm = torch.randperm(n, generator=g)
            idx = perm[(t % (n // b)) * b:(t % (n // b) + 1) * b]
        else:
            idx = torch.randint(0, n, (b,), generator=g)
        mon.backward(x[idx], y[idx])
        model.weight.grad = None
        st = mon.state_dict()["stats"]
        us.append((st["u"], st["g2"], st["tr"]))
    cumulative = torch.tensor(us, dtype=torch.float64).diff(dim=0, prepend=torch.zeros(1, 3, dtype=torch.float64))
    per_step = cumulative[::stats_every, 0]                 # u_t of the split steps
    tolerance = 4 * float(per_step.std()) / math.sqrt(per_step.numel())
    m = mon.measure()
    if without_replacement:
        correction, wrong_c = (1 - b / n) * trace_s2 / b, trace_s2 / b
    else:
        correction, wrong_c = trace_pop / b, (1 - b / n) * trace_s2 / b
    assert correction > 2 * tolerance
    if stats_every == 1:              # the c_b cases are told apart at full statistics
        assert abs(correction - wrong_c) > 2 * tolerance
    assert m.sq_norm == pytest.approx(true_sq, abs=tolerance)
    assert m.raw_norm ** 2 == pytest.approx(true_sq + correction, abs=tolerance)
    if stats_every == 1:              # ū is the mean of the paired u_t: se from their spread
        assert m.extra["sq_norm_se"] == pytest.approx(tolerance / 4, rel=0.05)
    else:                             # ū = mean(‖g_B‖², all steps) − (c/b)·mean(tr Σ̂, split steps)
        g2_all, tr_split = cumulative[:, 1], cumulative[::stats_every, 2]
        se = math.sqrt(float(g2_all.var()) / steps + (1 / b) ** 2 * float(tr_split.var()) / tr_split.numel())
        assert m.extra["sq_norm_se"] == pytest.approx(se, rel=0.01)
    assert m.samples_used == steps * b and m.cost == 0
    truth_trace = trace_s2 if without_replacement else trace_pop
    assert m.trace_cov == pytest.approx(truth_trace, rel=0.1)     # ≥ 1000 × 3 dof: sd of the mean ≤ 2.6%


def test_debiased_clamps_negative_estimates_and_reports_it():
    mon = DebiasedMonitor(mlp(), nn.CrossEntropyLoss())
    mon.update(batch_sq_norm=0.1, trace_cov=8.0, batch_size=4)     # u = 0.1 − 2 < 0
    m = mon.measure()
    assert m.clamped and m.norm == 0.0 and m.sq_norm == pytest.approx(-1.9)
    assert mon.clamped_count == 1
    mon.update(batch_sq_norm=3.0, trace_cov=4.0, batch_size=4)
    m = mon.measure()
    assert not m.clamped and m.norm == pytest.approx(math.sqrt(2.0)) and mon.clamped_count == 1


def test_debiased_window_resets_and_ema_weights_are_bias_corrected():
    win = DebiasedMonitor(mlp(), nn.CrossEntropyLoss())
    win.update(5.0, 0.0, 2)
    win.update(3.0, 0.0, 2)
    assert win.measure().sq_norm == pytest.approx(4.0)
    assert math.isnan(win.measure().norm)              # nothing observed since the last check
    ema = DebiasedMonitor(mlp(), nn.CrossEntropyLoss(), beta=0.5)
    ema.update(5.0, 0.0, 2)
    ema.update(3.0, 0.0, 2)
    assert ema.measure().sq_norm == pytest.approx((0.25 * 5 + 0.5 * 3) / 0.75)
    ema.update(1.0, 0.0, 2)
    assert ema.measure().sq_norm == pytest.approx((0.125 * 5 + 0.25 * 3 + 0.5 * 1) / 0.875)


def test_debiased_nonfinite_step_makes_the_next_measurement_nan():
    mon = DebiasedMonitor(mlp(), nn.CrossEntropyLoss())
    mon.update(1.0, 1.0, 4)
    mon.update(float("nan"), 1.0, 4)
    assert math.isnan(mon.measure().norm) and mon.nonfinite_count == 1
    mon.update(1.0, 0.0, 4)
    assert mon.measure().norm == 1.0


def test_debiased_resume_by_replay():
    x, y = classification_data(n=40)
    loss_fn = nn.CrossEntropyLoss()
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 40, 8)]
    full = DebiasedMonitor(mlp(), loss_fn, beta=0.9)
    for xb, yb in batches:
        full.backward(xb, yb)
    first = DebiasedMonitor(mlp(), loss_fn, beta=0.9)
    for xb, yb in batches[:2]:
        first.backward(xb, yb)
    resumed = DebiasedMonitor(mlp(), loss_fn, beta=0.9)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    for xb, yb in batches[2:]:
        resumed.backward(xb, yb)
    assert resumed.measure() == full.measure()


# -- the record -----------------------------------------------------------------------------------------


def test_measurement_is_frozen_and_defaults_follow_norm():
    m = Measurement(norm=2.0, cost=3, monitor="x")
    assert m.sq_norm == 4.0 and m.raw_norm == 2.0 and not m.clamped
    with pytest.raises(AttributeError):
        m.norm = 1.0


# -- bad input ------------------------------------------------------------------------------------------


def _bad_inputs():
    x, y = classification_data(n=20)
    model, loss_fn = mlp(), nn.CrossEntropyLoss()
    return [
        ("sample_size", "sample_size=21", lambda: SubsampledMonitor(model, (x, y), loss_fn, sample_size=21)),
        ("sample_size", "sample_size=0", lambda: SubsampledMonitor(model, (x, y), loss_fn, sample_size=0)),
        ("micro_batches", "micro_batches=6",
         lambda: SubsampledMonitor(model, (x, y), loss_fn, sample_size=5, micro_batches=6)),
        ("micro_batches", "micro_batches=9",
         lambda: DebiasedMonitor(model, loss_fn).backward(x[:8], y[:8], micro_batches=9)),
        ("micro_batches", "micro_batches=1", lambda: DebiasedMonitor(model, loss_fn, micro_batches=1)),
        ("reduction", "reduction='none'", lambda: ExactMonitor(model, (x, y), nn.CrossEntropyLoss(reduction="none"))),
        ("reduction", "reduction='batchmean'", lambda: ExactMonitor(model, (x, y), loss_fn, reduction="batchmean")),
        ("reduction", "reduction=None", lambda: ExactMonitor(model, (x, y), lambda o, t: o.sum())),
        ("dataset", "a dataset of length 0", lambda: ExactMonitor(model, (x[:0], y[:0]), loss_fn)),
        ("dataset", "a dataset of length 0", lambda: SubsampledMonitor(model, (x[:0], y[:0]), loss_fn, sample_size=1)),
        ("confidence", "confidence=1.5",
         lambda: SubsampledMonitor(model, (x, y), loss_fn, sample_size=5, confidence=1.5)),
        ("confidence", "confidence=0.5",
         lambda: SubsampledMonitor(model, (x, y), loss_fn, sample_size=5, confidence=0.5, bound="gaussian")),
        ("bound", "bound='hoeffding'", lambda: SubsampledMonitor(model, (x, y), loss_fn, sample_size=5, bound="hoeffding")),
        ("beta", "beta=1.0", lambda: DebiasedMonitor(model, loss_fn, beta=1.0)),
        ("stats_every", "stats_every=0", lambda: DebiasedMonitor(model, loss_fn, stats_every=0)),
        ("variance_source", "variance_source='per_sample'",
         lambda: DebiasedMonitor(bn_cnn().train(), nn.CrossEntropyLoss(), variance_source="per_sample").backward(
             *image_data(n=8))),
    ]


@pytest.mark.parametrize("index", range(len(_bad_inputs())))
def test_bad_input_names_parameter_and_value(index):
    name, shown, make = _bad_inputs()[index]
    with pytest.raises(ParameterError) as info:
        make()
    message = str(info.value)
    assert f"The '{name}' parameter of" in message and shown in message
