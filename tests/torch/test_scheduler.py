"""StageScheduler: the pure rule's transitions, LR in param groups, loader sizes, SFO, resume, bad input."""

import math
import warnings

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sfotheory import rule  # noqa: E402
from sfotheory.rule import Event  # noqa: E402
from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.sampler import ResizableLoader  # noqa: E402
from sfotorch.scheduler import CallableMonitor, MeasuredNorm, NonFiniteError, StageScheduler  # noqa: E402
from tests.oracle import AuthorsRule  # noqa: E402

ADAPTIVE = {"b0": 4, "eta0": 0.1, "eps0": 0.5, "delta": 2, "gamma": 1.4, "tau": 3, "b_max": 64}


class ScriptedMonitor:
    """Returns the scripted norms in order, each at a fixed cost; records when it was called."""

    name = "scripted"

    def __init__(self, norms, cost=100):
        self.norms = list(norms)
        self.cost = cost
        self.calls = 0

    def measure(self):
        norm = self.norms[self.calls]
        self.calls += 1
        return MeasuredNorm(norm=norm, cost=self.cost)


class Tiny(torch.utils.data.Dataset):
    def __init__(self, n=40):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = torch.randn(n, generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def sgd(lr=1.0, **kw):
    model = torch.nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=lr, **kw)


def rule_run(schedule, samples, norms_at_checks):
    """The pure rule on the same samples and norm sequence: (events, states)."""
    state = rule.initial_state(schedule)
    events, states, k = [], [], 0
    for s in samples:
        norm = None
        if rule.check_due(schedule, state):
            norm, k = norms_at_checks[k], k + 1
        state, ev = rule.advance(schedule, state, s, norm=norm, check_cost=100 if norm is not None else 0)
        events.append(ev)
        states.append(state)
    return events, states


# -- transitions equal the pure rule's ---------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(norms=st.lists(st.floats(0.0, 1.0), min_size=20, max_size=20), order=st.sampled_from(
    ["after_update", "before_update"]))
@pytest.mark.slow
def test_transitions_equal_the_pure_rule_on_the_same_norms(norms, order):
    schedule = rule.adaptive_exponential(**ADAPTIVE)
    monitor = ScriptedMonitor(norms)
    _, opt = sgd()
    sched = StageScheduler(opt, schedule, monitor=monitor, check_order=order)
    events, states, used = [], [], []
    for _ in range(60):
        b = sched.batch_size
        used.append(b)
        if order == "before_update":
            sched.before_update(samples=b)
            sched.step()
            events.append(sched.last_event)
        else:
            events.append(sched.step(samples=b))
        states.append(sched.state)
    want_events, want_states = rule_run(schedule, used, norms)
    assert events == want_events
    assert states == want_states
    assert monitor.calls == 60 // ADAPTIVE["tau"]


@pytest.mark.parametrize("policy, kwargs", [
    ("periodic", {"b0": 2, "eta0": 0.05, "delta": 2, "gamma": 1.2, "period": 7, "b_max": 16}),
    ("cosine", {"b0": 4, "eta0": 0.1, "horizon": 25, "eta_min": 0.01}),
    ("constant", {"b0": 4, "eta0": 0.1}),
    ("adaptive_linear", {"b0": 2, "eta0": 0.1, "eps0": 0.5, "increment": 3, "tau": 2}),
])
def test_every_policy_by_name_follows_the_rule(policy, kwargs):
    schedule = getattr(rule, policy)(**kwargs)
    norms = [0.9, 0.3, 0.2, 0.1] * 10
    _, opt = sgd()
    sched = StageScheduler(opt, policy, monitor=ScriptedMonitor(norms), **kwargs)
    assert sched.schedule == schedule
    state, lrs, k = rule.initial_state(schedule), [], 0
    for _ in range(30):
        norm = None
        if rule.check_due(schedule, state):
            norm, k = norms[k], k + 1
        cost = 100 if norm is not None else 0
        state, ev = rule.advance(schedule, state, state.batch_size, norm=norm, check_cost=cost)
        assert sched.step() == ev
        assert sched.state == state
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[-1] == pytest.approx(state.lr)


# -- SGD on a quadratic against the independent oracle, in both check orders -------------------------------------

H = (1.0, 0.5, 0.25)          # f(θ) = ½ Σ h_i θ_i², ∇f(θ) = h ⊙ θ: the step's gradient is exact


def oracle_sgd(kwargs, order, steps):
    """The authors' loop on f: measure ‖∇f‖ on every τ-th step at θ_t ("before_update", the update of a
    triggering step uses η_{m+1}) or at θ_{t+1} ("after_update"); returns (m, b, η, θ) after each step."""
    oracle = AuthorsRule(**kwargs)
    theta = [1.0, -2.0, 0.5]
    trace = []
    for t in range(1, steps + 1):
        grad = [h * x for h, x in zip(H, theta)]
        due = t % kwargs["tau"] == 0
        if order == "before_update":
            oracle.step(math.hypot(*grad) if due else None)
        theta = [x - oracle.eta * g for x, g in zip(theta, grad)]
        if order == "after_update":
            oracle.step(math.hypot(*(h * x for h, x in zip(H, theta))) if due else None)
        trace.append((oracle.m, oracle.b, oracle.eta, theta))
    return trace


@pytest.mark.parametrize("order", ["after_update", "before_update"])
@pytest.mark.parametrize("policy, kwargs", [
    ("adaptive_exponential", dict(b0=3, eta0=0.3, eps0=1.2, delta=1.5, gamma=1.2, tau=2, b_max=40, eta_max=0.4)),
    ("adaptive_linear", dict(b0=3, eta0=0.3, eps0=0.5, increment=2.5, tau=1)),
    ("adaptive_exponential", dict(b0=3, eta0=0.3, eps0=0.05, delta=2.5, gamma=1.5, tau=2, b_max=40,
                                  stall_limit=5, stall_action="advance")),
], ids=["exponential-eta_max", "linear", "stall-advance"])
def test_sgd_with_the_scheduler_equals_the_authors_loop_in_either_check_order(policy, kwargs, order):
    steps = 30
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    h = torch.tensor(H, dtype=torch.float64)
    opt = torch.optim.SGD([theta], lr=1.0)
    monitor = CallableMonitor(lambda: torch.linalg.vector_norm(h * theta.detach()), cost=0)
    sched = StageScheduler(opt, policy, monitor=monitor, check_order=order, **kwargs)
    mine = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (h * theta**2).sum()).backward()
        if order == "before_update":
            sched.before_update(samples=sched.batch_size)
            opt.step()
            sched.step()
        else:
            opt.step()
            sched.step(samples=sched.batch_size)
        mine.append((sched.stage, sched.batch_size, sched.lr, theta.detach().tolist()))
    want = oracle_sgd(kwargs, order, steps)
    assert [r[:2] for r in mine] == [r[:2] for r in want]
    for (_, _, lr, th), (_, _, eta, th_want) in zip(mine, want):
        assert lr == pytest.approx(eta, rel=1e-12) and th == pytest.approx(th_want, rel=1e-12, abs=1e-15)
    assert want[-1][0] >= 2                                   # the run passed through stage changes
    other = oracle_sgd(kwargs, "after_update" if order == "before_update" else "before_update", steps)
    assert other != want                                      # and the two orders are told apart


# -- the learning rate reaches the optimizer ------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=1.0),
    lambda p: torch.optim.SGD(p, lr=1.0, momentum=0.9),
    lambda p: torch.optim.Adam(p, lr=1.0),
], ids=["sgd", "sgd-momentum", "adam"])
def test_lr_is_written_into_every_param_group(make):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = make([{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 7.0}])
    sched = StageScheduler(opt, "adaptive_exponential", monitor=ScriptedMonitor([0.1] * 5), **ADAPTIVE)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    for _ in range(3):                       # the third step is a check with 0.1 <= eps_0
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step(samples=4)
    assert sched.stage == 1
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.14)] * 2 == sched.get_last_lr()


def test_sgd_update_uses_the_new_lr_only_in_the_before_update_order():
    """The authors' order: the triggering step's update already uses eta_1; ours: from the next step."""
    torch.manual_seed(0)
    for order, expected_lr in (("after_update", 0.1), ("before_update", 0.14)):
        model, opt = sgd()
        sched = StageScheduler(opt, "adaptive_exponential", check_order=order, monitor=ScriptedMonitor([0.1]),
                               **{**ADAPTIVE, "tau": 1})
        x, y = torch.randn(4, 3), torch.randn(4, 1)
        torch.nn.functional.mse_loss(model(x), y).backward()
        before = model.weight.detach().clone()
        grad = model.weight.grad.clone()
        if order == "before_update":
            sched.before_update(samples=4)
        opt.step()
        sched.step(**({} if order == "before_update" else {"samples": 4}))
        # float32 rounding of θ − (θ − ηg) is ~1e-7 absolute, whatever the size of ηg; 0.1 vs 0.14 differ by far more
        assert torch.allclose(before - model.weight.detach(), expected_lr * grad, rtol=1e-5, atol=1e-6)
        assert sched.lr == pytest.approx(0.14)


# -- the loader follows b_m ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_workers", [0, 2])
def test_next_batch_after_a_stage_change_has_the_new_size(num_workers):
    loader = ResizableLoader(Tiny(200), batch_size=1, seed=0, num_workers=num_workers,
                             chunk_size=4 if num_workers else None)
    _, opt = sgd()
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader,
                           monitor=ScriptedMonitor([0.9, 0.1, 0.9, 0.1, 0.1]), **ADAPTIVE)
    sizes, expected = [], []
    for xb, _ in loader:
        sizes.append(len(xb))
        expected.append(sched.batch_size)     # what the scheduler set before this batch was drawn
        sched.step()
        if len(sizes) == 15:
            break
    assert sizes == expected
    assert sizes == [4] * 6 + [8] * 6 + [16] * 3    # changes after steps 6, 12 (and 15)
    assert loader.batch_size == 32


def test_sfo_counts_are_exact_with_short_final_batches():
    loader = ResizableLoader(Tiny(30), batch_size=4, seed=0)
    _, opt = sgd()
    monitor = ScriptedMonitor([0.9, 0.1] * 20, cost=30)
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=monitor,
                           **{**ADAPTIVE, "b_max": 16})
    per_stage: dict[int, list[int]] = {}
    seen = 0
    for _ in range(3):
        for xb, _ in loader:
            per_stage.setdefault(sched.stage, []).append(len(xb))
            seen += len(xb)
            sched.step()
    assert seen == 90                                  # three epochs, short final batches included
    assert sched.state.samples == 90 == sched.account.totals()["train"]
    assert sched.state.check_samples == 30 * monitor.calls == sched.account.totals()["measure"]
    assert {r["stage"]: r["train"] for r in sched.account.per_stage()} == {m: sum(v) for m, v in per_stage.items()}
    assert sum(r["checks"] for r in sched.account.per_stage()) == monitor.calls


def test_samples_of_any_integer_type_count_and_others_are_refused_by_name():
    import numpy as np
    _, opt = sgd()
    sched = StageScheduler(opt, "constant", b0=4, eta0=0.1)
    sched.step(samples=4)
    sched.step(samples=np.int64(3))
    assert sched.state.samples == 7 and type(sched.state.samples) is int
    for bad, rule_text in ((True, "an integer"), (2.0, "an integer"), (0, ">= 1")):
        with pytest.raises(ParameterError, match=f"'samples' parameter of StageScheduler.step must be {rule_text}"):
            sched.step(samples=bad)
    assert sched.state.samples == 7


# -- state dict ------------------------------------------------------------------------------------------------------

def test_state_dict_round_trip_rebuilds_the_lr_and_the_loader_size():
    loader = ResizableLoader(Tiny(100), batch_size=4)
    _, opt = sgd()
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=ScriptedMonitor([0.1] * 9),
                           **ADAPTIVE)
    for _ in range(6):
        sched.step()
    saved = sched.state_dict()
    loader2 = ResizableLoader(Tiny(100), batch_size=4)
    _, opt2 = sgd(lr=123.0)
    other = StageScheduler(opt2, "adaptive_exponential", loader=loader2, **ADAPTIVE)
    other.load_state_dict(saved)
    assert other.state == sched.state and other.state_dict() == saved
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * 1.4**2) and loader2.batch_size == 16


def test_resume_by_replay_gives_the_same_transitions():
    norms = [0.9, 0.45, 0.8, 0.3, 0.2, 0.9, 0.1, 0.05, 0.6, 0.01, 0.02, 0.3] * 3
    kwargs = {**ADAPTIVE, "b_max": 32}

    def run(sched, monitor_from, steps):
        sched.monitor = ScriptedMonitor(norms[monitor_from:])
        for _ in range(steps):
            sched.step()
        return sched

    _, opt = sgd()
    straight = run(StageScheduler(opt, "adaptive_exponential", **kwargs), 0, 18)
    saved = {k: v for k, v in straight.state_dict().items()}
    run(straight, 6, 21)                                             # continue M = 21 steps
    _, opt2 = sgd()
    resumed = StageScheduler(opt2, "adaptive_exponential", **kwargs)
    resumed.load_state_dict(saved)
    run(resumed, 6, 21)
    assert resumed.transitions == straight.transitions
    assert resumed.state == straight.state
    assert resumed.account.per_stage() == straight.account.per_stage()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert len(straight.transitions) >= 3


def test_state_dict_of_other_schedule_arguments_is_refused():
    _, opt = sgd()
    saved = StageScheduler(opt, "adaptive_exponential", **ADAPTIVE).state_dict()
    other = StageScheduler(opt, "adaptive_exponential", **{**ADAPTIVE, "gamma": 1.3})
    with pytest.raises(ParameterError, match=r"'state_dict' parameter of StageScheduler.load_state_dict must be "
                                             r"written with the same Schedule arguments.*'gamma': \{'saved': 1.4, "
                                             r"'here': 1.3\}"):
        other.load_state_dict(saved)


# -- non-finite values ----------------------------------------------------------------------------------------

def test_nan_norm_never_advances_and_raises_or_warns_with_the_value():
    _, opt = sgd()
    sched = StageScheduler(opt, "adaptive_exponential", monitor=ScriptedMonitor([math.nan, math.inf]),
                           **{**ADAPTIVE, "tau": 1, "eps0": 1e9})
    with pytest.raises(NonFiniteError, match=r"'norm' parameter of StageScheduler.step \(step 1, measured by "
                                             r"'scripted'\) must be finite.*Got norm=nan instead"):
        sched.step()
    assert sched.last_event == Event.NONFINITE and sched.stage == 0 and sched.state.step == 1
    sched.on_nonfinite = "warn"
    with pytest.warns(RuntimeWarning, match=r"Got norm=inf instead"):
        assert sched.step() == Event.NONFINITE
    assert sched.stage == 0 and sched.state.step == 2


def test_a_plain_loop_stops_at_a_nan_loss_by_default_naming_the_value_and_the_step():
    model, opt = sgd(lr=0.1)
    sched = StageScheduler(opt, "constant", b0=4, eta0=0.1)
    x, y = torch.randn(4, 3), torch.randn(4, 1)
    steps = 0
    with pytest.raises(NonFiniteError, match=r"^The 'loss' parameter of StageScheduler.step \(step 3\) must be "
                                             r"finite .*on_nonfinite='warn' continues instead\)\. Got loss=nan"):
        for scale in (1.0, 1.0, float("nan"), 1.0):
            opt.zero_grad()
            loss = scale * torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            sched.step(loss=loss)
            steps += 1
    assert steps == 2 and sched.state.step == 3 and sched.last_event == Event.NONFINITE


def test_nan_loss_skips_the_measurement_and_keeps_the_stage():
    _, opt = sgd()
    monitor = ScriptedMonitor([0.01] * 5)
    sched = StageScheduler(opt, "adaptive_exponential", monitor=monitor, **{**ADAPTIVE, "tau": 1})
    with pytest.raises(NonFiniteError, match=r"'loss' parameter of StageScheduler.step \(step 1\) must be "
                                             r"finite.*Got loss=nan instead"):
        sched.step(loss=torch.tensor(float("nan")))
    assert sched.last_event == Event.NONFINITE and monitor.calls == 0 and sched.stage == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sched.step(loss=torch.tensor(0.5)) == Event.ADVANCED


# -- bad input -------------------------------------------------------------------------------------------------------

def test_unknown_policy_lists_the_choices():
    _, opt = sgd()
    with pytest.raises(ParameterError, match=r"'policy' parameter of make_schedule must be one of "
                                             r"'adaptive_exponential', 'adaptive_linear', 'constant', 'periodic', "
                                             r"'cosine'. Got policy='exponential' instead"):
        StageScheduler(opt, "exponential", b0=4, eta0=0.1)


def test_policy_keywords_are_checked():
    _, opt = sgd()
    with pytest.raises(ParameterError, match=r"'policy_kwargs' parameter of make_schedule\('constant'\) must be "
                                             r"keywords among \['b0', 'eta0', 'eps0', 'tau'\]. Got policy_kwargs="
                                             r"\['delta'\]"):
        StageScheduler(opt, "constant", b0=4, eta0=0.1, delta=2)


def test_gamma_at_or_above_sqrt_delta_needs_allow_unstable():
    _, opt = sgd()
    with pytest.raises(ParameterError, match=r"'gamma' parameter of Schedule\('adaptive_exponential'\) must be "
                                             r"< sqrt\(delta\) = 1.41421.*Got gamma=1.5 instead"):
        StageScheduler(opt, "adaptive_exponential", **{**ADAPTIVE, "gamma": 1.5})
    sched = StageScheduler(opt, "adaptive_exponential", **{**ADAPTIVE, "gamma": 1.5}, allow_unstable=True)
    assert sched.schedule.gamma == 1.5


def test_b0_larger_than_the_dataset_is_refused_and_b_max_capped():
    _, opt = sgd()
    with pytest.raises(ParameterError, match=r"'b0' parameter of StageScheduler must be <= the dataset size "
                                             r"n = 40.*Got b0=64 instead"):
        StageScheduler(opt, "constant", b0=64, eta0=0.1, loader=ResizableLoader(Tiny(40), batch_size=1))
    with pytest.warns(UserWarning, match="b_max=64 exceeds the dataset size n=40"):
        sched = StageScheduler(opt, "adaptive_exponential", loader=ResizableLoader(Tiny(40), batch_size=1),
                               **ADAPTIVE)
    assert sched.schedule.b_max == 40


def test_optimizer_without_lr_is_named():
    class NoLr(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"rho": 0.5})

    model = torch.nn.Linear(2, 1)
    with pytest.raises(ParameterError, match=r"'optimizer' parameter of StageScheduler must be an optimizer whose "
                                             r"param groups all hold 'lr' \(param group 0 has keys .*'rho'.*\). "
                                             r"Got optimizer='NoLr' instead"):
        StageScheduler(NoLr(model.parameters()), "constant", b0=4, eta0=0.1)


def test_a_plain_dataloader_and_a_missing_monitor_are_refused():
    _, opt = sgd()
    with pytest.raises(ParameterError, match=r"'loader' parameter of StageScheduler must be a ResizableLoader"):
        StageScheduler(opt, "constant", b0=4, eta0=0.1, loader=torch.utils.data.DataLoader(Tiny(), batch_size=4))
    sched = StageScheduler(opt, "adaptive_exponential", **{**ADAPTIVE, "tau": 1})
    with pytest.raises(ParameterError, match=r"'monitor' parameter of StageScheduler.step must be given.*step 1 "
                                             r"is a check step"):
        sched.step()
    assert sched.step(norm=0.1, check_cost=7) == Event.ADVANCED and sched.state.check_samples == 7


def test_before_update_order_is_enforced():
    _, opt = sgd()
    sched = StageScheduler(opt, "constant", b0=4, eta0=0.1, check_order="before_update")
    with pytest.raises(RuntimeError, match="call before_update"):
        sched.step()
    sched.before_update()
    with pytest.raises(RuntimeError, match="twice"):
        sched.before_update()
    sched.step()
    after = StageScheduler(opt, "constant", b0=4, eta0=0.1)
    with pytest.raises(ParameterError, match=r"'check_order' parameter .* Got check_order='after_update'"):
        after.before_update()


def test_callable_monitor_counts_its_cost():
    _, opt = sgd()
    sched = StageScheduler(opt, "adaptive_exponential", monitor=CallableMonitor(lambda: torch.tensor(0.2), cost=40),
                           **ADAPTIVE)
    for _ in range(6):
        sched.step()
    assert sched.state.check_samples == 80 and sched.stage == 2


def test_nan_loss_blocks_a_periodic_move():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = StageScheduler(opt, "periodic", b0=8, eta0=0.1, delta=2, gamma=1.4, period=2, on_nonfinite="warn")
    sched.step(loss=1.0)
    with pytest.warns(RuntimeWarning, match="loss"):
        event = sched.step(loss=float("nan"))
    assert event.name == "NONFINITE" and sched.stage == 0 and sched.batch_size == 8
    assert sched.step(loss=1.0).name == "PERIOD" and sched.stage == 1


@pytest.mark.slow
def test_package_exports_load_lazily_and_resolve():
    import subprocess
    import sys

    code = ("import sys, sfotorch; before = 'torch' in sys.modules; "
            "from sfotorch import StageScheduler, ResizableLoader, TrainingLoop, ExactMonitor; "
            "print(before, StageScheduler.__module__, TrainingLoop.__module__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "sfotorch.scheduler", "sfotorch.loop"]
