"""SFOSchedule: Algorithm 2 inside lightning.Trainer.fit, against the toolkit's own TrainingLoop, and any
Policy inside it, against PolicyScheduler in a plain loop.

The model is a float64 linear regression on 384 synthetic samples (b0 = 8, tau = 5, b_max = 128),
so a run crosses four stage changes and many epochs in about a second. The reference is
TrainingLoop over the same seeds: both paths do the same float64 operations in the same order
(one forward, the mean loss, one backward into .grad, SGD with the eta the one rule wrote, the same
monitor pass), so the comparisons are exact (torch.equal, ==), not within a tolerance; only values
that went through Lightning's log_dict (stored as float32 tensors) are compared to 1e-6. The same holds
for a Policy: the callback measures the batch statistics around Lightning's own backward, the plain loop
inside PolicyScheduler.backward, with the same hooks and the same float64 operations.
"""

import itertools
import pathlib
import re
import runpy
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("lightning")
torch = pytest.importorskip("torch")

import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402
from torch import nn  # noqa: E402

from sfotheory import rule  # noqa: E402
from sfotheory.policies import AdaScale, InnerProductTest, NormTest, StageRule, needs  # noqa: E402
from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch import (DebiasedMonitor, ExactMonitor, ResizableLoader, SequentialMonitor, StageScheduler,  # noqa: E402
                      SubsampledMonitor, TrainingLoop)
from sfotorch.lightning import SFOSchedule  # noqa: E402
from sfotorch.policy_scheduler import PolicyScheduler  # noqa: E402

N, DIM = 384, 6
SCHEDULE = dict(b0=8, eta0=0.05, eps0=0.5, delta=2, gamma=1.4, tau=5, b_max=128)
EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "docs" / "examples"


def regression_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, DIM, generator=g, dtype=torch.float64)
    y = x @ torch.randn(DIM, 1, generator=g, dtype=torch.float64) + 0.3 * torch.randn(N, 1, generator=g,
                                                                                        dtype=torch.float64)
    return torch.utils.data.TensorDataset(x, y)


DATA = regression_data()
VAL = regression_data(seed=1)


class Regression(pl.LightningModule):
    """An ordinary LightningModule; only train_dataloader returns a ResizableLoader."""

    def __init__(self, *, init_seed=1, loader="resizable", drop_last=False, lr_scheduler=False):
        super().__init__()
        torch.manual_seed(init_seed)
        self.net = nn.Linear(DIM, 1).double()
        self.loss_fn = nn.MSELoss()
        self.loader_kind, self.drop_last, self.lr_scheduler = loader, drop_last, lr_scheduler
        self.seen = []            # per training step: (rows of the batch, eta in the param group, epoch)
        self.validated_at = []    # global step of each validation run

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((x.shape[0], self.trainer.optimizers[0].param_groups[0]["lr"], self.trainer.current_epoch))
        return self.loss_fn(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self(x), y)

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.validated_at.append(self.trainer.global_step)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.01)
        if self.lr_scheduler:
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=10)]
        return opt

    def train_dataloader(self):
        if self.loader_kind == "dataloader":
            return torch.utils.data.DataLoader(DATA, batch_size=8, shuffle=True)
        return ResizableLoader(DATA, batch_size=8, seed=3, drop_last=self.drop_last)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(VAL, batch_size=128)


class ListLogger(Logger):
    """Keeps every row Lightning sends to its logger."""

    def __init__(self):
        super().__init__()
        self.rows = []

    @property
    def name(self):
        return "list"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))


def exact_monitor(module):
    return ExactMonitor(module, DATA, module.loss_fn)


def sequential_monitor(module):
    return SequentialMonitor(module, DATA, module.loss_fn, initial_size=48, blocks=4, seed=7)


def subsampled_monitor(module):
    return SubsampledMonitor(module, DATA, module.loss_fn, sample_size=96, seed=5)


def trainer(callbacks, *, logger=False, **kwargs):
    return pl.Trainer(accelerator="cpu", devices=1, callbacks=callbacks, logger=logger, log_every_n_steps=1,
                      enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def reference_run(steps, monitor=exact_monitor, check_order="after_update"):
    """The same run through the toolkit's plain TrainingLoop: per-step (b, eta), parameters, scheduler, log."""
    model = Regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = ResizableLoader(DATA, batch_size=8, seed=3)
    log = []
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=monitor(model), log=log,
                           check_order=check_order, **SCHEDULE)
    etas = []
    loop = TrainingLoop(model, opt, sched, loader, model.loss_fn, max_micro_batch=SCHEDULE["b_max"],
                        on_micro_batch=lambda t, j, k: etas.append(opt.param_groups[0]["lr"]))
    results = loop.run(max_steps=steps)
    return [(r.samples, eta) for r, eta in zip(results, etas)], params(model), sched, log


# -- (1) the callback runs Algorithm 2 exactly as the plain loop does ------------------------------------

@pytest.mark.parametrize("monitor, check_order", [(exact_monitor, "after_update"),
                                                   (sequential_monitor, "before_update")],
                         ids=["exact-after_update", "sequential-before_update"])
def test_callback_matches_training_loop_step_for_step(monitor, check_order):
    steps = 120
    module, logger = Regression(), ListLogger()
    cb = SFOSchedule("adaptive_exponential", monitor=monitor, check_order=check_order, **SCHEDULE)
    fit = trainer([cb], logger=logger, max_steps=steps)
    fit.fit(module)
    per_step, ref_params, ref_sched, ref_log = reference_run(steps, monitor, check_order)

    # not vacuous: four stage changes, b and eta both moved, and a change in the middle of an epoch
    assert [t["b"] for t in cb.transitions] == [16, 32, 64, 128]
    assert cb.transitions[-1]["eta"] == pytest.approx(0.05 * 1.4**4, rel=1e-12)
    epoch_of_step = [e for _, _, e in module.seen]
    assert any(epoch_of_step[t["step"] - 1] == epoch_of_step[t["step"]] for t in cb.transitions)
    # the stage transitions (step, b, eta, eps_m, SFO) and each step's batch size and eta: exactly equal
    assert cb.transitions == ref_sched.transitions
    assert [(b, eta) for b, eta, _ in module.seen] == per_step
    # the new b is the size of the very next batch (no batch drawn ahead at the old b), or what is
    # left of the epoch's n samples when that is less
    for t in cb.transitions:
        done = sum(b for b, _, e in module.seen[:t["step"]] if e == epoch_of_step[t["step"]])
        assert module.seen[t["step"]][0] == min(t["b"], N - done)
    # every check measured the same norm, and the final parameters are bit for bit the same
    assert [(r["step"], r["norm"], r["event"]) for r in cb.records] == \
           [(r["step"], r["norm"], r["event"]) for r in ref_log]
    assert all(torch.equal(a, b) for a, b in zip(params(module), ref_params))
    assert cb.scheduler.account.totals() == ref_sched.account.totals()
    # Lightning's epochs are the loader's epochs of n samples (the last one stopped by max_steps mid-way)
    assert fit.current_epoch == cb.loader.epoch + (cb.loader.position > 0)
    assert fit.global_step == cb.scheduler.state.step == steps

    # logged through Lightning's logger: every step's b and eta and the SFO counters (log_dict), and
    # every check's norm on the check's own step (Lightning's step index is 0-based, the rule's 1-based)
    rows = {step: m for step, m in logger.rows if "sfo/b" in m}
    assert sorted(rows) == list(range(steps))
    assert [int(rows[t]["sfo/b"]) for t in range(steps)] == [SCHEDULE["b0"] * 2**sum(
        tr["step"] <= t for tr in cb.transitions) for t in range(steps)]
    assert [rows[t]["sfo/lr"] for t in range(steps)] == pytest.approx([eta for _, eta in per_step], rel=1e-6)
    assert rows[steps - 1]["sfo/sfo_train"] == ref_sched.account.totals()["train"]
    assert rows[steps - 1]["sfo/sfo_measure"] == ref_sched.account.totals()["measure"]
    assert rows[steps - 1]["sfo/eps_m"] == pytest.approx(cb.transitions[-1]["eps_m"], rel=1e-6)
    norms = [(step, m["sfo/norm"]) for step, m in logger.rows if "sfo/norm" in m]
    assert norms == [(r["step"] - 1, r["norm"]) for r in ref_log] and len(norms) == steps // SCHEDULE["tau"]


def test_epoch_end_validation_runs_once_per_loader_epoch():
    module = Regression()
    cb = SFOSchedule("adaptive_exponential", monitor=exact_monitor, **SCHEDULE)
    fit = trainer([cb], max_epochs=4)
    fit.fit(module)
    epochs = [e for _, _, e in module.seen]
    ends = [t + 1 for t in range(len(epochs)) if t + 1 == len(epochs) or epochs[t + 1] != epochs[t]]
    # each epoch is one pass over the n samples, however b changed inside it, and validation follows it
    for e in range(4):
        assert sum(b for b, _, ep in module.seen if ep == e) == N
    assert module.validated_at == ends
    assert fit.current_epoch == 4 and (cb.loader.epoch, cb.loader.position) == (3, N)   # the 4th epoch complete


# -- (2) resume from a Lightning checkpoint is bit-exact --------------------------------------------------

def full_run(tmp_path):
    """Four epochs with a checkpoint after every step and at every epoch end (SubsampledMonitor: a monitor
    with state of its own, its call index)."""
    module = Regression()
    cb = SFOSchedule("adaptive_exponential", monitor=subsampled_monitor, **SCHEDULE)
    every_step = ModelCheckpoint(dirpath=tmp_path / "steps", filename="{step}", every_n_train_steps=1,
                                 save_top_k=-1)
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "epochs", filename="{epoch}", every_n_epochs=1,
                                  save_top_k=-1, save_on_train_epoch_end=True)
    fit = trainer([cb, every_step, every_epoch], max_epochs=4)
    fit.fit(module)
    return module, cb, fit


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return full_run(tmp_path_factory.mktemp("ckpt"))


def resume_point(module, cb, where):
    """The step to resume from: mid-epoch, two steps after a stage change inside that epoch, or the
    last batch of an epoch in which b changed."""
    epochs = [e for _, _, e in module.seen]
    first = cb.transitions[0]["step"]
    if where == "mid_epoch":
        k = first + 2
        assert epochs[k - 1] == epochs[k] == epochs[first - 1]       # still the epoch of the first change
        return k
    return max(t + 1 for t in range(len(epochs)) if epochs[t] == epochs[first - 1])


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")   # the ModelCheckpoints of run A
@pytest.mark.parametrize("where", ["mid_epoch", "last_batch_of_epoch", "epoch_end", "callback_loader_state"])
def test_resume_from_lightning_checkpoint_is_bit_exact(uninterrupted, tmp_path, where):
    module_a, cb_a, fit_a = uninterrupted
    ckdir = pathlib.Path(fit_a.checkpoint_callbacks[0].dirpath).parent
    k = resume_point(module_a, cb_a, "mid_epoch" if where in ("mid_epoch", "callback_loader_state") else "end")
    if where == "epoch_end":       # written in on_train_epoch_end rather than on_train_batch_end
        path = ckdir / "epochs" / f"epoch={module_a.seen[k - 1][2]}.ckpt"
    else:
        path = ckdir / "steps" / f"step={k}.ckpt"
    if where == "callback_loader_state":
        # a checkpoint whose loop holds no loader state: the callback's own copy must restore the loader
        content = torch.load(path, weights_only=False)
        del content["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        path = tmp_path / "without_loader.ckpt"
        torch.save(content, path)
    assert k > cb_a.transitions[0]["step"]                             # after at least one stage change

    module_b = Regression(init_seed=99)      # other initial weights: they must come from the checkpoint
    cb_b = SFOSchedule("adaptive_exponential", monitor=subsampled_monitor, **SCHEDULE)
    fit_b = trainer([cb_b], max_epochs=4)
    fit_b.fit(module_b, ckpt_path=path)

    assert module_b.seen == module_a.seen[k:]                          # same batch sizes, eta, epochs
    assert cb_b.transitions == cb_a.transitions
    records_after = [r for r in cb_a.records if r["step"] > k]
    assert cb_b.records == records_after                               # same checks, norms, decisions
    assert all(torch.equal(a, b) for a, b in zip(params(module_b), params(module_a)))
    assert cb_b.scheduler.state_dict() == cb_a.scheduler.state_dict()
    assert cb_b.loader.state_dict() == cb_a.loader.state_dict()
    assert (fit_b.global_step, fit_b.current_epoch) == (fit_a.global_step, fit_a.current_epoch)
    assert module_b.validated_at == [s for s in module_a.validated_at if s > k]


def test_a_second_fit_of_the_same_trainer_goes_on_with_the_run():
    module = Regression()
    cb = SFOSchedule("adaptive_exponential", monitor=exact_monitor, **SCHEDULE)
    fit = trainer([cb], max_steps=28)          # mid-stage: stage 1 (b = 16) since step 25
    fit.fit(module)
    assert [t["step"] for t in cb.transitions] == [25]
    fit.fit_loop.epoch_loop.max_steps = 120
    fit.fit(module)
    per_step, ref_params, ref_sched, _ = reference_run(120)
    assert cb.transitions == ref_sched.transitions
    assert [(b, eta) for b, eta, _ in module.seen] == per_step
    assert all(torch.equal(a, b) for a, b in zip(params(module), ref_params))


def test_a_step_whose_training_step_returns_none_is_not_counted_by_the_rule():
    class SkipFifth(Regression):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return None if len(self.seen) == 5 else loss      # Lightning then makes no update

    cb = SFOSchedule("adaptive_exponential", monitor=exact_monitor, **SCHEDULE)
    fit = trainer([cb], max_steps=12)
    with pytest.warns(UserWarning, match="`training_step` returned `None`"):
        fit.fit(SkipFifth())
    assert (cb.skipped_steps, cb.skipped_samples) == (1, 8)
    assert cb.scheduler.state.step == fit.global_step - 1 == 11
    assert cb.scheduler.account.totals()["train"] == cb.loader.samples_delivered - 8 == 11 * 8
    assert [r["step"] for r in cb.records] == [5, 10]            # checks every tau = 5 counted updates


# -- (3) what the callback refuses, with errors that name the setting --------------------------------------

def test_train_dataloader_must_be_a_resizable_loader():
    cb = SFOSchedule("adaptive_exponential", monitor=exact_monitor, **SCHEDULE)
    with pytest.raises(ParameterError, match=r"The 'train_dataloader' parameter of SFOSchedule must be a "
                                             r"sfotorch\.ResizableLoader .* Got train_dataloader='DataLoader'"):
        trainer([cb], max_steps=3).fit(Regression(loader="dataloader"))


@pytest.mark.parametrize("setting, match", [
    (dict(module=dict(drop_last=True)), r"The 'drop_last' parameter of SFOSchedule's ResizableLoader must be False"),
    (dict(module=dict(lr_scheduler=True)), r"The 'configure_optimizers' parameter of SFOSchedule must be an "
                                           r"optimizer without a learning-rate scheduler .* Got .*StepLR"),
    (dict(trainer=dict(accumulate_grad_batches=2)), r"The 'accumulate_grad_batches' parameter of SFOSchedule "
                                                    r"must be 1 .* Got accumulate_grad_batches=2"),
    (dict(callback=dict(monitor=lambda module: DebiasedMonitor(module, module.loss_fn))),
     r"The 'monitor' parameter of SFOSchedule must be a monitor that measures on its own .* "
     r"Got monitor='DebiasedMonitor'"),
    (dict(trainer=dict(reload_dataloaders_every_n_epochs=1)), r"The 'reload_dataloaders_every_n_epochs' parameter "
                                                              r"of SFOSchedule must be 0 .* Got .*=1"),
])
def test_settings_that_would_break_the_rule_are_refused(setting, match):
    cb = SFOSchedule("adaptive_exponential", **{"monitor": exact_monitor, **setting.get("callback", {})}, **SCHEDULE)
    with pytest.raises(ParameterError, match=match):
        trainer([cb], max_steps=3, **setting.get("trainer", {})).fit(Regression(**setting.get("module", {})))


@pytest.mark.filterwarnings("ignore:.*`dataloader_iter`")
def test_a_batch_drawn_ahead_of_its_step_is_detected():
    class IterStep(Regression):
        def training_step(self, dataloader_iter):      # Lightning then lets the step draw its own batch
            x, y = next(dataloader_iter)[0]
            return self.loss_fn(self(x), y)

    cb = SFOSchedule("adaptive_exponential", monitor=exact_monitor, **SCHEDULE)
    with pytest.raises(RuntimeError, match="SFOSchedule needs one batch drawn per step"):
        trainer([cb], max_steps=3).fit(IterStep())


def test_norm_triggered_schedule_needs_a_monitor():
    with pytest.raises(ParameterError, match=r"The 'monitor' parameter of SFOSchedule must be a monitor or a "
                                             r"function pl_module -> monitor .* Got monitor=None"):
        SFOSchedule("adaptive_exponential", **SCHEDULE)


def test_without_lightning_sfotorch_imports_and_sfotorch_lightning_names_the_package():
    script = textwrap.dedent("""
        import sys
        class NoLightning:                       # as if lightning were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "lightning":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoLightning())
        import sfotorch
        sfotorch.ResizableLoader, sfotorch.StageScheduler
        import sfotorch.lightning
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: sfotorch.lightning needs the 'lightning' package")
    assert "pip install 'sfo-schedulers[lightning]'" in last


# -- (4) any Policy of sfotheory.policies, as PolicyScheduler runs it in a plain loop -----------------------

POLICIES = {   # each moves within 40 steps on the regression: b grows (the tests), eta follows the gain (AdaScale)
    "norm_test": NormTest(b0=8, eta0=0.05, theta=0.3, tau=2, b_max=128),
    "adascale": AdaScale(base_batch=2, scale=4, eta0=0.02, smoothing=0.5, milestones=(20.0,), decay=0.5),
    "inner_product_test": InnerProductTest(b0=8, eta0=0.05, theta=0.5, nu=0.5, b_max=128),
}


def policy_callback(kind, **kwargs):
    loss_fn = nn.MSELoss() if "inner_var" in needs(POLICIES[kind]).statistics else None
    return SFOSchedule(POLICIES[kind], loss_fn=loss_fn, **kwargs)


class PolicyRegression(Regression):
    """Also keeps the eta each update used (a "before_update" policy writes it after training_step)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.update_lrs = []

    def on_before_optimizer_step(self, optimizer):      # Lightning calls it after the callbacks' hook
        self.update_lrs.append(optimizer.param_groups[0]["lr"])


def policy_reference_run(policy, steps):
    """The same run through PolicyScheduler in a plain loop: per step (rows, eta of the update), the
    scheduler's b at the step's start, the parameters, the scheduler and its log."""
    model = Regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = ResizableLoader(DATA, batch_size=8, seed=3)
    log = []
    sched = PolicyScheduler(opt, policy, loader=loader, model=model, loss_fn=model.loss_fn, log=log)
    batches = (batch for _ in itertools.count() for batch in loader)
    per_step, planned = [], []
    for _ in range(steps):
        x, y = next(batches)
        planned.append(sched.batch_size)
        opt.zero_grad()
        sched.backward(x, y)
        if needs(policy).order == "before_update":
            sched.before_update()
        per_step.append((x.shape[0], opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    return per_step, planned, params(model), sched, log


@pytest.mark.parametrize("kind", list(POLICIES))
def test_a_policy_in_the_callback_takes_the_plain_loops_decisions_step_for_step(kind):
    steps, policy = 40, POLICIES[kind]
    module, logger = PolicyRegression(), ListLogger()
    cb = policy_callback(kind)
    trainer([cb], logger=logger, max_steps=steps).fit(module)
    per_step, planned, ref_params, ref_sched, ref_log = policy_reference_run(policy, steps)

    # not vacuous: the policy moved b (the tests) or eta (AdaScale's gain) several times
    assert cb.transitions and len(set(planned)) + len({eta for _, eta in per_step}) > 3
    # the same transitions, batch sizes, update etas, measured statistics and decisions: exactly equal
    assert cb.transitions == ref_sched.transitions
    assert list(zip([b for b, _, _ in module.seen], module.update_lrs)) == per_step
    assert cb.records == ref_log and sum(r["check"] for r in ref_log) == steps // needs(policy).tau
    assert all(torch.equal(a, b) for a, b in zip(params(module), ref_params))
    assert cb.scheduler.state == ref_sched.state and cb.scheduler.state.step == steps

    # logged: b, eta of the update and SFO on every step; each check's statistics on its own step
    rows = {step: m for step, m in logger.rows if "sfo/b" in m}
    assert sorted(rows) == list(range(steps))
    assert [int(rows[t]["sfo/b"]) for t in range(steps)] == planned
    assert [rows[t]["sfo/lr"] for t in range(steps)] == pytest.approx([eta for _, eta in per_step], rel=1e-6)
    assert (rows[steps - 1]["sfo/sfo_train"], rows[steps - 1]["sfo/sfo_measure"]) == (ref_sched.state.samples, 0)
    checks = [(step, m) for step, m in logger.rows if "sfo/grad_sq" in m]
    assert checks == [(r["step"] - 1, {f"sfo/{k}": r[k] for k in needs(policy).statistics}) for r in ref_log]


def test_algorithm_2_as_a_stage_rule_policy_runs_as_the_schedule_does():
    steps = 60
    module = PolicyRegression()
    cb = SFOSchedule(StageRule(rule.adaptive_exponential(**SCHEDULE)), monitor=exact_monitor)
    trainer([cb], max_steps=steps).fit(module)
    per_step, ref_params, ref_sched, ref_log = reference_run(steps)      # StageScheduler in TrainingLoop
    assert len(ref_sched.transitions) >= 2
    assert [(t["step"], t["b"], t["eta"]) for t in cb.transitions] == \
           [(t["step"], t["b"], t["eta"]) for t in ref_sched.transitions]
    assert [(b, eta) for b, eta, _ in module.seen] == per_step
    assert [(r["step"], r["full_norm"]) for r in cb.records if r["check"]] == [(r["step"], r["norm"]) for r in ref_log]
    assert all(torch.equal(a, b) for a, b in zip(params(module), ref_params))
    assert cb.scheduler.state.check_samples == ref_sched.account.totals()["measure"] == steps // SCHEDULE["tau"] * N


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")   # the ModelCheckpoint of run A
@pytest.mark.parametrize("kind", ["norm_test", "adascale"])
def test_resume_of_a_policy_from_a_lightning_checkpoint_is_bit_exact(kind, tmp_path):
    steps, k = 30, 11
    module_a, cb_a = PolicyRegression(), policy_callback(kind)
    every_k = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=k, save_top_k=-1)
    trainer([cb_a, every_k], max_steps=steps).fit(module_a)
    epochs = [e for _, _, e in module_a.seen]
    assert epochs[k - 1] == epochs[k]                                  # mid-epoch
    assert cb_a.transitions[0]["step"] < k                             # after a move, and moving on after it
    assert [t for t in cb_a.transitions if t["step"] > k] or len(set(module_a.update_lrs[k:])) > 1

    module_b, cb_b = PolicyRegression(init_seed=99), policy_callback(kind)
    trainer([cb_b], max_steps=steps).fit(module_b, ckpt_path=tmp_path / f"step={k}.ckpt")
    assert module_b.seen == module_a.seen[k:] and module_b.update_lrs == module_a.update_lrs[k:]
    assert cb_b.transitions == cb_a.transitions
    assert cb_b.records == [r for r in cb_a.records if r["step"] > k]
    assert all(torch.equal(a, b) for a, b in zip(params(module_b), params(module_a)))
    assert cb_b.scheduler.state_dict() == cb_a.scheduler.state_dict()
    assert cb_b.loader.state_dict() == cb_a.loader.state_dict()


class TripleRegression(PolicyRegression):
    """Batches (inputs, targets, index): not the (inputs, targets) pair a policy's statistics need."""

    def train_dataloader(self):
        return ResizableLoader(torch.utils.data.TensorDataset(*DATA.tensors, torch.arange(N)), batch_size=8, seed=3)

    def training_step(self, batch, batch_idx):
        return super().training_step(batch[:2], batch_idx)


class NoForward(PolicyRegression):
    """Its training_step calls the layer directly: pl_module(inputs) is not defined."""

    forward = pl.LightningModule.forward

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self.net(x), y)


@pytest.mark.parametrize("name, make, module", [
    ("loss_fn", lambda: SFOSchedule(POLICIES["inner_product_test"]), None),
    ("loss_fn", lambda: SFOSchedule(POLICIES["inner_product_test"], loss_fn=nn.L1Loss()), PolicyRegression),
    ("loss_fn", lambda: SFOSchedule("adaptive_exponential", monitor=exact_monitor, loss_fn=nn.MSELoss(),
                                    **SCHEDULE), None),
    ("pl_module", lambda: policy_callback("inner_product_test"), NoForward),
    ("batch", lambda: policy_callback("norm_test"), TripleRegression),
    ("tau", lambda: SFOSchedule(POLICIES["norm_test"], tau=5), None),
    ("check_order", lambda: SFOSchedule(POLICIES["adascale"], check_order="after_update"), None),
    ("monitor", lambda: SFOSchedule(StageRule(rule.adaptive_exponential(**SCHEDULE))), None),
], ids=["ipt-without-loss_fn", "ipt-loss_fn-not-the-trained-loss", "schedule-with-loss_fn", "ipt-without-forward",
        "batch-not-a-pair", "policy-with-schedule-kwargs", "policy-with-another-order", "stage_rule-without-monitor"])
def test_a_policy_with_what_it_cannot_measure_is_refused_naming_the_parameter(name, make, module):
    with pytest.raises(ParameterError) as err:
        cb = make()
        trainer([cb], max_steps=4).fit(module())
    assert err.value.parameter == name and f"The '{name}' parameter of " in str(err.value)


def test_an_error_inside_a_measured_step_leaves_no_hook_on_the_model():
    class FailsOnFourth(PolicyRegression):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.hooked = bool(self.net._forward_hooks)
            if len(self.seen) == 4:         # a check step of the norm test (tau = 2): hooks are on the model
                raise ValueError("a failing step")
            return loss

    module = FailsOnFourth()
    with pytest.raises(ValueError, match="a failing step"):
        trainer([policy_callback("norm_test")], max_steps=8).fit(module)
    assert module.hooked
    assert not any(m._forward_hooks for m in module.modules())


# -- the documented example ----------------------------------------------------------------------------------

def test_lightning_example_trains_and_prints_stage_transitions(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)              # Lightning writes its logs under the working directory
    ns = runpy.run_path(str(EXAMPLES / "lightning_loop.py"), run_name="__main__")
    out = capsys.readouterr().out
    transitions = re.findall(r"step (\d+): stage (\d+), b=(\d+), lr=([\d.]+), eps_m=([\d.]+)", out)
    assert len(transitions) >= 3
    assert [int(t[1]) for t in transitions] == list(range(1, len(transitions) + 1))
    assert [int(t[2]) for t in transitions] == [8 * 2**m for m in range(1, len(transitions) + 1)]
    assert all(int(t[0]) % 50 == 0 for t in transitions)            # only on check steps (tau = 50)
    schedule = ns["schedule"]
    assert schedule.transitions[-1]["b"] == schedule.loader.batch_size == schedule.scheduler.batch_size
    assert schedule.scheduler.account.totals()["train"] == 4 * len(ns["data"])   # four epochs of n samples
    assert ns["trainer"].current_epoch == 4
    assert ns["trainer"].callback_metrics["train_loss"].item() < 0.05
    # the plain-loop example with the same seeds: the same stage changes and the same parameters
    plain = runpy.run_path(str(EXAMPLES / "adaptive_loop.py"), run_name="__main__")
    assert schedule.transitions == plain["scheduler"].transitions
    assert all(torch.equal(a, b) for a, b in zip(ns["trainer"].lightning_module.parameters(),
                                                  plain["model"].parameters()))
