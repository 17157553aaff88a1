"""Gradient accumulation: equals the big batch, BatchNorm as stated, the cap, bad input."""

import copy
import math

import pytest

torch = pytest.importorskip("torch")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.accumulate import (  # noqa: E402
    GradientAccumulator,
    find_max_micro_batch,
    micro_batch_sizes,
    search_max_micro_batch,
)


def mlp(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype)


def data(n, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def big_batch_grads(model, loss_fn, x, y):
    m = copy.deepcopy(model)
    m.zero_grad(set_to_none=True)
    loss_fn(m(x), y).backward()
    return [p.grad for p in m.parameters()]


# -- the split --------------------------------------------------------------------------------------

@given(b=st.integers(0, 5000), cap=st.integers(1, 700))
@example(b=4096, cap=64)
@example(b=7, cap=7)
@example(b=1, cap=1)
def test_micro_batches_are_balanced_cover_the_batch_and_respect_the_cap(b, cap):
    sizes = micro_batch_sizes(b, cap)
    assert sum(sizes) == b and len(sizes) == -(-b // cap)
    if sizes:
        assert max(sizes) <= cap and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


# -- equal to one big batch -------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 40), cap=st.integers(1, 17), reduction=st.sampled_from(["mean", "sum"]))
@example(b=40, cap=7, reduction="mean")     # 40 = 6 + 6 + 6 + 6 + 6 + 5 + 5: unequal micro-batches
@example(b=1, cap=1, reduction="sum")
def test_accumulated_gradient_equals_the_big_batch_in_float64(b, cap, reduction):
    """.grad after accumulation = .grad after one big backward (mean reduction: the mean over the
    b samples; sum reduction: pass denominator=1 to get the sum, as a plain backward does)."""
    model = mlp()
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    x, y = data(b)
    expected = big_batch_grads(model, loss_fn, x, y)
    acc = GradientAccumulator(model, loss_fn, max_micro_batch=cap)
    loss = acc.backward(x, y, denominator=None if reduction == "mean" else 1)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        big_loss = float(loss_fn(model(x), y))
    assert math.isclose(float(loss), big_loss, rel_tol=1e-12, abs_tol=1e-14)


def test_accumulated_gradient_matches_the_big_batch_in_float32_to_float_rounding():
    model = mlp(torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    x, y = data(257, torch.float32)
    expected = big_batch_grads(model, loss_fn, x, y)
    GradientAccumulator(model, loss_fn, max_micro_batch=16).backward(x, y)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_one_micro_batch_is_one_plain_backward_equal_to_the_float64_sums(reduction):
    """backward_single (b ≤ c) leaves in .grad the mean gradient the float64 path writes, and
    returns the mean loss and ‖g_B‖² that the float64 record reports."""
    model = mlp()
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    x, y = data(9)
    acc = GradientAccumulator(model, loss_fn, max_micro_batch=9)
    assert acc.is_single(9) and not acc.is_single(10)
    record = acc.accumulate(x, y)
    loss, sq_norm = acc.backward_single(x, y)
    for p, e in zip(model.parameters(), record.mean()):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-14)
    assert math.isclose(loss, record.loss_mean(), rel_tol=1e-12)
    assert math.isclose(sq_norm, record.sq_norm(), rel_tol=1e-12)


def test_one_plain_backward_is_refused_for_a_batch_that_needs_micro_batches():
    model = mlp()
    x, y = data(5)
    with pytest.raises(ParameterError, match=r"'inputs'.*max_micro_batch = 4.*5 rows"):
        GradientAccumulator(model, nn.CrossEntropyLoss(), max_micro_batch=4).backward_single(x, y)
    with pytest.raises(ParameterError, match=r"min_micro_batches = 2"):
        GradientAccumulator(model, nn.CrossEntropyLoss(), max_micro_batch=8, min_micro_batches=2).backward_single(x, y)


def test_the_denominator_is_the_global_batch_when_a_batch_is_split_elsewhere():
    """Two halves accumulated with D = b and added equal the whole (what DDP ranks do)."""
    model = mlp()
    loss_fn = nn.MSELoss(reduction="mean")
    x = torch.randn(11, 5, dtype=torch.float64)
    y = torch.randn(11, 3, dtype=torch.float64)
    expected = big_batch_grads(model, loss_fn, x, y)
    acc = GradientAccumulator(model, loss_fn, max_micro_batch=2)
    acc.backward(x[:6], y[:6], denominator=11)
    acc.backward(x[6:], y[6:], denominator=11)          # adds to .grad, as backward() would
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-14)


def test_moments_of_the_micro_batches_match_a_direct_computation():
    """Σ_j ‖S_j‖²/m_j, k and tr Σ̂ equal their definitions on separately computed micro-batch sums."""
    model = mlp()
    loss_fn = nn.CrossEntropyLoss()
    x, y = data(23)
    got = GradientAccumulator(model, loss_fn, max_micro_batch=5).accumulate(x, y)
    sizes = micro_batch_sizes(23, 5)
    sums, start = [], 0
    for m in sizes:
        g = torch.autograd.grad(loss_fn(model(x[start:start + m]), y[start:start + m]) * m, list(model.parameters()))
        sums.append(torch.cat([t.reshape(-1) for t in g]))
        start += m
    weighted = sum(float(s @ s) / m for s, m in zip(sums, sizes))
    mean = sum(sums) / 23
    trace = (weighted - 23 * float(mean @ mean)) / (len(sizes) - 1)
    assert got.micro_batches == len(sizes) == 5 and got.samples == 23
    assert math.isclose(got.weighted_sq, weighted, rel_tol=1e-12)
    assert math.isclose(got.trace_cov(), trace, rel_tol=1e-10)
    assert math.isclose(got.sq_norm(), float(mean @ mean), rel_tol=1e-12)


def test_inputs_are_transformed_one_micro_batch_at_a_time_and_the_hook_sees_each():
    model = mlp()
    loss_fn = nn.CrossEntropyLoss()
    raw = torch.randint(0, 256, (10, 5), dtype=torch.uint8)
    y = torch.randint(0, 3, (10,))
    seen, calls = [], []

    def transform(x):
        seen.append(x.shape[0])
        return x.to(torch.float64) / 255.0

    GradientAccumulator(model, loss_fn, max_micro_batch=4, transform=transform).accumulate(
        raw, y, on_micro_batch=lambda j, k: calls.append((j, k)))
    assert seen == [4, 3, 3] and calls == [(0, 3), (1, 3), (2, 3)]
    expected = big_batch_grads(model, loss_fn, raw.to(torch.float64) / 255.0, y)
    model.zero_grad(set_to_none=True)
    GradientAccumulator(model, loss_fn, max_micro_batch=4, transform=transform).backward(raw, y)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-14)


def test_an_empty_shard_contributes_zeros():
    model = mlp()
    acc = GradientAccumulator(model, nn.CrossEntropyLoss(), max_micro_batch=3).accumulate(None, None)
    assert acc.samples == 0 and acc.micro_batches == 0 and acc.loss_sum == 0.0
    assert all(float(s.abs().sum()) == 0.0 for s in acc.sums)


# -- BatchNorm: each micro-batch with its own statistics, buffers updated once per micro-batch ------------

def bn_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6, momentum=0.3), nn.ReLU(), nn.Linear(6, 3)).double()


def test_batchnorm_micro_batches_use_their_own_statistics_and_update_buffers_once_each():
    model = bn_model()
    loss_fn = nn.CrossEntropyLoss()
    x, y = data(14)
    sizes = micro_batch_sizes(14, 5)                     # [5, 5, 4]
    # the stated behaviour, done by hand: micro-batch by micro-batch, summed losses over b
    ref = copy.deepcopy(model)
    start = 0
    for m in sizes:
        (loss_fn(ref(x[start:start + m]), y[start:start + m]) * m / 14).backward()
        start += m
    GradientAccumulator(model, loss_fn, max_micro_batch=5).backward(x, y)
    for p, r in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-12, atol=1e-14)
    bn, bn_ref = model[1], ref[1]
    torch.testing.assert_close(bn.running_mean, bn_ref.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var, rtol=0, atol=0)
    assert int(bn.num_batches_tracked) == len(sizes) == 3
    # and running_mean is k momentum updates with each micro-batch's own mean
    h = model[0](x).detach()
    expect = torch.zeros(6, dtype=torch.float64)
    start = 0
    for m in sizes:
        expect = 0.7 * expect + 0.3 * h[start:start + m].mean(0)
        start += m
    torch.testing.assert_close(bn.running_mean, expect, rtol=1e-12, atol=1e-14)


def test_batchnorm_gradient_equals_the_big_batch_only_when_it_fits_in_one_micro_batch():
    loss_fn = nn.CrossEntropyLoss()
    x, y = data(12)
    one, split = bn_model(), bn_model()
    expected = big_batch_grads(bn_model(), loss_fn, x, y)
    GradientAccumulator(one, loss_fn, max_micro_batch=12).backward(x, y)
    GradientAccumulator(split, loss_fn, max_micro_batch=6).backward(x, y)
    for p, e in zip(one.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-14)
    gap = max(float((p.grad - e).abs().max()) for p, e in zip(split.parameters(), expected))
    assert gap > 1e-6, "with two micro-batches BatchNorm normalises each half by its own statistics"


# -- the cap ---------------------------------------------------------------------------------------------

def test_a_cap_below_one_is_refused_with_its_value():
    model = mlp()
    with pytest.raises(ParameterError, match=r"'max_micro_batch' parameter of GradientAccumulator must be >= 1"
                                             r".*Got max_micro_batch=0 instead"):
        GradientAccumulator(model, nn.MSELoss(), max_micro_batch=0)
    with pytest.raises(ParameterError, match=r"Got max_micro_batch=-3 instead"):
        micro_batch_sizes(10, -3)
    with pytest.raises(ParameterError, match=r"must be an integer.*Got max_micro_batch=2.5"):
        GradientAccumulator(model, nn.MSELoss(), max_micro_batch=2.5)


def fake_memory(limit):
    tried = []

    def fits(size):
        tried.append(size)
        if size > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory at {size}")
    return fits, tried


def test_the_cap_search_doubles_until_out_of_memory_and_keeps_the_last_fit():
    fits, tried = fake_memory(300)
    assert search_max_micro_batch(fits) == 256 and tried == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    fits, tried = fake_memory(10_000)
    assert search_max_micro_batch(fits, start=8, limit=1024) == 1024 and tried[-1] == 1024
    fits, _ = fake_memory(3)
    with pytest.raises(ParameterError, match=r"'start' parameter .* fits in memory.*Got start=4"):
        search_max_micro_batch(fits, start=4)


def test_other_errors_in_a_trial_are_not_taken_for_out_of_memory():
    def broken(size):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        search_max_micro_batch(broken)


def test_finding_the_cap_on_cpu_asks_for_an_explicit_cap():
    model = mlp()
    x, y = data(2)
    with pytest.raises(ParameterError, match=r"'device' parameter of find_max_micro_batch must be a CUDA device "
                                             r"\(on CPU pass max_micro_batch explicitly\).*Got device='cpu'"):
        find_max_micro_batch(model, nn.CrossEntropyLoss(), x, y)


@pytest.mark.slow
def test_the_training_loop_takes_the_same_steps_with_one_backward_or_with_micro_batches():
    """TrainingLoop with c ≥ b (one plain backward per step) and with c = 2 (float64 micro-batch
    sums): same parameters to 1e-10 and the same stage transitions over b = 4 → 16 (float64 model)."""
    from sfotorch.loop import TrainingLoop
    from sfotorch.monitors import ExactMonitor
    from sfotorch.sampler import ResizableLoader
    from sfotorch.scheduler import StageScheduler

    x, y = data(64)
    runs = []
    for cap in (64, 2):
        model = mlp()
        loss_fn = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, seed=3)
        sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=ExactMonitor(model, (x, y), loss_fn),
                               b0=4, eta0=0.2, eps0=0.3, delta=2, gamma=1.2, tau=5, b_max=16)
        loop = TrainingLoop(model, opt, sched, loader, loss_fn, max_micro_batch=cap)
        results = loop.run(max_steps=60)
        runs.append((model, sched, results))
    (m1, s1, r1), (m2, s2, r2) = runs
    assert s1.transitions == s2.transitions and len(s1.transitions) >= 1
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(r1, r2):
        assert math.isclose(a.grad_norm, b.grad_norm, rel_tol=1e-9) and math.isclose(a.loss, b.loss, rel_tol=1e-10)
