"""Faults: NaN/inf loss, gradient, measured norm and parameters under skip / stop / rollback; the stall
limit; nothing saved is overwritten by a diverged state; bad arguments of the loop."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from sfotheory.rule import Event  # noqa: E402
from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.checkpoint import read_checkpoint  # noqa: E402
from sfotorch.loop import DivergedError, TrainingLoop  # noqa: E402
from sfotorch.monitors import ExactMonitor  # noqa: E402
from sfotorch.sampler import ResizableLoader  # noqa: E402
from sfotorch.scheduler import CallableMonitor, StageScheduler  # noqa: E402

N = 60
SCHEDULE = {"b0": 4, "eta0": 0.1, "eps0": 0.05, "delta": 2, "gamma": 1.2, "tau": 3, "b_max": 32}


def build(tmp_path, *, poison_step=None, monitor=None, schedule=None, dropout=0.1, sched_log=None, **loop_kwargs):
    """A small run; ``poison_step`` t puts a NaN in one sample of step t's batch (epoch 0, b = 4)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(N, 5, generator=g)
    y = torch.randint(0, 3, (N,), generator=g)
    clean = (x.clone(), y.clone())
    loader_seed = 4
    if poison_step is not None:
        order = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, seed=loader_seed).epoch_order(0)
        x[order[4 * (poison_step - 1) + 1], 2] = float("nan")
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, seed=loader_seed)
    loss_fn = nn.CrossEntropyLoss()
    if monitor is None:
        monitor = ExactMonitor(model, clean, loss_fn)       # measured on the clean training set
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=monitor, log=sched_log,
                           **{**SCHEDULE, **(schedule or {})})
    kwargs = {"max_micro_batch": 3, "checkpoint_path": tmp_path / "ckpt.pt", "checkpoint_every": 4, **loop_kwargs}
    loop = TrainingLoop(model, opt, sched, loader, loss_fn, **kwargs)
    return model, sched, loop


def params(model):
    return [p.detach().clone() for p in model.parameters()]


# -- a NaN loss ------------------------------------------------------------------------------------------

def test_stop_raises_naming_the_loss_value_and_step_and_leaves_the_checkpoint(tmp_path):
    model, sched, loop = build(tmp_path, poison_step=6, on_nonfinite="stop")
    loop.run(max_steps=5)
    saved = (tmp_path / "ckpt.pt").read_bytes()
    stage = sched.stage
    with pytest.raises(DivergedError, match=r"step 6: the loss is nan .*never advances a stage.*ckpt.pt' is untouched"):
        loop.step()
    assert (tmp_path / "ckpt.pt").read_bytes() == saved and read_checkpoint(tmp_path / "ckpt.pt")["loop"]["steps"] == 4
    assert sched.stage == stage and int(sched.state.step) == 5


# max_micro_batch 3 < b = 4: the float64 micro-batch sums; 64: one plain backward into .grad
BOTH_PATHS = pytest.mark.parametrize("cap", [3, 64], ids=["micro-batches", "single-backward"])


@BOTH_PATHS
def test_skip_leaves_parameters_optimizer_and_rule_as_they_were(tmp_path, cap):
    log = []
    model, sched, loop = build(tmp_path, poison_step=6, on_nonfinite="skip", log=log, max_micro_batch=cap)
    loop.run(max_steps=5)
    before, momentum = params(model), [loop.optimizer.state[p]["momentum_buffer"].clone()
                                       for p in model.parameters()]
    rule_state = sched.state
    result = loop.step()
    assert result.skipped and math.isnan(result.loss) and result.samples == 4
    assert all(torch.equal(a, b) for a, b in zip(before, params(model)))
    assert all(torch.equal(loop.optimizer.state[p]["momentum_buffer"], m) for p, m in zip(model.parameters(), momentum))
    assert sched.state == rule_state                   # no scheduler step: stage, step count, SFO unchanged
    assert loop.skipped == 1 and loop.skipped_samples == 4 and loop.steps == 6
    assert [r["kind"] for r in log if r["kind"] in ("nonfinite", "skip")] == ["nonfinite", "skip"]
    assert log[-2]["what"] == "loss" and log[-2]["policy"] == "skip"
    loop.run(max_steps=12)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_rollback_restores_the_checkpoint_replays_and_ends_as_skip_does_bit_for_bit(tmp_path):
    """Replay is deterministic, so the rolled-back run skips the diverged step when it comes round
    again; for a model without random layers it then ends exactly where the skip policy ends (with
    dropout the replay does not draw the skipped step's masks, so the two runs differ by RNG only)."""
    m_skip, s_skip, skip = build(tmp_path / "skip", poison_step=7, on_nonfinite="skip", dropout=0.0)
    skip.run(max_steps=16)
    log = []
    m_rb, s_rb, rb = build(tmp_path / "rollback", poison_step=7, on_nonfinite="rollback", log=log, dropout=0.0)
    results = rb.run(max_steps=16)
    assert sum(r.rolled_back for r in results) == 1 and rb.rollbacks == 1
    assert [r for r in log if r["kind"] == "rollback"][0]["to_step"] == 4
    assert all(torch.equal(a, b) for a, b in zip(params(m_skip), params(m_rb)))
    assert s_skip.state == s_rb.state and s_skip.transitions == s_rb.transitions
    assert rb.skipped == skip.skipped == 1 and not rb.skip_steps


def test_rollback_without_a_checkpoint_yet_stops_with_a_clear_error(tmp_path):
    model, sched, loop = build(tmp_path, poison_step=2, on_nonfinite="rollback")
    loop.step()
    with pytest.raises(DivergedError,
                       match=r"step 2: the loss is nan.*no rollback possible \(no checkpoint written yet\)"):
        loop.step()


def test_repeated_divergence_stops_after_max_rollbacks(tmp_path):
    """A loss that is NaN from step 6 on, whatever the batch: each rollback meets a new NaN step."""
    poisoned = {"on": False}

    class Flaky(nn.CrossEntropyLoss):
        def forward(self, out, y):
            loss = super().forward(out, y)
            return loss * float("nan") if poisoned["on"] else loss

    model, sched, loop = build(tmp_path, on_nonfinite="rollback", max_rollbacks=2)
    loop.accumulator.loss_fn = Flaky()
    loop.run(max_steps=5)
    poisoned["on"] = True
    with pytest.raises(DivergedError, match=r"no rollback possible \(2 rollbacks without a new checkpoint\)"):
        loop.run(max_steps=20)
    assert loop.rollbacks == 2 and read_checkpoint(tmp_path / "ckpt.pt")["loop"]["steps"] == 4


# -- a NaN gradient with a finite loss, a NaN measured norm, non-finite parameters --------------------

@BOTH_PATHS
def test_a_nan_gradient_with_a_finite_loss_is_caught(tmp_path, cap):
    class SqrtAtZero(nn.CrossEntropyLoss):       # value 0 + CE, gradient of sqrt at 0: inf · 0 = NaN
        def forward(self, out, y):
            return super().forward(out, y) + torch.sqrt((out * 0.0).sum().abs())

    model, sched, loop = build(tmp_path, on_nonfinite="stop", max_micro_batch=cap)
    loop.accumulator.loss_fn = SqrtAtZero()
    with pytest.raises(DivergedError, match=r"step 1: the gradient norm is nan"):
        loop.step()


def test_a_nan_measured_norm_never_advances_a_stage(tmp_path):
    """The norm would pass any threshold if it were a number; NaN keeps the stage (skip) or stops."""
    nan_monitor = CallableMonitor(lambda: float("nan"), cost=N, name="broken")
    model, sched, loop = build(tmp_path, monitor=nan_monitor, on_nonfinite="skip", schedule={"eps0": 1e9})
    with pytest.warns(RuntimeWarning, match="never advances a stage"):
        results = loop.run(max_steps=9)
    assert sched.stage == 0 and [r.event for r in results if r.event == Event.NONFINITE] == [Event.NONFINITE] * 3
    assert loop.skipped == 0, "the update happened before the measurement and is kept"
    model, sched, loop = build(tmp_path / "stop", monitor=nan_monitor, on_nonfinite="stop", schedule={"eps0": 1e9})
    with pytest.warns(RuntimeWarning), pytest.raises(DivergedError, match=r"step 3: the measured norm is nan"):
        loop.run(max_steps=9)
    assert sched.stage == 0


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    model, sched, loop = build(tmp_path, on_nonfinite="stop")
    loop.run(max_steps=4)
    saved = (tmp_path / "ckpt.pt").read_bytes()
    loop.step()
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")          # as if an update overflowed
    # the next step's loss is already inf or NaN, or the parameters are caught at the checkpoint
    with pytest.raises(DivergedError, match=r"the (loss|gradient norm|parameters) is"):
        loop.run(max_steps=8)
    assert (tmp_path / "ckpt.pt").read_bytes() == saved


# -- the stall limit --------------------------------------------------------------------------------

def test_the_stall_limit_stops_the_run_as_configured_and_says_so(tmp_path):
    log = []
    model, sched, loop = build(tmp_path, schedule={"eps0": 1e-9, "stall_limit": 7, "stall_action": "stop"},
                               log=log, checkpoint_every=0, checkpoint_path=None)
    results = loop.run(max_steps=50)
    assert sched.stopped and len(results) == 7 and results[-1].event == Event.STALL_STOPPED
    stall = [r for r in log if r["kind"] == "stall"]
    assert len(stall) == 1 and stall[0]["stall_limit"] == 7 and stall[0]["action"] == "stop"
    assert "stall limit of 7 steps" in stall[0]["message"] and log[-1]["kind"] == "stop"


def test_the_stall_limit_advances_the_stage_when_configured(tmp_path):
    log = []
    model, sched, loop = build(tmp_path, schedule={"eps0": 1e-9, "stall_limit": 5, "stall_action": "advance"},
                               log=log, checkpoint_every=0, checkpoint_path=None)
    loop.run(max_steps=12)
    assert sched.stage == 2 and [t["event"] for t in sched.transitions] == ["STALL_ADVANCED"] * 2
    assert [r["rule_event"] for r in log if r["kind"] == "stall"] == ["STALL_ADVANCED"] * 2


# -- bad arguments --------------------------------------------------------------------------------

def test_bad_loop_arguments_name_the_parameter_and_value(tmp_path):
    with pytest.raises(ParameterError, match=r"'on_nonfinite' parameter of TrainingLoop must be one of 'skip', "
                                             r"'stop', 'rollback'. Got on_nonfinite='ignore'"):
        build(tmp_path, on_nonfinite="ignore")
    with pytest.raises(ParameterError, match=r"'checkpoint_every' parameter of TrainingLoop must be >= 1 with "
                                             r"on_nonfinite='rollback'.*Got checkpoint_every=0"):
        build(tmp_path, on_nonfinite="rollback", checkpoint_every=0)
    with pytest.raises(ParameterError, match=r"'max_micro_batch' parameter of GradientAccumulator must be >= 1.*"
                                             r"Got max_micro_batch=0"):
        build(tmp_path, max_micro_batch=0)
    with pytest.raises(ParameterError, match=r"'checkpoint_path' parameter of TrainingLoop must be given when "
                                             r"checkpoint_every > 0"):
        build(tmp_path, checkpoint_path=None)


@pytest.mark.parametrize("order", ["after_update", "before_update"])
@pytest.mark.parametrize("scheduler_policy", ["raise", "warn"])
def test_the_loop_owns_the_nonfinite_policy_whatever_the_schedulers(tmp_path, scheduler_policy, order):
    """A NaN measured norm on step 3 (tau = 3): the loop's "skip" keeps the update and the stage, and
    goes on, whether the scheduler raises (its default) or warns."""
    nan_monitor = CallableMonitor(lambda: float("nan"), cost=N, name="broken")
    model, sched, loop = build(tmp_path, monitor=nan_monitor, on_nonfinite="skip", schedule={"eps0": 1e9})
    sched = StageScheduler(loop.optimizer, "adaptive_exponential", loader=loop.loader, monitor=nan_monitor,
                           on_nonfinite=scheduler_policy, check_order=order, **{**SCHEDULE, "eps0": 1e9})
    loop = TrainingLoop(model, loop.optimizer, sched, loop.loader, nn.CrossEntropyLoss(), max_micro_batch=3,
                        on_nonfinite="skip")
    with pytest.warns(RuntimeWarning, match=r"step 3, measured by 'broken'\) must be finite.*Got norm=nan"):
        results = loop.run(max_steps=4)
    assert [r.event for r in results] == [Event.NONE, Event.NONE, Event.NONFINITE, Event.NONE]
    assert sched.stage == 0 and sched.state.step == 4 and loop.skipped == 0


def test_a_resumed_loop_writes_every_record_of_the_replayed_steps_once_also_after_a_skipped_step(tmp_path):
    """Scheduler and loop log into one JSON-lines file; step 3 is skipped (so the rule's step count
    lags the loop's), the run is checkpointed at step 4 and 'crashes' after step 7. Resumed, the
    file holds exactly the records of an uninterrupted run: the checkpoint stored the byte offset
    of its own record and the resume cut the file back to it."""
    from sfotorch.sfolog import read_log

    def run(folder, steps, resume=False):
        path = folder / "log.jsonl"
        model, sched, loop = build(folder, poison_step=3, on_nonfinite="skip", sched_log=path, log=path)
        if resume:
            assert loop.resume() and loop.steps == 4
        loop.run(max_steps=steps)
        sched.close()
        loop.close()
        return [{k: v for k, v in r.items() if k != "path"} for r in read_log(path)]   # the folders differ

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = run(tmp_path / "a", 10)
    run(tmp_path / "b", 7)                  # the check of rule step 6 (loop step 7) follows the checkpoint
    resumed = run(tmp_path / "b", 10, resume=True)
    assert resumed == straight
    kinds = [r.get("kind", "check") for r in straight]
    assert kinds.count("skip") == 1 and kinds.count("checkpoint") == 2 and kinds.count("check") >= 3
