r"""Algorithm 2, or any policy of :mod:`sfotheory.policies`, inside ``lightning.Trainer.fit``.

A LightningModule keeps its ``training_step`` and ``configure_optimizers``; it only returns a
:class:`~sfotorch.sampler.ResizableLoader` from ``train_dataloader`` and the trainer gets one
callback::

    def train_dataloader(self):
        return ResizableLoader(self.train_set, batch_size=8, seed=0)      # was: DataLoader(...)

    trainer = lightning.Trainer(max_epochs=4, callbacks=[
        SFOSchedule("adaptive_exponential", monitor=lambda module: ExactMonitor(module, train_set, loss_fn),
                    b0=8, eta0=0.05, eps0=0.5, delta=2, gamma=1.4, tau=50, b_max=1024)])

For a schedule, the callback drives one :class:`~sfotorch.scheduler.StageScheduler` — the stage
rule itself is :mod:`sfotheory.rule`'s, called through it and nowhere else. Legend (as in the
rule): m stage, b_m batch size, η_m learning rate, ε_m = ε₀ √(b₀ / b_m) the stage's threshold, τ
the check interval, G = ‖∇f(θ)‖ the measured full-gradient norm; on every τ-th step the monitor
measures G and the rule moves to stage m + 1 (b_{m+1} = δ b_m, η_{m+1} = γ η_m) when G ≤ ε_m and
b_m < b_max.

Where each piece happens in Lightning's automatic-optimization step:

* ``on_train_start``: the scheduler is built over the trainer's one optimizer and the training
  loader; η_m is written into every param group and b_m into the loader (and, on resume, the
  saved state is restored first).
* ``on_before_backward``: the step's loss is kept for the rule's NaN/inf check.
* ``on_before_optimizer_step`` (``check_order="before_update"`` only): G is measured at θ_t and the
  rule applied before the update, so the triggering update already uses η_{m+1} (the authors' order;
  docs/theory.md, "Order of events").
* ``on_train_batch_end``: ``scheduler.step(loss=…, samples=…)`` counts the step (its true batch
  length) and, on a check step, measures G at θ_{t+1} (default ``check_order="after_update"``);
  a new b_m is in the loader before Lightning draws the next batch, so it takes effect at the very
  next batch. Lightning draws a batch only when the step needs it (it does not prefetch from a
  loader that has a length), which this callback verifies on every step.

Lightning counts the batches of an epoch once, from ``len(loader)`` when the epoch starts; a
ResizableLoader's length changes with b. After every step the callback therefore sets Lightning's
count of this epoch's batches (``trainer.num_training_batches``, the data fetcher's length and,
for a fractional ``val_check_interval``, ``trainer.val_check_batch``) to the batches taken plus
those left at the new b, so an epoch ends — and epoch-end validation and checkpoints happen —
when the loader's epoch of n samples ends. The fetcher (``trainer.fit_loop._data_fetcher``) and
the logging step (``fit_loop.epoch_loop._batches_that_stepped``) are internals of Lightning 2.6's
fit loop (the ``lightning`` extra pins ``lightning>=2.6,<2.7``); the callback raises if the
fetcher is not there.

**A Policy** (``SFOSchedule(NormTest(b0=8, eta0=0.05))``; ``StageRule`` is Algorithm 2 or a
baseline, with its monitor as above) is driven by a :class:`~sfotorch.policy_scheduler.PolicyScheduler`
in the same hooks. Its batch statistics (‖g_B‖², tr Σ̂, V̂_ip) are measured around Lightning's own
backward, on check steps only:

* ``on_train_batch_start``, before the forward: ``begin_batch(inputs, targets)`` registers the
  per-sample-norm hooks and keeps the RNG state (replayed for V̂_ip);
* ``on_before_backward``: the ``.grad`` that Lightning's closure has just zeroed is what the backward
  adds to (``before_backward()``);
* ``on_before_optimizer_step``, after the backward and before gradient clipping and the update:
  ``end_batch(loss)`` computes the statistics; a ``"before_update"`` policy (AdaScale) is applied
  here, so the η it writes is this step's; ``on_train_batch_end``: ``step()`` for the others.

Such a policy needs batches ``(inputs, targets)`` (two tensors, the batch on the first dimension) and
a ``training_step`` that returns the batch-mean loss; V̂_ip (InnerProductTest) also needs
``loss_fn=`` with ``loss_fn(pl_module(inputs), targets)`` that loss, checked on every check step.
Otherwise the run is refused with an error naming ``batch``, ``loss_fn`` or ``pl_module``.

A step whose ``training_step`` returns ``None`` makes no update: the rule does not count it (as
:class:`~sfotorch.loop.TrainingLoop` does not count a skipped step); its batch is reported in
``skipped_steps`` and ``skipped_samples``.

**Logged** with ``pl_module.log_dict`` on every step (so Lightning's loggers receive them every
``log_every_n_steps``, and the progress bar and ``trainer.callback_metrics`` see them):
``sfo/stage``, ``sfo/b``, ``sfo/lr``, ``sfo/eps_m`` (m, b_m, η_m, ε_m of the stage the step
started in), ``sfo/sfo_train`` and ``sfo/sfo_measure`` (gradient evaluations of the updates and
of the measurements so far). Each check's G is sent as ``sfo/norm`` to every logger of the trainer
on the check's own step, whatever ``log_every_n_steps``; for a Policy, so are the batch statistics
it read (``sfo/grad_sq``, ``sfo/trace_var``, ``sfo/inner_var``), ``sfo/lr`` is the η of the step's
update and ``sfo/eps_m`` is logged for a StageRule only. The scheduler's full record of every check
(the statistics, the decision, the SFO) is kept in :attr:`SFOSchedule.records`.

**Checkpoints.** ``state_dict()`` holds the rule's state and SFO account (the StageScheduler's or
the PolicyScheduler's ``state_dict``), the loader's (seed, epoch, position in samples, b), the
monitor's state (e.g. the call index of a subsampled monitor) and the skip counters. Lightning
restores the loader itself from a checkpoint written mid-epoch, but starts it afresh from one
written at an epoch's end; the callback then restores it from its own copy. A ``Trainer`` resumed
with ``ckpt_path`` continues bit-exactly (on CPU): the same batches, the same η and b, the same
checks. A second ``fit`` of the same trainer goes on with the run.

Not supported, each refused with an error naming the setting: more than one process
(use :class:`~sfotorch.loop.TrainingLoop` with :class:`~sfotorch.distributed.ShardedLoader`),
``accumulate_grad_batches`` ≠ 1 (the rule's step is one update of b samples),
``reload_dataloaders_every_n_epochs`` (the loader's position and b carry over epochs), manual
optimization, a learning-rate scheduler from ``configure_optimizers`` (η has one owner),
``drop_last=True`` (Lightning stops before the loader can drop the rest of an epoch) and the
:class:`~sfotorch.monitors.DebiasedMonitor` (it needs per-step gradient statistics that
:class:`~sfotorch.loop.TrainingLoop` feeds it).

Importing this module needs the ``lightning`` package (``pip install 'sfo-schedulers[lightning]'``);
``import sfotorch`` does not.
"""

from __future__ import annotations

try:
    import lightning.pytorch as pl
except ModuleNotFoundError as _err:  # pragma: no cover - exercised only where lightning is absent
    if _err.name is None or _err.name.split(".")[0] != "lightning":
        raise
    raise ModuleNotFoundError(
        "sfotorch.lightning needs the 'lightning' package (PyTorch Lightning >= 2.6, < 2.7), which is not "
        "installed; install it with pip install 'sfo-schedulers[lightning]' or pip install 'lightning>=2.6,<2.7'",
        name="lightning") from _err

import torch

from sfotheory.policies import Policy, StageRule, needs
from sfotheory.rule import Schedule
from sfotheory.validation import ParameterTypeError, check_choice, fail

from .policy_scheduler import PolicyScheduler
from .sampler import ResizableLoader
from .scheduler import CHECK_ORDERS, NONFINITE_ACTIONS, StageScheduler, make_schedule

__all__ = ["SFOSchedule"]

_WHERE = "SFOSchedule"
_STATE_VERSION = 1
_BATCH_STATISTICS = ("grad_sq", "trace_var", "inner_var")
#: (key of the scheduler's check record, logged name) of what a check measured
_CHECKED = {"schedule": (("norm", "norm"),),
            "policy": tuple((k, k) for k in _BATCH_STATISTICS) + (("full_norm", "norm"),)}


class _RecordSink:
    """The scheduler's log: keeps every check record, and those of the current step apart."""

    def __init__(self):
        self.records: list[dict] = []
        self.pending: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)
        self.pending.append(record)


def _batches_left(loader: ResizableLoader) -> int:
    """Batches the loader still yields in its current epoch at its current b (0 once n samples are out)."""
    left = loader.n - loader.position
    return -(-left // loader.batch_size) if left > 0 else 0


class SFOSchedule(pl.Callback):
    r"""Batch size and learning rate of ``Trainer.fit`` from the one stage rule or any policy of the toolkit.

    Parameters
    ----------
    schedule : a :class:`~sfotheory.rule.Schedule`, or a policy name of
        :data:`~sfotorch.scheduler.POLICIES` (``"adaptive_exponential"`` is Algorithm 2) with the
        constructor's keyword arguments as ``**policy_kwargs`` (b0, eta0, eps0, delta, gamma, tau,
        b_max, ...), run by a :class:`~sfotorch.scheduler.StageScheduler`; or a
        :class:`~sfotheory.policies.Policy` (``NormTest``, ``AdaScale``, ..., ``StageRule``; no
        ``**policy_kwargs``), run by a :class:`~sfotorch.policy_scheduler.PolicyScheduler`.
        Validated here, before any training.
    monitor : what measures G = ‖∇f(θ)‖ on check steps: a monitor (an object with ``measure()``,
        e.g. :class:`~sfotorch.monitors.ExactMonitor`, ``SubsampledMonitor``, ``SequentialMonitor``),
        or a function ``monitor(pl_module)`` that builds one when training starts, after Lightning
        has moved the module to its device. Required for a norm-triggered schedule (or a
        ``StageRule`` of one); ignored by the others.
    check_order : ``"after_update"`` (G at θ_{t+1}; the default) or ``"before_update"`` (G at θ_t, the
        authors' order), as in :class:`~sfotorch.scheduler.StageScheduler`. A Policy brings its own
        order (``needs(policy).order``; ``StageRule(schedule, check_order=...)``): leave it None.
    on_nonfinite : ``"raise"`` (a NaN/inf loss or norm stops ``fit`` with
        :class:`~sfotorch.scheduler.NonFiniteError`) or ``"warn"`` (the stage is kept and training
        goes on).
    loss_fn : for a Policy that reads V̂_ip (``InnerProductTest``) only, and required there: the mean
        loss of ``training_step`` as ``loss_fn(pl_module(inputs), targets)``.

    After ``on_train_start``, :attr:`scheduler` is the :class:`~sfotorch.scheduler.StageScheduler`
    (``transitions``, ``account``, ``stage``, ``batch_size``, ``lr``) or the
    :class:`~sfotorch.policy_scheduler.PolicyScheduler` (``transitions``, ``state``, ``stage``,
    ``batch_size``, ``lr``, ``last_stats``) and :attr:`loader` the training loader.

    >>> cb = SFOSchedule("adaptive_exponential", monitor=lambda module: ExactMonitor(module, train_set, loss_fn),
    ...                  b0=8, eta0=0.05, eps0=0.5, delta=2, gamma=1.4, tau=50)
    >>> cb.schedule.b0, cb.schedule.tau, cb.scheduler is None
    (8, 50, True)
    >>> SFOSchedule("adaptive_exponential", b0=8, eta0=0.05, eps0=0.5, delta=2, gamma=1.4, tau=50)
    Traceback (most recent call last):
    ...
    sfotheory.validation.ParameterError: The 'monitor' parameter of SFOSchedule must be a monitor or a function pl_module -> monitor for the norm-triggered schedule 'adaptive_exponential' (the rule compares ||grad f|| with eps_m every tau = 50 steps). Got monitor=None instead.
    >>> from sfotheory.policies import AdaScale, InnerProductTest
    >>> SFOSchedule(AdaScale(base_batch=8, scale=4, eta0=0.05)).check_order
    'before_update'
    >>> SFOSchedule(InnerProductTest(b0=8, eta0=0.05))
    Traceback (most recent call last):
    ...
    sfotheory.validation.ParameterError: The 'loss_fn' parameter of SFOSchedule must be a function loss_fn(pl_module(inputs), targets) returning the mean loss of training_step (policy 'inner_product_test' reads inner_var, the variance of the per-sample losses' directional derivatives). Got loss_fn=None instead.
    """

    def __init__(self, schedule: str | Schedule | Policy = "adaptive_exponential", *, monitor=None,
                 check_order: str | None = None, on_nonfinite: str = "raise", loss_fn=None, **policy_kwargs):
        if isinstance(schedule, Policy):
            self._init_policy(schedule, check_order, loss_fn, policy_kwargs)
        else:
            self.policy: Policy | None = None
            self.schedule: Schedule | None = make_schedule(schedule, **policy_kwargs)
            self.check_order = check_choice("after_update" if check_order is None else check_order, CHECK_ORDERS,
                                            "check_order", _WHERE)
            if loss_fn is not None:
                fail("loss_fn", _WHERE, "None with a Schedule (only a Policy that reads inner_var uses it)",
                     type(loss_fn).__name__)
            self.loss_fn = None
        self.on_nonfinite = check_choice(on_nonfinite, NONFINITE_ACTIONS, "on_nonfinite", _WHERE)
        if monitor is not None and not callable(getattr(monitor, "measure", None)) and not callable(monitor):
            fail("monitor", _WHERE, "None, a monitor with measure(), or a function pl_module -> monitor",
                 type(monitor).__name__, cls=ParameterTypeError)
        if monitor is None and self._reads_norm:
            fail("monitor", _WHERE, f"a monitor or a function pl_module -> monitor for the norm-triggered "
                 f"schedule {self.schedule.name!r}", None,
                 reason=f"the rule compares ||grad f|| with eps_m every tau = {self.schedule.tau} steps")
        self._monitor_arg = monitor
        self.scheduler: StageScheduler | PolicyScheduler | None = None
        self.loader: ResizableLoader | None = None
        self._sink = _RecordSink()
        self._pending: dict | None = None        # state from a checkpoint, applied in on_train_start
        self._step: dict | None = None           # what on_train_batch_start saw of the current step
        self._loss = None
        self._open = False                       # a Policy's batch is being measured (begin_batch .. end_batch)
        self._delivered = 0
        self.skipped_steps = 0
        self.skipped_samples = 0

    def _init_policy(self, policy: Policy, check_order, loss_fn, policy_kwargs) -> None:
        if policy_kwargs:
            name = sorted(policy_kwargs)[0]
            fail(name, _WHERE, "left out with a Policy (the Policy holds its whole configuration)",
                 policy_kwargs[name])
        order, reads = needs(policy).order, needs(policy).statistics
        if check_order is not None and check_order != order:
            fail("check_order", _WHERE, f"None or {order!r} with policy {policy.name!r}", check_order,
                 reason="a Policy sets its own order, e.g. StageRule(schedule, check_order=...)")
        if "inner_var" in reads and loss_fn is None:
            fail("loss_fn", _WHERE, "a function loss_fn(pl_module(inputs), targets) returning the mean loss of "
                 "training_step", None, reason=f"policy {policy.name!r} reads inner_var, the variance of the "
                                               "per-sample losses' directional derivatives")
        if loss_fn is not None and not callable(loss_fn):
            fail("loss_fn", _WHERE, "None or a function loss_fn(outputs, targets)", type(loss_fn).__name__,
                 cls=ParameterTypeError)
        self.policy, self.check_order, self.loss_fn = policy, order, loss_fn
        self.schedule = policy.schedule if isinstance(policy, StageRule) else None

    @property
    def _reads_norm(self) -> bool:
        if self.policy is not None:
            return "full_norm" in needs(self.policy).statistics
        return self.schedule.trigger == "norm"

    @property
    def _reads_batch(self) -> bool:
        return self.policy is not None and bool(set(_BATCH_STATISTICS) & set(needs(self.policy).statistics))

    # -- read-only views -----------------------------------------------------------------------

    @property
    def records(self) -> list[dict]:
        """The scheduler's record of every check (and stage change) of this ``fit``, in order."""
        return self._sink.records

    @property
    def transitions(self) -> list[dict]:
        """Every stage change of the run (``step``, ``stage``, ``b``, ``eta``, ``eps_m``, SFO), also before a resume."""
        return [] if self.scheduler is None else self.scheduler.transitions

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.world_size != 1:
            fail("trainer", _WHERE, "a Trainer of one process (world_size = 1)", f"world_size={trainer.world_size}",
                 reason="under DDP every rank would draw the same batch; use TrainingLoop with ShardedLoader")
        if trainer.accumulate_grad_batches != 1:
            fail("accumulate_grad_batches", _WHERE, "1 (the rule's step is one update of b samples; "
                 "set b through the schedule instead)", trainer.accumulate_grad_batches)
        if trainer.reload_dataloaders_every_n_epochs:
            fail("reload_dataloaders_every_n_epochs", _WHERE, "0 (the loader's position and b carry over from "
                 "one epoch to the next)", trainer.reload_dataloaders_every_n_epochs)
        if not pl_module.automatic_optimization:
            fail("automatic_optimization", _WHERE, "True (the callback counts one optimizer step per batch)",
                 pl_module.automatic_optimization)

    def _resolve_monitor(self, pl_module):
        monitor = self._monitor_arg
        if monitor is not None and not callable(getattr(monitor, "measure", None)):
            built = monitor(pl_module)
            if built is not None and not callable(getattr(built, "measure", None)):
                fail("monitor", _WHERE, "a function returning a monitor with measure() (or None)",
                     type(built).__name__, cls=ParameterTypeError)
            monitor = built
        if monitor is None and self._reads_norm:
            fail("monitor", _WHERE, f"a function returning a monitor for the norm-triggered schedule "
                 f"{self.schedule.name!r}", None)
        if monitor is not None and callable(getattr(monitor, "update", None)):
            fail("monitor", _WHERE, "a monitor that measures on its own (exact, subsampled, sequential, ...)",
                 type(monitor).__name__, reason="a debiased monitor needs each step's gradient statistics, "
                                                "which TrainingLoop feeds it")
        return monitor

    def _training_loader(self, trainer) -> ResizableLoader:
        loader = trainer.train_dataloader
        if not isinstance(loader, ResizableLoader):
            fail("train_dataloader", _WHERE, "a sfotorch.ResizableLoader returned by the LightningModule's (or "
                 "DataModule's) train_dataloader()", type(loader).__name__,
                 reason="Algorithm 2 changes b between steps, and a DataLoader's batch size is fixed when it "
                        "is built")
        if loader.drop_last:
            fail("drop_last", f"{_WHERE}'s ResizableLoader", "False", True,
                 reason="Lightning ends an epoch at its last full batch without asking the loader for the "
                        "rest, so the next epoch would start on the dropped samples")
        return loader

    def on_train_start(self, trainer, pl_module) -> None:
        loader = self._training_loader(trainer)
        if len(trainer.optimizers) != 1:
            fail("configure_optimizers", _WHERE, "one optimizer (eta_m is written into its param groups)",
                 f"{len(trainer.optimizers)} optimizers")
        if trainer.lr_scheduler_configs:
            fail("configure_optimizers", _WHERE, "an optimizer without a learning-rate scheduler (the stage "
                 "rule sets eta in every param group)",
                 [type(c.scheduler).__name__ for c in trainer.lr_scheduler_configs])
        if self._pending is None and self.scheduler is not None and trainer.global_step > 0:
            self._pending = self.state_dict()     # a second fit() of the same trainer goes on with the run
        monitor = self._resolve_monitor(pl_module)
        self._sink = _RecordSink()
        self.loader = loader
        if self.policy is None:
            self.scheduler = StageScheduler(trainer.optimizers[0], self.schedule, loader=loader, monitor=monitor,
                                            check_order=self.check_order, on_nonfinite=self.on_nonfinite,
                                            log=self._sink)
        else:
            if "inner_var" in needs(self.policy).statistics and type(pl_module).forward is pl.LightningModule.forward:
                fail("pl_module", _WHERE, "a LightningModule whose forward(inputs) returns the outputs that loss_fn "
                     "reads", type(pl_module).__name__, reason=f"policy {self.policy.name!r} evaluates "
                     "loss_fn(pl_module(inputs), targets) per sample")
            self.scheduler = PolicyScheduler(trainer.optimizers[0], self.policy, loader=loader, monitor=monitor,
                                             model=pl_module if self._reads_batch else None,
                                             loss_fn=self.loss_fn if self._reads_batch else None,
                                             on_nonfinite=self.on_nonfinite, log=self._sink)
        if self._pending is not None:
            self._restore(trainer, self._pending)
            self._pending = None
        self._delivered = loader.samples_delivered
        self._sync_epoch(trainer, taken=trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def _restore(self, trainer, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])     # refuses other Schedule arguments
        monitor = self.scheduler.monitor
        if state.get("monitor") is not None and callable(getattr(monitor, "load_state_dict", None)):
            monitor.load_state_dict(state["monitor"])
        self.skipped_steps = int(state["skipped_steps"])
        self.skipped_samples = int(state["skipped_samples"])
        if self.loader.state_dict() != state["loader"]:
            # Lightning restores a loader that has state_dict/load_state_dict before it iterates, but
            # only from a checkpoint written mid-epoch (from one written at an epoch's end it starts the
            # loader afresh, at epoch 0); restore it from our copy and restart Lightning's iterator.
            self.loader.load_state_dict(state["loader"])
            iter(self._fetcher(trainer))

    # -- the step ------------------------------------------------------------------------------

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        loader, sched = self.loader, self.scheduler
        drawn = loader.samples_delivered - self._delivered
        if drawn != loader.last_batch_len or drawn == 0:
            raise RuntimeError(
                f"SFOSchedule: Lightning drew {drawn} samples from the ResizableLoader for this step, but its "
                f"last batch holds {loader.last_batch_len}: a batch was drawn ahead of the step (prefetching, "
                f"or a training_step that takes dataloader_iter), so a new b would not take effect at the "
                f"next batch; SFOSchedule needs one batch drawn per step")
        self._delivered = loader.samples_delivered
        self._loss = None
        eps_m = sched.eps_m if self.policy is None else getattr(sched.state, "eps_m", None)
        self._step = {"samples": loader.last_batch_len, "stage": sched.stage, "b": sched.batch_size,
                      "lr": sched.lr, "eps_m": None if eps_m is None else float(eps_m), "pre": False}
        if self.policy is not None:           # before the forward: hooks, RNG state (on check steps)
            sched.begin_batch(*self._batch_parts(batch))
            self._open = True

    def _batch_parts(self, batch):
        """(inputs, targets) of a batch for a Policy that reads batch statistics; (None, None) for the others."""
        if not self._reads_batch:
            return None, None
        b = self.loader.last_batch_len
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == b for t in batch)):
            got = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in batch] \
                if isinstance(batch, (tuple, list)) else type(batch).__name__
            fail("batch", _WHERE, f"(inputs, targets): two tensors with the step's {b} samples on their first "
                 "dimension", got, reason=f"policy {self.policy.name!r} reads per-sample statistics of the batch")
        return batch[0], batch[1]

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._loss = loss.detach()
        if self._open:
            self.scheduler.before_backward()   # Lightning zeroed the gradients after the forward

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.policy is not None:
            self._end_batch()
            if self.check_order == "before_update" and self._loss is not None:
                self.scheduler.before_update(samples=self._step["samples"])
                self._step["pre"] = True
                self._step["lr"] = self.scheduler.lr            # the η of this step's update
        elif self.check_order == "before_update" and self._loss is not None:
            self.scheduler.before_update(loss=self._loss, samples=self._step["samples"])
            self._step["pre"] = True

    def _end_batch(self) -> None:
        """After the backward: the Policy's batch statistics (or, with no backward, nothing)."""
        if self._open:
            self._open = False
            if self._loss is None:
                self.scheduler.cancel_batch()
            else:
                self.scheduler.end_batch(self._loss)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sched, step = self.scheduler, self._step
        self._end_batch()
        if self._loss is None:       # training_step returned None: no update, the rule does not count it
            self.skipped_steps += 1
            self.skipped_samples += step["samples"]
        elif step["pre"]:
            sched.step()
        elif self.policy is not None:
            sched.step(samples=step["samples"])
        else:
            sched.step(loss=self._loss, samples=step["samples"])
        self._sync_epoch(trainer, taken=trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        self._log(trainer, pl_module, step)
        if sched.stopped:
            trainer.should_stop = True

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._open:                # no hook of ours stays on the model
            self._open = False
            self.scheduler.cancel_batch()

    def _totals(self) -> tuple[int, int]:
        """SFO so far: of the updates, of the measurements."""
        if self.policy is None:
            totals = self.scheduler.account.totals()
            return totals["train"], totals["measure"]
        return int(self.scheduler.state.samples), int(self.scheduler.state.check_samples)

    def _log(self, trainer, pl_module, step: dict) -> None:
        train, measure = self._totals()
        values = {"sfo/stage": float(step["stage"]), "sfo/b": float(step["b"]), "sfo/lr": step["lr"]}
        if step["eps_m"] is not None:
            values["sfo/eps_m"] = step["eps_m"]
        values.update({"sfo/sfo_train": float(train), "sfo/sfo_measure": float(measure)})
        pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=step["samples"])
        # a check is an event, not a series: sent to the loggers on its own step (log_dict would repeat
        # the last value on every later step, and log_every_n_steps would drop some checks)
        checked, keys = {}, _CHECKED["schedule" if self.policy is None else "policy"]
        for r in self._sink.pending:
            if r.get("check"):
                checked.update({f"sfo/{name}": float(r[key]) for key, name in keys if r.get(key) is not None})
        self._sink.pending.clear()
        if checked and trainer.loggers:
            index = trainer.fit_loop.epoch_loop._batches_that_stepped    # the step of log_dict's row of this step
            for logger in trainer.loggers:
                logger.log_metrics(checked, step=index)

    # -- Lightning's count of an epoch's batches ---------------------------------------------------

    @staticmethod
    def _fetcher(trainer):
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "length") or not hasattr(fetcher, "fetched"):
            raise RuntimeError(f"SFOSchedule relies on the training data fetcher of Lightning 2.6's fit loop "
                               f"(trainer.fit_loop._data_fetcher with .length and .fetched); this Lightning "
                               f"{pl.__version__} has {type(fetcher).__name__}")
        return fetcher

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # a new epoch of the loader starts with the next iter(): n samples at the current b
        loader = self.loader
        left = loader.n - loader.position if 0 < loader.position < loader.n else loader.n
        self._set_batches(trainer, -(-left // loader.batch_size))

    def _sync_epoch(self, trainer, *, taken: int) -> None:
        """Tell Lightning that this epoch has ``taken`` + (batches left at the current b) batches.

        The fetcher marks a batch as the last one when ``fetched >= length``; ``fetched`` already
        counts the ``taken`` batches, except right after a resume, where Lightning adds them when the
        epoch loop starts (``on_train_start`` sees 0). When the loader's epoch is complete, the
        fetcher keeps the length Lightning read from ``len(loader)``: that of the next epoch.
        """
        left = _batches_left(self.loader)
        fetcher = self._fetcher(trainer)
        if left > 0:
            fetched = fetcher.fetched if fetcher.fetched >= taken else taken
            fetcher.length = fetched + left
        self._set_batches(trainer, taken + left)

    @staticmethod
    def _set_batches(trainer, count: int) -> None:
        trainer.fit_loop.max_batches = count
        interval = trainer.val_check_interval
        if isinstance(interval, float) and getattr(trainer, "_val_check_time_interval", None) is None \
                and isinstance(trainer.val_check_batch, int):
            trainer.val_check_batch = max(1, int(count * interval))

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The rule's state (the scheduler's ``state_dict``), the loader's, the monitor's and the skip counters."""
        if self.scheduler is None:
            return {} if self._pending is None else dict(self._pending)
        monitor = self.scheduler.monitor
        return {"version": _STATE_VERSION, "scheduler": self.scheduler.state_dict(),
                "loader": self.loader.state_dict(),
                "monitor": monitor.state_dict() if callable(getattr(monitor, "state_dict", None)) else None,
                "skipped_steps": self.skipped_steps, "skipped_samples": self.skipped_samples}

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep a :meth:`state_dict` to restore when training starts (the optimizer and loader exist then)."""
        if not state_dict:
            self._pending = None
            return
        keys = {"version", "scheduler", "loader", "monitor", "skipped_steps", "skipped_samples"}
        if not isinstance(state_dict, dict) or set(state_dict) != keys:
            fail("state_dict", f"{_WHERE}.load_state_dict", f"a dict with the keys {sorted(keys)}",
                 sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__)
        if state_dict["version"] != _STATE_VERSION:
            fail("state_dict", f"{_WHERE}.load_state_dict", f"of version {_STATE_VERSION}", state_dict["version"])
        self._pending = dict(state_dict)
