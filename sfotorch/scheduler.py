r"""The torch-facing shell around the one stage rule (:mod:`sfotheory.rule`).

:class:`StageScheduler` drives a torch optimizer and a :class:`~sfotorch.sampler.ResizableLoader`
through Algorithm 2 (or a baseline schedule) with the contract torch users know::

    for xb, yb in loader:
        optimizer.zero_grad(); loss_fn(model(xb), yb).backward()
        optimizer.step()
        scheduler.step(loss=loss)        # after optimizer.step(), like torch.optim.lr_scheduler

Each ``step()`` calls :func:`sfotheory.rule.check_due` and :func:`sfotheory.rule.advance`
once — the stage logic lives there only — and then writes η_m into every param
group and b_m into the loader. Legend (as in the rule): m stage, b_m batch size,
η_m learning rate, ε_m threshold, τ check interval; on a check step (every τ-th
step) a monitor measures G = ‖∇f(θ)‖ and the rule moves to stage m + 1 when
G ≤ ε_m and b_m < b_max.

Check order (the one convention of the rule, seen from torch):

* ``check_order="after_update"`` (default): ``step()`` measures G at θ_{t+1}, after
  ``optimizer.step()``; a new (b_{m+1}, η_{m+1}) is used from the next step on.
* ``check_order="before_update"`` (the authors' code): call
  :meth:`StageScheduler.before_update` after ``backward()`` and before ``optimizer.step()``
  on every step; it measures G at θ_t and applies the rule, so the update of the
  triggering step already uses η_{m+1} while its batch was drawn at b_m. ``step()`` then
  only closes the step. The monitor must leave ``.grad`` as it found it.

SFO: a step counts the true size of its batch (``loader.last_batch_len``, so a
short final batch counts what it holds); monitor costs are counted apart
(:class:`~sfotorch.sfolog.SFOAccount`, per stage and in total).

A NaN or infinite norm or loss never advances a stage (the rule reports
``Event.NONFINITE``). By default ``step()`` then raises a :class:`NonFiniteError` naming the value
and the step, after the rule has counted the step, so that a plain loop does not go on with NaN
parameters; ``on_nonfinite="warn"`` warns and returns the event instead, for a caller that
handles it (:class:`~sfotorch.loop.TrainingLoop` applies its own policy either way).

>>> import torch
>>> model = torch.nn.Linear(2, 1)
>>> opt = torch.optim.SGD(model.parameters(), lr=1.0)
>>> sched = StageScheduler(opt, "adaptive_exponential", b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=2)
>>> opt.param_groups[0]["lr"], sched.batch_size
(0.1, 8)
>>> sched.step(norm=0.1).name           # not a check step (τ = 2): the norm is not used
'NONE'
>>> sched.step(norm=0.4).name           # check: 0.4 ≤ ε_0 = 0.5
'ADVANCED'
>>> sched.batch_size, sched.get_last_lr(), sched.stage
(16, [0.14], 1)
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass

import torch

from sfotheory import rule
from sfotheory.rule import Event, Schedule
from sfotheory.validation import check_choice, check_integer, fail

from .sfolog import SFOAccount, SFOLogWriter
from .shell import apply_decision, check_loader, check_optimizer, open_log, report_nonfinite, write_record

__all__ = ["POLICIES", "CallableMonitor", "MeasuredNorm", "NonFiniteError", "StageScheduler", "make_schedule"]

#: Policy names accepted by :class:`StageScheduler` and :func:`make_schedule`, and their rule constructors.
POLICIES = {
    "adaptive_exponential": rule.adaptive_exponential,
    "adaptive_linear": rule.adaptive_linear,
    "constant": rule.constant,
    "periodic": rule.periodic,
    "cosine": rule.cosine,
}
CHECK_ORDERS = ("after_update", "before_update")
NONFINITE_ACTIONS = ("warn", "raise")
_DEFAULT_B_MAX = 2**62
_STALL_EVENTS = (Event.STALL_ADVANCED, Event.STALL_STOPPED, Event.STALL_WARNED)


class NonFiniteError(FloatingPointError):
    """A measured norm or a loss was NaN or infinite (with ``on_nonfinite="raise"``)."""


@dataclass(frozen=True)
class MeasuredNorm:
    """A minimal measurement: G = ‖∇f(θ)‖ and the gradient evaluations spent on it."""

    norm: float
    cost: int


class CallableMonitor:
    """Adapts a function ``fn() -> ‖∇f(θ)‖`` to the monitor protocol with a declared cost per call.

    >>> m = CallableMonitor(lambda: 0.25, cost=100, name="full-batch")
    >>> m.measure(), m.name
    (MeasuredNorm(norm=0.25, cost=100), 'full-batch')
    """

    def __init__(self, fn, *, cost: int, name: str = "callable"):
        if not callable(fn):
            fail("fn", "CallableMonitor", "callable", fn)
        self.fn = fn
        self.cost = check_integer(cost, "cost", "CallableMonitor", minimum=0,
                                  reason="gradient evaluations spent per measurement")
        self.name = str(name)

    def measure(self) -> MeasuredNorm:
        value = self.fn()
        return MeasuredNorm(float(value.item() if isinstance(value, torch.Tensor) else value), self.cost)


def make_schedule(policy: str | Schedule, **kwargs) -> Schedule:
    """A :class:`~sfotheory.rule.Schedule` from a policy name and its constructor's keyword arguments.

    >>> make_schedule("constant", b0=32, eta0=0.1).name
    'constant'
    >>> make_schedule("adaptive")
    Traceback (most recent call last):
    ...
    sfotheory.validation.ParameterError: The 'policy' parameter of make_schedule must be one of 'adaptive_exponential', 'adaptive_linear', 'constant', 'periodic', 'cosine'. Got policy='adaptive' instead.
    """
    if isinstance(policy, Schedule):
        if kwargs:
            fail("policy_kwargs", "make_schedule", "empty when a Schedule is given", sorted(kwargs))
        return policy
    if not isinstance(policy, str):
        fail("policy", "make_schedule", f"a Schedule or one of {', '.join(map(repr, POLICIES))}", policy)
    check_choice(policy, tuple(POLICIES), "policy", "make_schedule")
    ctor = POLICIES[policy]
    params = inspect.signature(ctor).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        fail("policy_kwargs", f"make_schedule({policy!r})", f"keywords among {list(params)}", unknown)
    missing = sorted(k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs)
    if missing:
        fail("policy_kwargs", f"make_schedule({policy!r})", f"given the required keywords {missing}",
             sorted(kwargs))
    return ctor(**kwargs)


class StageScheduler:
    r"""Batch size and learning rate of a torch training loop, stage by stage, through the one rule.

    Parameters
    ----------
    optimizer : any torch optimizer whose param groups hold ``'lr'``; η_m is written into every group.
    schedule : a :class:`~sfotheory.rule.Schedule`, or a policy name of :data:`POLICIES` with the
        constructor's keyword arguments given as ``**policy_kwargs``.
    loader : the batch source whose ``batch_size`` follows b_m (a
        :class:`~sfotorch.sampler.ResizableLoader`); b_0 ≤ n is enforced, and b_max is capped at
        n (silently when left at its default, with a warning when given larger).
    monitor : an object with ``.name`` and ``.measure() -> m`` where ``m.norm`` is G = ‖∇f(θ)‖
        and ``m.cost`` the gradient evaluations spent; called on check steps. A monitor with
        ``uses_eps_m = True`` is called as ``measure(eps_m=ε_m)``; a measurement with
        ``undecided = True`` never advances a stage (the check is counted, its log record has
        ``"undecided": true``). Instead, pass ``step(norm=...)`` on check steps (:attr:`check_due`
        tells when).
    check_order : ``"after_update"`` or ``"before_update"`` (see the module docstring).
    on_nonfinite : ``"raise"`` (default: :class:`NonFiniteError`) or ``"warn"`` on a NaN/inf norm or loss.
    log : a path (JSON lines, appended), a list (records appended) or an object with ``write(dict)``.

    Stall limit, η_max, b_max and the γ < √δ check are the rule's (pass them in ``policy_kwargs``).
    """

    def __init__(self, optimizer, schedule: str | Schedule, *, loader=None, monitor=None,
                 check_order: str = "after_update", on_nonfinite: str = "raise", log=None, **policy_kwargs):
        where = "StageScheduler"
        self.optimizer = check_optimizer(optimizer, where)
        self.check_order = check_choice(check_order, CHECK_ORDERS, "check_order", where)
        self.on_nonfinite = check_choice(on_nonfinite, NONFINITE_ACTIONS, "on_nonfinite", where)
        if monitor is not None and not callable(getattr(monitor, "measure", None)):
            fail("monitor", where, "an object with a measure() method returning .norm and .cost",
                 type(monitor).__name__)
        self.monitor = monitor
        schedule = make_schedule(schedule, **policy_kwargs)
        if loader is not None:
            n = check_loader(loader, where)
            if n is not None:
                if schedule.b0 > n:
                    fail("b0", where, f"<= the dataset size n = {n}", schedule.b0,
                         reason="a batch is drawn without replacement from one epoch")
                if schedule.b_max > n:
                    if schedule.b_max != _DEFAULT_B_MAX:
                        warnings.warn(f"StageScheduler: b_max={schedule.b_max} exceeds the dataset size n={n}; "
                                      f"b_max is capped at {n}", stacklevel=2)
                    schedule = schedule.replace(b_max=n)
        self.schedule: Schedule = schedule
        self.loader = loader
        self._log = open_log(log, where)
        self.account = SFOAccount()
        self.transitions: list[dict] = []
        self.last_event: Event | None = None
        self.last_norm: float | None = None
        self._pre_done = False
        self._state = rule.initial_state(schedule)
        self._apply()

    # -- read-only views -----------------------------------------------------------------------

    @property
    def state(self) -> rule.StageState:
        """The rule's state record (what the next step uses)."""
        return self._state

    @property
    def batch_size(self) -> int:
        """b_m: the batch size of the next step."""
        return int(self._state.batch_size)

    @property
    def lr(self) -> float:
        """η_m: the learning rate of the next step."""
        return float(self._state.lr)

    @property
    def stage(self) -> int:
        """m: the current stage."""
        return int(self._state.stage)

    @property
    def eps_m(self) -> float:
        """ε_m = ε₀ √(b₀ / b_m): the norm that ends the current stage."""
        return float(self._state.eps_m)

    @property
    def stopped(self) -> bool:
        """True once the stall limit stopped the run (``stall_action="stop"``)."""
        return bool(self._state.stopped)

    @property
    def check_due(self) -> bool:
        """Whether the step now being taken is a check step (it needs a norm)."""
        return rule.check_due(self.schedule, self._state)

    @property
    def stage_changed(self) -> bool:
        """Whether the last counted step moved to a new stage."""
        return bool(self.transitions) and self.transitions[-1]["step"] == int(self._state.step)

    def get_last_lr(self) -> list[float]:
        """η written into each param group by the last step (torch's contract)."""
        return [self.lr] * len(self.optimizer.param_groups)

    # -- the step ------------------------------------------------------------------------------

    def step(self, norm=None, *, loss=None, samples: int | None = None, check_cost: int = 0) -> Event:
        """Count the step just taken (call after ``optimizer.step()``) and apply the rule.

        ``norm``: G measured by the caller (used on check steps instead of the monitor, with
        ``check_cost`` gradient evaluations); ``loss``: this step's loss, checked for NaN/inf;
        ``samples``: the samples of this step (default: the loader's last batch, else b_m).
        Returns the rule's :class:`~sfotheory.rule.Event`.
        """
        if self.check_order == "before_update":
            if not self._pre_done:
                raise RuntimeError("StageScheduler(check_order='before_update'): call before_update() after "
                                   "backward() and before optimizer.step() on every step, then step()")
            self._pre_done = False
            if norm is not None or loss is not None or samples is not None:
                fail("step", "StageScheduler", "called without arguments when check_order='before_update' "
                     "(pass norm, loss and samples to before_update())", {"norm": norm, "loss": loss,
                                                                           "samples": samples})
            return self.last_event
        return self._advance(norm, loss, samples, check_cost)

    def before_update(self, norm=None, *, loss=None, samples: int | None = None, check_cost: int = 0) -> Event:
        """``check_order="before_update"`` only: measure at θ_t and apply the rule before ``optimizer.step()``.

        Same arguments as :meth:`step`; the η written here is the one the coming update uses.
        """
        if self.check_order != "before_update":
            fail("check_order", "StageScheduler.before_update", "'before_update' to call before_update()",
                 self.check_order)
        if self._pre_done:
            raise RuntimeError("StageScheduler.before_update() was called twice without step() in between")
        try:
            event = self._advance(norm, loss, samples, check_cost)
        except NonFiniteError:
            self._pre_done = True      # the rule counted the step before the error was raised
            raise
        self._pre_done = True
        return event

    def _samples(self, samples) -> int:
        if samples is not None:
            if type(samples) is int and samples >= 1:      # the training loop's count, every step
                return samples
            return check_integer(samples, "samples", "StageScheduler.step", minimum=1)
        n = getattr(self.loader, "last_batch_len", 0) if self.loader is not None else 0
        return int(n) if n else int(self._state.batch_size)

    def _advance(self, norm, loss, samples, check_cost) -> Event:
        st = self._state
        sched = self.schedule
        samples = self._samples(samples)
        due = rule.check_due(sched, st)
        loss_value = None if loss is None else float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        bad_loss = loss_value is not None and not math.isfinite(loss_value)
        value, cost, monitor_name, undecided = None, 0, None, False
        if due:
            if bad_loss:
                value, monitor_name = loss_value, "loss"   # no measurement is spent on a diverged run
            elif norm is not None:
                value = float(norm.detach() if isinstance(norm, torch.Tensor) else norm)
                cost = check_integer(check_cost, "check_cost", "StageScheduler.step", minimum=0)
                monitor_name = "external"
            elif self.monitor is not None:
                if getattr(self.monitor, "uses_eps_m", False):
                    m = self.monitor.measure(eps_m=float(st.eps_m))
                else:
                    m = self.monitor.measure()
                monitor_name = str(getattr(self.monitor, "name", type(self.monitor).__name__))
                value = float(m.norm)
                undecided = bool(getattr(m, "undecided", False))
                cost = check_integer(m.cost, "cost", f"{monitor_name}.measure()", minimum=0)
            elif sched.trigger == "norm":
                fail("monitor", "StageScheduler.step", "given (or a norm passed to step(norm=...)) on check steps",
                     None, reason=f"step {int(st.step) + 1} is a check step (tau={sched.tau}) of the "
                                  f"norm-triggered schedule {sched.name!r}")
        compared = value
        if undecided and math.isfinite(value):    # no information: the rule sees a norm above ε_m
            compared = max(value, math.nextafter(float(st.eps_m), math.inf))
        new, event = rule.advance(sched, st, samples, norm=compared, check_cost=cost, finite=not bad_loss)
        self._state = new
        self.last_event = event
        self.last_norm = value if due else None
        checked = due and value is not None
        self.account.add(stage=int(st.stage), samples=samples, check_cost=cost, checked=checked)
        moved = int(new.stage) != int(st.stage)
        if moved:
            self.transitions.append({"step": int(new.step), "event": event.name, "stage": int(new.stage),
                                     "b": int(new.batch_size), "eta": float(new.lr), "eps_m": float(new.eps_m),
                                     "samples": int(new.samples), "check_samples": int(new.check_samples)})
        self._apply()
        if self._log is not None and (due or moved or event in _STALL_EVENTS):
            record = self._record(st, new, event, value, monitor_name, due)
            if undecided:
                record["undecided"] = True
            self._write(record)
        if event == Event.STALL_WARNED:
            warnings.warn(f"StageScheduler: stage {int(st.stage)} reached the stall limit "
                          f"({sched.stall_limit} steps) without ‖∇f‖ <= eps_m = {float(st.eps_m):.4g}",
                          RuntimeWarning, stacklevel=3)
        if bad_loss:
            self._nonfinite("loss", loss_value, int(new.step), None)
        elif due and value is not None and not math.isfinite(value):
            self._nonfinite("norm", value, int(new.step), monitor_name)
        return event

    def _nonfinite(self, name: str, value: float, step: int, monitor_name: str | None) -> None:
        by = f", measured by {monitor_name!r}" if monitor_name else ""
        report_nonfinite(name, f"StageScheduler.step (step {step}{by})", value, action=self.on_nonfinite,
                         error_cls=NonFiniteError, reason="a non-finite value never advances a stage; the stage was "
                                                          "kept; on_nonfinite='warn' continues instead")

    def _apply(self) -> None:
        apply_decision(self.optimizer, self.loader, self._state.lr, self._state.batch_size)

    # -- log -----------------------------------------------------------------------------------

    def _record(self, old, new, event, value, monitor_name, due) -> dict:
        row = self.account.stage(int(old.stage))
        return {
            "step": int(new.step), "samples": int(new.samples), "check_samples": int(new.check_samples),
            "sfo_total": int(new.samples) + int(new.check_samples), "stage": int(old.stage),
            "b": int(old.batch_size), "eta": float(old.lr), "eps_m": float(old.eps_m),
            "norm": value, "monitor": monitor_name, "event": event.name, "check": bool(due),
            "stage_samples": row["train"], "stage_check_samples": row["measure"],
            "stage_next": int(new.stage), "b_next": int(new.batch_size), "eta_next": float(new.lr),
            "eps_m_next": float(new.eps_m),
        }

    def _write(self, record: dict) -> None:
        write_record(self._log, record)

    def close(self) -> None:
        """Close the log file if the scheduler opened it."""
        if isinstance(self._log, SFOLogWriter):
            self._log.close()

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The schedule's arguments, the rule state, the SFO account and the transitions (no optimizer)."""
        return {"schedule": self.schedule.to_dict(), "state": self._state.to_dict(),
                "check_order": self.check_order, "account": self.account.state_dict(),
                "transitions": [dict(t) for t in self.transitions],
                "last_event": None if self.last_event is None else int(self.last_event),
                "pre_done": self._pre_done}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`; refuses one written with different Schedule arguments.

        Derived fields are rebuilt: η_m is written into the param groups and b_m into the loader.
        """
        where = "StageScheduler.load_state_dict"
        if not isinstance(state_dict, dict) or not {"schedule", "state"} <= set(state_dict):
            fail("state_dict", where, "a dict written by StageScheduler.state_dict()", type(state_dict).__name__)
        saved = state_dict["schedule"]
        here = self.schedule.to_dict()
        diffs = {k: {"saved": saved.get(k), "here": here.get(k)}
                 for k in sorted(set(saved) | set(here)) if saved.get(k) != here.get(k)}
        if diffs:
            fail("state_dict", where, "written with the same Schedule arguments as this scheduler", diffs,
                 reason="build the scheduler with the saved arguments to resume this run")
        if state_dict.get("check_order", self.check_order) != self.check_order:
            fail("state_dict", where, f"written with the same check_order = {self.check_order!r}",
                 state_dict["check_order"])
        state = rule.state_from_dict(state_dict["state"])
        template = rule.initial_state(self.schedule)   # Python scalar types of each field
        self._state = rule.StageState(*(type(t)(v) for t, v in zip(template, state)))
        self.account = SFOAccount()
        self.account.load_state_dict(state_dict.get("account", {}))
        self.transitions = [dict(t) for t in state_dict.get("transitions", [])]
        ev = state_dict.get("last_event")
        self.last_event = None if ev is None else Event(ev)
        self._pre_done = bool(state_dict.get("pre_done", False))
        self._apply()
