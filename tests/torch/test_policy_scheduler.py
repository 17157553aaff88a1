"""PolicyScheduler: exact batch statistics, unbiased tr Σ̂, the pure policy's decisions, a training run for each
of the six policies, resume by replay, non-finite steps and bad arguments."""

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402

from sfotheory import rule  # noqa: E402
from sfotheory.policies import (  # noqa: E402
    AdaScale,
    GradientNoiseScale,
    IncreaseBatch,
    InnerProductTest,
    NormTest,
    PolicyEvent,
    StageRule,
    Statistics,
    check_due,
    initial_state,
    needs,
    step,
)
from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.monitors import ExactMonitor  # noqa: E402
from sfotorch.policy_scheduler import PolicyScheduler  # noqa: E402
from sfotorch.sampler import ResizableLoader  # noqa: E402
from sfotorch.scheduler import NonFiniteError  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread (and the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- brute force ----------------------------------------------------------------------------------------------

def brute_statistics(model, loss_fn, x, y, extra=None):
    """‖g_B‖², tr Σ̂ and V̂_ip from the per-sample gradients of torch.func (vmap over grad), in float64, by the
    definitions of sfotheory.policies.base. ``extra``: per-sample tensors passed to the model after x."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def one(theta, xi, yi, *rest):
        return loss_fn(functional_call(model, theta, (xi[None], *(r[None] for r in rest))), yi[None])

    rest = () if extra is None else (extra,)
    per = vmap(grad(one), in_dims=(None, 0, 0) + (0,) * len(rest))(params, x, y, *rest)
    G = torch.cat([g.reshape(x.shape[0], -1) for g in per.values()], 1).double()
    b = G.shape[0]
    g = G.mean(0)
    return {"grad_sq": float(g @ g), "trace_var": float(((G - g) ** 2).sum() / (b - 1)),
            "inner_var": float(((G @ g - g @ g) ** 2).sum() / (b - 1))}


class MeanOverTokens(nn.Module):
    """Linear layers applied to (b, T, d) and averaged over T: per-sample parts add over tokens before the norm."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, x):
        return self.body(x).mean(1)


def case(name, dtype):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "linear-ce":
        model, x = nn.Linear(5, 3), torch.randn(8, 5, generator=g)
        y, loss = torch.randint(0, 3, (8,), generator=g), nn.CrossEntropyLoss()
    elif name == "conv-ce":
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, stride=2), nn.Flatten(),
                              nn.Linear(8, 3))
        x, y, loss = torch.randn(6, 2, 6, 6, generator=g), torch.randint(0, 3, (6,), generator=g), nn.CrossEntropyLoss()
    elif name == "tokens-ce":
        model, x = MeanOverTokens(), torch.randn(7, 4, 6, generator=g)
        y, loss = torch.randint(0, 3, (7,), generator=g), nn.CrossEntropyLoss()
    else:                                           # least squares: f_i = (x_iᵀθ + β − y_i)²
        model, x = nn.Linear(4, 1), torch.randn(8, 4, generator=g)
        y, loss = torch.randn(8, 1, generator=g), nn.MSELoss()
    return model.to(dtype), x.to(dtype), (y.to(dtype) if y.is_floating_point() else y), loss


def measure_once(model, loss_fn, x, y):
    """The statistics PolicyScheduler hands the policy on a check step (InnerProductTest reads all three)."""
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = PolicyScheduler(opt, InnerProductTest(b0=2, eta0=0.1), model=model, loss_fn=loss_fn)
    assert sched.check_due
    sched.backward(x, y)
    sched.step()
    return sched.last_stats


# -- the statistics are exact -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ["linear-ce", "conv-ce", "tokens-ce", "least-squares"])
def test_batch_statistics_equal_brute_force_per_sample_gradients(name, dtype, rtol):
    model, x, y, loss_fn = case(name, dtype)
    want = brute_statistics(copy.deepcopy(model).double(), loss_fn, x.double(),
                            y.double() if y.is_floating_point() else y)
    got = measure_once(model, loss_fn, x, y)
    assert got.samples == x.shape[0] and got.population == math.inf
    for key, value in want.items():
        assert getattr(got, key) == pytest.approx(value, rel=rtol), key
    assert want["trace_var"] > 0.1 * want["inner_var"] / want["grad_sq"]   # orthogonal part present: not degenerate


class DropoutNet(nn.Module):
    """Dropout between two layers; ``mask`` replaces the dropout draw (for the brute force)."""

    def __init__(self):
        super().__init__()
        self.l1, self.drop, self.l2 = nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3)
        self.masks = []
        self.drop.register_forward_hook(lambda m, i, o: self.masks.append((o / i[0]).detach())
                                        if not self.masks else None)

    def forward(self, x, mask=None):
        h = torch.tanh(self.l1(x))
        return self.l2(self.drop(h) if mask is None else h * mask)


def test_with_dropout_the_statistics_are_those_of_the_training_masks_and_the_rng_is_untouched():
    torch.manual_seed(0)
    model, loss_fn = DropoutNet().double(), nn.CrossEntropyLoss()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    plain = copy.deepcopy(model)
    torch.manual_seed(5)
    loss_fn(plain(x), y).backward()
    after_plain = torch.get_rng_state()
    torch.manual_seed(5)
    got = measure_once(model, loss_fn, x, y)
    assert torch.equal(torch.get_rng_state(), after_plain)      # the jvp pass replayed and restored the RNG
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), plain.parameters()))
    mask = model.masks[0]
    assert 0 < float((mask == 0).double().mean()) < 1           # dropout did drop
    want = brute_statistics(model, loss_fn, x, y, extra=mask)
    for key, value in want.items():                              # a fresh mask in the jvp pass would change inner_var
        assert getattr(got, key) == pytest.approx(value, rel=1e-9), key


def test_backward_on_a_check_step_leaves_the_plain_backwards_grad_bit_for_bit():
    model, x, y, loss_fn = case("conv-ce", torch.float32)
    plain = copy.deepcopy(model)
    loss_fn(plain(x), y).backward()
    for p in model.parameters():                                 # accumulation onto an existing .grad
        p.grad = torch.ones_like(p)
    for p in plain.parameters():
        p.grad += 1.0
    got = measure_once(model, loss_fn, x, y)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), plain.parameters()))
    want = brute_statistics(copy.deepcopy(model).double(), loss_fn, x.double(), y)   # the fresh part only
    assert got.grad_sq == pytest.approx(want["grad_sq"], rel=1e-4)


def test_begin_and_end_batch_around_the_callers_own_backward_measure_what_backward_measures():
    model, x, y, loss_fn = case("conv-ce", torch.float64)
    want = measure_once(copy.deepcopy(model), loss_fn, x, y)              # through backward()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = PolicyScheduler(opt, InnerProductTest(b0=2, eta0=0.1), model=model, loss_fn=loss_fn)
    for p in model.parameters():                                         # a previous step's gradients
        p.grad = torch.ones_like(p)
    sched.begin_batch(x, y)
    loss = loss_fn(model(x), y)
    opt.zero_grad()                  # after the forward, as Lightning's closure does: what backward adds to
    sched.before_backward()
    loss.backward()
    with pytest.raises(RuntimeError, match="between begin_batch"):
        sched.step()
    sched.end_batch(loss)
    sched.step()
    got = sched.last_stats
    assert (got.samples, got.grad_sq, got.trace_var, got.inner_var) == \
           (want.samples, want.grad_sq, want.trace_var, want.inner_var)
    assert not any(m._forward_hooks for m in model.modules())


def test_end_batch_refuses_a_loss_fn_that_is_not_the_back_propagated_loss():
    model, x, y, loss_fn = case("linear-ce", torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = PolicyScheduler(opt, InnerProductTest(b0=2, eta0=0.1), model=model, loss_fn=loss_fn)
    sched.begin_batch(x, y)
    loss = loss_fn(model(x), y) + 0.1 * sum(p.pow(2).sum() for p in model.parameters())   # a regulariser
    loss.backward()
    with pytest.raises(ParameterError, match="The 'loss_fn' parameter of PolicyScheduler.end_batch") as err:
        sched.end_batch(loss)
    assert err.value.parameter == "loss_fn"


# -- tr Σ̂ is unbiased for tr S² without replacement ----------------------------------------------------------------

def test_trace_var_of_batches_without_replacement_is_unbiased_for_the_finite_population_variance():
    n, b, epochs = 32, 4, 150
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    theta = model.weight.detach()[0]
    per_sample = 2.0 * (x @ theta - y[:, 0])[:, None] * x        # ∇f_i of f_i = (x_iᵀθ − y_i)² (MSELoss)
    tr_s2 = float(((per_sample - per_sample.mean(0)) ** 2).sum() / (n - 1))
    loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), b, seed=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)            # never stepped: θ stays fixed
    sched = PolicyScheduler(opt, NormTest(b0=b, eta0=0.1, b_max=b), loader=loader, model=model, loss_fn=nn.MSELoss())
    epoch_means = []
    for _ in range(epochs):
        values = []
        for xb, yb in loader:
            opt.zero_grad()
            sched.backward(xb, yb)
            sched.step()
            values.append(sched.last_stats.trace_var)
        epoch_means.append(np.mean(values))
    assert sched.last_stats.population == n
    # Epochs are independent (π_e is a function of (seed, e)); batches of one epoch are not (they partition the
    # data), so the standard error is that of the epoch means. Tolerance: 4 standard errors.
    mean, se = float(np.mean(epoch_means)), float(np.std(epoch_means, ddof=1) / math.sqrt(epochs))
    assert abs(mean - tr_s2) <= 4 * se, (mean, tr_s2, se)
    assert abs(mean * (b - 1) / b - tr_s2) > 4 * se              # the 1/b estimator (25 % low) would be caught


# -- the same decisions as the pure policy -----------------------------------------------------------------------

def six_policies(n=256):
    return {
        "stage_rule": StageRule(rule.adaptive_exponential(b0=8, eta0=0.5, eps0=1.0, delta=2, gamma=1.2, tau=4,
                                                          b_max=64)),
        "norm_test": NormTest(b0=8, eta0=0.5, theta=0.5, b_max=128),
        "inner_product_test": InnerProductTest(b0=8, eta0=0.5, theta=0.3, nu=0.5, b_max=128),
        "gradient_noise_scale": GradientNoiseScale(b0=8, eta0=0.5, b_max=128, smoothing=0.5, lr_mode="optimal"),
        "adascale": AdaScale(base_batch=8, scale=4, eta0=0.2, smoothing=0.5, milestones=(6.0,), decay=0.5),
        "increase_batch": IncreaseBatch(b0=8, eta0=0.5, milestones=(64, 256), factor=2),
    }


class RefusingMonitor:
    """A monitor that must not be called: statistics passed to step() take its place."""

    name = "refusing"

    def measure(self):
        raise AssertionError("the monitor was called although the caller passed the statistics")


def recorded_statistics(policy, steps=40, seed=0):
    """A statistic sequence and the pure policy's states and events on it (one non-finite gradient, one NaN)."""
    rng = np.random.default_rng(seed)
    state, rows = initial_state(policy), []
    for t in range(steps):
        due = bool(check_due(policy, state))
        stats = Statistics(samples=state.batch_size, grad_sq=float(rng.uniform(0.2, 1.5)),
                           trace_var=float(rng.uniform(0.0, 1.2) * state.batch_size),
                           inner_var=float(rng.uniform(0.0, 2.0) * state.batch_size),
                           full_norm=float(rng.uniform(0.0, 1.5)), check_cost=100 if due else 0, population=256.0,
                           finite=t != 17)
        if t == 23:
            stats = stats._replace(grad_sq=math.nan)
        state, event = step(policy, state, stats)
        rows.append((stats, state, event))
    return rows


@pytest.mark.parametrize("kind", list(six_policies()))
def test_the_scheduler_takes_the_pure_policys_decisions_on_a_recorded_statistic_sequence(kind):
    policy = six_policies()[kind]
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 9.0}], lr=1.0)
    sched = PolicyScheduler(opt, policy, monitor=RefusingMonitor(), on_nonfinite="warn")
    rows = recorded_statistics(policy)
    before = needs(policy).order == "before_update"
    for t, (stats, want_state, want_event) in enumerate(rows):
        with pytest.warns(RuntimeWarning) if want_event == PolicyEvent.NONFINITE else _nothing():
            event = sched.before_update(stats=stats) if before else sched.step(stats=stats)
        if before:
            assert [gr["lr"] for gr in opt.param_groups] == [want_state.lr] * 2     # the coming update's η
            assert sched.step() == event
        assert (event, sched.state) == (want_event, want_state), t
        assert [gr["lr"] for gr in opt.param_groups] == [want_state.lr] * 2
        assert sched.batch_size == want_state.batch_size
    events = {e for _, _, e in rows}
    assert PolicyEvent.NONFINITE in events
    assert sched.transitions or len({s.lr for _, s, _ in rows}) > 1           # the sequence made the policy move
    assert [tr["step"] for tr in sched.transitions] == [s.step for i, (_, s, _) in enumerate(rows)
                                                         if s.stage != (rows[i - 1][1].stage if i else 0)]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- training runs ------------------------------------------------------------------------------------------------

def classification(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x @ torch.randn(8, 4, generator=g)).argmax(1)
    return torch.utils.data.TensorDataset(x, y)


def build(policy, *, seed=0, data=None, momentum=0.0):
    """Model (two param groups), optimizer, loader and scheduler for the synthetic task."""
    data = classification() if data is None else data
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters()}], lr=1.0,
                          momentum=momentum)
    loader = ResizableLoader(data, policy.b0, seed=11)
    loss_fn = nn.CrossEntropyLoss()
    monitor = ExactMonitor(model, data, loss_fn) if "full_norm" in needs(policy).statistics else None
    sched = PolicyScheduler(opt, policy, loader=loader, model=model, loss_fn=loss_fn, monitor=monitor)
    return model, opt, loader, sched


def batches(loader):
    while True:
        yield from loader


def train_step(sched, opt, xb, yb):
    opt.zero_grad()
    sched.backward(xb, yb)
    if needs(sched.policy).order == "before_update":
        sched.before_update()
        assert all(gr["lr"] == sched.state.lr for gr in opt.param_groups)   # this update's η
    opt.step()
    return sched.step()


@pytest.mark.parametrize("kind", list(six_policies()))
def test_training_run_writes_the_policy_state_into_loader_and_param_groups_at_every_step(kind):
    model, opt, loader, sched = build(six_policies()[kind])
    it, lrs, checks = batches(loader), set(), 0
    for _ in range(40):
        want_b = min(sched.batch_size, loader.n - loader.position if loader.position < loader.n else loader.n)
        checks += sched.check_due
        xb, yb = next(it)
        assert xb.shape[0] == want_b                        # the size set by the last step, at the very next batch
        train_step(sched, opt, xb, yb)
        assert loader.batch_size == sched.state.batch_size
        assert [gr["lr"] for gr in opt.param_groups] == [sched.state.lr] * 2
        lrs.add(sched.state.lr)
    assert sched.state.samples == loader.samples_delivered and sched.state.step == 40
    assert sched.state.check_samples == (256 * checks if kind == "stage_rule" else 0)   # ExactMonitor costs n
    assert sched.transitions or len(lrs) > 1, "the policy never moved: the run tests nothing"
    assert all(torch.isfinite(p).all() for p in model.parameters())


# -- resume by replay ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["norm_test", "adascale", "inner_product_test"])
def test_resume_by_replay_equals_the_uninterrupted_run_bit_for_bit(kind):
    k, total = 9, 24
    policy = six_policies()[kind]
    model, opt, loader, sched = build(policy, momentum=0.9)
    it = batches(loader)
    want = []
    for _ in range(total):
        train_step(sched, opt, *next(it))
        want.append(sched.state)
    want_params = [p.detach().clone() for p in model.parameters()]

    model, opt, loader, sched = build(policy, momentum=0.9)
    it = batches(loader)
    for _ in range(k):
        train_step(sched, opt, *next(it))
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "loader": loader.state_dict(),
                           "sched": sched.state_dict()})
    model, opt, loader, sched = build(policy, seed=1, momentum=0.9)      # fresh objects, other initial weights
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    loader.load_state_dict(saved["loader"])
    sched.load_state_dict(saved["sched"])
    assert sched.state == want[k - 1] and loader.batch_size == sched.batch_size
    it, got = batches(loader), want[:k]
    for _ in range(total - k):
        train_step(sched, opt, *next(it))
        got.append(sched.state)
    assert got == want
    assert any(s.batch_size != want[0].batch_size or s.lr != want[0].lr for s in want[k:])   # it moved after resume
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), want_params))


def test_a_state_dict_of_another_policy_configuration_is_refused():
    _, _, _, sched = build(NormTest(b0=8, eta0=0.5, theta=0.5, b_max=128))
    _, _, _, other = build(NormTest(b0=8, eta0=0.5, theta=0.6, b_max=128))
    with pytest.raises(ParameterError, match="theta") as err:
        other.load_state_dict(sched.state_dict())
    assert err.value.parameter == "state_dict"


# -- non-finite steps -------------------------------------------------------------------------------------------

def nan_batch(b=8):
    x = torch.randn(b, 8)
    x[0, 0] = math.nan
    return x, torch.zeros(b, dtype=torch.long)


def test_a_nan_loss_on_a_check_step_moves_nothing_and_raises_by_default():
    policy = NormTest(b0=8, eta0=0.5, theta=0.01, b_max=128)       # any finite statistic would grow b
    _, opt, _, sched = build(policy)
    assert sched.check_due
    sched.backward(*nan_batch())
    with pytest.raises(NonFiniteError, match="'loss'"):
        sched.step()
    want, _ = step(policy, initial_state(policy), Statistics(samples=8, finite=False, population=256.0))
    assert sched.state == want and sched.last_event == PolicyEvent.NONFINITE
    assert (sched.batch_size, sched.lr, sched.stage, sched.state.step) == (8, 0.5, 0, 1)
    assert opt.param_groups[0]["lr"] == 0.5


def test_a_nan_loss_before_adascales_update_raises_before_the_update_and_step_closes_it():
    policy = AdaScale(base_batch=4, scale=2, eta0=0.2)
    _, opt, _, sched = build(policy)
    sched.backward(*nan_batch())
    with pytest.raises(NonFiniteError):
        sched.before_update()
    assert sched.last_event == PolicyEvent.NONFINITE and sched.state.updates == 0 and sched.lr == 0.2
    assert sched.step() == PolicyEvent.NONFINITE


def test_with_on_nonfinite_warn_a_nan_step_warns_and_one_sample_check_steps_only_warn():
    policy = NormTest(b0=8, eta0=0.5, b_max=128)
    model = nn.Linear(8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = PolicyScheduler(opt, policy, model=model, loss_fn=nn.CrossEntropyLoss(), on_nonfinite="warn")
    sched.backward(*nan_batch())
    with pytest.warns(RuntimeWarning, match="'loss'"):
        assert sched.step() == PolicyEvent.NONFINITE
    strict = PolicyScheduler(opt, policy, model=model, loss_fn=nn.CrossEntropyLoss())
    strict.backward(torch.randn(1, 8), torch.zeros(1, dtype=torch.long))   # the short end of an epoch
    with pytest.warns(RuntimeWarning, match="one sample"):
        assert strict.step() == PolicyEvent.NONFINITE
    assert strict.batch_size == 8


# -- protocol and bad arguments ---------------------------------------------------------------------------------

class NoLr:
    param_groups = [{"params": []}]


@pytest.mark.parametrize("name, make", [
    ("policy", lambda m, o, d: PolicyScheduler(o, "norm_test")),
    ("optimizer", lambda m, o, d: PolicyScheduler(NoLr(), NormTest(b0=8, eta0=0.1))),
    ("loader", lambda m, o, d: PolicyScheduler(o, NormTest(b0=8, eta0=0.1),
                                               loader=torch.utils.data.DataLoader(d, batch_size=8))),
    ("monitor", lambda m, o, d: PolicyScheduler(o, six_policies()["stage_rule"], model=m,
                                                loss_fn=nn.CrossEntropyLoss())),
    ("loss_fn", lambda m, o, d: PolicyScheduler(o, NormTest(b0=8, eta0=0.1), model=m,
                                                loss_fn=nn.CrossEntropyLoss(reduction="sum"))),
    ("model", lambda m, o, d: PolicyScheduler(o, NormTest(b0=8, eta0=0.1), loss_fn=nn.CrossEntropyLoss(),
                                              model=nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4)))),
    ("policy", lambda m, o, d: PolicyScheduler(o, NormTest(b0=300, eta0=0.1), loader=ResizableLoader(d, 8))),
    ("stats", lambda m, o, d: PolicyScheduler(o, NormTest(b0=8, eta0=0.1), model=m,
                                              loss_fn=nn.CrossEntropyLoss()).step()),
    ("policy", lambda m, o, d: PolicyScheduler(o, NormTest(b0=8, eta0=0.1)).before_update()),
])
def test_bad_arguments_raise_a_parameter_error_naming_the_parameter(name, make):
    model = nn.Linear(8, 4)
    with pytest.raises(ParameterError) as err:
        make(model, torch.optim.SGD(model.parameters(), lr=1.0), classification())
    assert err.value.parameter == name and f"'{name}'" in str(err.value)


def test_the_two_call_protocol_of_a_before_update_policy_is_enforced():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = PolicyScheduler(opt, AdaScale(base_batch=2, scale=2, eta0=0.1))
    stats = Statistics(samples=4, grad_sq=1.0, trace_var=1.0)
    with pytest.raises(RuntimeError, match="before_update"):
        sched.step(stats=stats)
    sched.before_update(stats=stats)
    with pytest.raises(RuntimeError, match="twice"):
        sched.before_update(stats=stats)
    with pytest.raises(ParameterError):
        sched.step(stats=stats)
    assert sched.step() == PolicyEvent.CHECKED and sched.state.step == 1


def test_a_capped_b_max_follows_the_dataset_and_the_log_records_checks_and_moves():
    log = []
    data = classification(n=64)
    model = nn.Linear(8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = PolicyScheduler(opt, NormTest(b0=8, eta0=0.5, theta=0.01), loader=ResizableLoader(data, 8),
                            model=model, loss_fn=nn.CrossEntropyLoss(), log=log)
    assert sched.policy.b_max == 64 and sched.population == 64.0
    with pytest.warns(UserWarning, match="capped"):
        PolicyScheduler(opt, NormTest(b0=8, eta0=0.5, b_max=100), loader=ResizableLoader(data, 8))
    it = batches(sched.loader)
    for _ in range(3):
        train_step(sched, opt, *next(it))
    assert sched.batch_size == 64 and len(log) == 3 and log[0]["event"] == "ADVANCED"
    assert log[0]["b"] == 8 and log[0]["b_next"] > 8 and log[0]["trace_var"] > 0 and log[0]["inner_var"] is None
