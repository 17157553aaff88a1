r"""The stage rule of Algorithm 2 — the one implementation used by the whole project.

The simulator (:mod:`sfotheory.simulate`) and the torch scheduler built on this
package drive training through the pure functions of this module; neither
re-implements the rule (docs/theory.md, "Algorithm 2").

A :class:`Schedule` holds the rule's parameters and a :class:`StageState` the
progress of one run. Every schedule of the project is one :class:`Schedule`,
because all of them share the per-stage closed form

.. math::

    b_m = \min\bigl(b_{\max}, \lceil b_0 \delta^m + a m \rceil\bigr), \qquad
    \eta_m = \min(\eta_{\max}, \eta_0 \gamma^m), \qquad
    \varepsilon_m = \varepsilon_0 \sqrt{b_0 / b_m},

and differ only in what moves them from stage m to m + 1 (the *trigger*):

=========================== ============= =========================================
constructor                 trigger       growth
=========================== ============= =========================================
:func:`adaptive_exponential` ‖∇f‖ ≤ ε_m   b ×δ, η ×γ (Algorithm 2, the paper's)
:func:`adaptive_linear`      ‖∇f‖ ≤ ε_m   b + a, η constant
:func:`periodic`             every P steps b ×δ, η ×γ (the authors' baseline)
:func:`constant`             never         —
:func:`cosine`               never         η_t = η_min + ½(η₀ − η_min)(1 + cos(π t / T))
=========================== ============= =========================================

Legend: m stage, b_m batch size, η_m learning rate, ε_m threshold on the
full-gradient norm, δ > 1 and 1 ≤ γ < √δ growth factors, a linear increment,
τ check interval (steps), b_max and η_max caps.

Protocol, once per optimizer step (``samples`` is the number of samples the step
consumed, usually b_m)::

    due = check_due(schedule, state)            # will this step be a check?
    norm = measure() if due else None           # ‖∇f(θ)‖, by the caller
    state, event = advance(schedule, state, samples, norm=norm, check_cost=cost)

Convention (stated once, here): a check happens after every τ-th counted step,
on the norm the caller measured at that point. The torch scheduler measures
after ``optimizer.step()`` (the norm at θ_{t+1}; the new (b, η) are used from the
next step on) or, with ``check_order="before_update"``, at θ_t before the update
as the authors' code does, so that the update of the triggering step already
uses η_{m+1}; the rule is the same, only the caller's timing differs
(docs/theory.md, "Order of events", lists both step by step).

Every function also works element-wise on arrays: build a batch of schedules
with :func:`stack_schedules` and a batch of states with :func:`initial_state`;
the simulator runs R replicates × C configurations in one call this way.

A NaN or infinite norm never advances a stage; it is reported as
:attr:`Event.NONFINITE`. Reaching ε_m at b_m = b_max is reported as
:attr:`Event.AT_MAX` and changes nothing.

>>> s = adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=1, b_max=4096)
>>> st = initial_state(s)
>>> st.batch_size, st.lr, st.eps_m
(8, 0.1, 0.5)
>>> st, ev = advance(s, st, samples=8, norm=0.4)
>>> ev.name, st.stage, st.batch_size, round(st.lr, 6), round(st.eps_m, 6)
('ADVANCED', 1, 16, 0.14, 0.353553)
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import numpy as np

from .validation import check_choice, check_greater, check_integer, check_positive, check_real, fail

__all__ = [
    "Event",
    "Schedule",
    "StageState",
    "adaptive_exponential",
    "adaptive_linear",
    "advance",
    "check_due",
    "constant",
    "cosine",
    "initial_state",
    "periodic",
    "schedule_from_dict",
    "schedule_table",
    "select",
    "stack_schedules",
    "stage_values",
    "state_from_dict",
]

TRIGGERS = ("norm", "period", "never")
LR_MODES = ("stage", "cosine")
STALL_ACTIONS = ("none", "advance", "stop", "warn")


class Event(enum.IntEnum):
    """What :func:`advance` did on one step."""

    NONE = 0            #: an ordinary step, no check
    CHECKED = 1         #: checked, ‖∇f‖ > ε_m, nothing changed
    ADVANCED = 2        #: ‖∇f‖ ≤ ε_m: moved to stage m + 1
    PERIOD = 3          #: P steps in the stage: moved to stage m + 1 (periodic)
    AT_MAX = 4          #: ‖∇f‖ ≤ ε_m but b_m = b_max: nothing changed
    NONFINITE = 5       #: the measured norm was NaN or ±inf: nothing changed
    STALL_ADVANCED = 6  #: the stall limit was reached: moved on (stall_action="advance")
    STALL_STOPPED = 7   #: the stall limit was reached: run marked stopped (stall_action="stop")
    STALL_WARNED = 8    #: the stall limit was reached: reported only (stall_action="warn")


@dataclass(frozen=True)
class Schedule:
    """Parameters of one schedule; build it with a constructor such as :func:`adaptive_exponential`.

    Fields hold Python scalars for one schedule, or numpy arrays of one shape for a
    batch made by :func:`stack_schedules` (trigger, lr_mode and stall_action are then
    integer codes into ``TRIGGERS``, ``LR_MODES`` and ``STALL_ACTIONS``).
    """

    name: str
    b0: int
    eta0: float
    eps0: float
    delta: float = 1.0
    gamma: float = 1.0
    increment: float = 0.0
    b_max: int = 2**62
    eta_max: float = math.inf
    tau: int = 1
    trigger: str = "never"
    period: int = 0
    lr_mode: str = "stage"
    horizon: int = 0
    eta_min: float = 0.0
    stall_limit: int = 0
    stall_action: str = "none"
    allow_unstable: bool = False

    def __post_init__(self):
        if isinstance(self.b0, np.ndarray):
            return  # a stacked batch: validated element by element before stacking
        where = f"Schedule({self.name!r})"
        check_choice(self.trigger, TRIGGERS, "trigger", where)
        check_choice(self.lr_mode, LR_MODES, "lr_mode", where)
        check_choice(self.stall_action, STALL_ACTIONS, "stall_action", where)
        b0 = check_integer(self.b0, "b0", where, minimum=1, reason="a batch holds at least one sample")
        b_max = check_integer(self.b_max, "b_max", where, minimum=b0, reason="b_max is the largest batch, b0 <= b_max")
        eta0 = check_positive(self.eta0, "eta0", where)
        check_positive(self.eps0, "eps0", where)
        delta = check_greater(self.delta, 1.0, "delta", where, strict=False)
        gamma = check_greater(self.gamma, 1.0, "gamma", where, strict=False,
                              reason="the learning rate never shrinks between stages")
        check_greater(self.increment, 0.0, "increment", where, strict=False)
        eta_max = float(self.eta_max)
        if math.isnan(eta_max) or eta_max < eta0:
            fail("eta_max", where, f">= eta0 = {eta0:g}", self.eta_max)
        check_integer(self.tau, "tau", where, minimum=1, reason="the check interval counts steps")
        check_integer(self.period, "period", where, minimum=0)
        check_integer(self.horizon, "horizon", where, minimum=0)
        check_integer(self.stall_limit, "stall_limit", where, minimum=0)
        check_greater(self.eta_min, 0.0, "eta_min", where, strict=False)
        if self.trigger == "period" and self.period < 1:
            fail("period", where, ">= 1 for a periodic schedule", self.period)
        if self.lr_mode == "cosine":
            if self.horizon < 1:
                fail("horizon", where, ">= 1 steps for a cosine schedule", self.horizon)
            if self.eta_min > eta0:
                fail("eta_min", where, f"<= eta0 = {eta0:g}", self.eta_min)
        if self.stall_limit and self.stall_action == "none":
            fail("stall_action", where, "'advance', 'stop' or 'warn' when stall_limit is set", self.stall_action)
        if delta > 1.0 and gamma > 1.0 and not gamma < math.sqrt(delta) and not self.allow_unstable:
            fail("gamma", where, f"< sqrt(delta) = {math.sqrt(delta):.6g}", self.gamma,
                 reason="Proposition 1 (iii): the bound keeps its O(gamma^-M) rate only if gamma^2 < delta; "
                        "for sqrt(delta) <= gamma < delta it still vanishes, more slowly, at (gamma/delta)^M; "
                        "pass allow_unstable=True to run it anyway")
        object.__setattr__(self, "b0", b0)
        object.__setattr__(self, "b_max", b_max)
        for name in ("eta0", "eps0", "delta", "gamma", "increment", "eta_min"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "eta_max", eta_max)
        for name in ("tau", "period", "horizon", "stall_limit"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def to_dict(self) -> dict:
        """Plain JSON-friendly fields (η_max = ∞ is written as ``None``)."""
        d = asdict(self)
        if math.isinf(d["eta_max"]):
            d["eta_max"] = None
        return d

    def replace(self, **changes) -> Schedule:
        """A copy with some fields changed (validated again)."""
        return schedule_from_dict({**self.to_dict(), **changes})


def schedule_from_dict(d: dict) -> Schedule:
    """Inverse of :meth:`Schedule.to_dict`."""
    known = {f.name for f in fields(Schedule)}
    unknown = sorted(set(d) - known)
    if unknown:
        fail("d", "schedule_from_dict", f"a dict with keys among {sorted(known)}", unknown)
    d = dict(d)
    if d.get("eta_max", math.inf) is None:
        d["eta_max"] = math.inf
    return Schedule(**d)


# -- constructors ----------------------------------------------------------------------------------

def adaptive_exponential(*, b0: int, eta0: float, eps0: float, delta: float, gamma: float, tau: int,
                         b_max: int = 2**62, eta_max: float = math.inf, stall_limit: int = 0,
                         stall_action: str = "none", allow_unstable: bool = False) -> Schedule:
    """Algorithm 2 with exponential growth: on ‖∇f(θ)‖ ≤ ε_m, b ×δ and η ×γ (δ > 1, 1 ≤ γ < √δ).

    >>> s = adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.5, tau=1000)
    Traceback (most recent call last):
    ...
    sfotheory.validation.ParameterError: The 'gamma' parameter of Schedule('adaptive_exponential') must be < sqrt(delta) = 1.41421 (Proposition 1 (iii): the bound keeps its O(gamma^-M) rate only if gamma^2 < delta; for sqrt(delta) <= gamma < delta it still vanishes, more slowly, at (gamma/delta)^M; pass allow_unstable=True to run it anyway). Got gamma=1.5 instead.
    """
    if check_real(delta, "delta", "adaptive_exponential") <= 1.0:
        fail("delta", "adaptive_exponential", "> 1", delta, reason="the batch must grow between stages")
    return Schedule("adaptive_exponential", b0=b0, eta0=eta0, eps0=eps0, delta=delta, gamma=gamma, b_max=b_max,
                    eta_max=eta_max, tau=tau, trigger="norm", stall_limit=stall_limit,
                    stall_action=stall_action, allow_unstable=allow_unstable)


def adaptive_linear(*, b0: int, eta0: float, eps0: float, increment: float, tau: int, b_max: int = 2**62,
                    stall_limit: int = 0, stall_action: str = "none") -> Schedule:
    """Algorithm 2 with linear growth: on ‖∇f(θ)‖ ≤ ε_m, b_{m+1} = ⌈b₀ + a(m + 1)⌉, η constant.

    >>> s = adaptive_linear(b0=8, eta0=0.1, eps0=0.5, increment=8, tau=10)
    >>> [int(stage_values(s, m)[0]) for m in range(4)]
    [8, 16, 24, 32]
    """
    if check_real(increment, "increment", "adaptive_linear") <= 0:
        fail("increment", "adaptive_linear", "> 0", increment, reason="the batch must grow between stages")
    return Schedule("adaptive_linear", b0=b0, eta0=eta0, eps0=eps0, increment=increment, b_max=b_max, tau=tau,
                    trigger="norm", stall_limit=stall_limit, stall_action=stall_action)


def periodic(*, b0: int, eta0: float, delta: float, gamma: float, period: int, b_max: int = 2**62,
             eta_max: float = math.inf, eps0: float = 1.0, tau: int = 1, allow_unstable: bool = False) -> Schedule:
    """The authors' baseline: b ×δ and η ×γ every ``period`` steps, while b_m < b_max.

    The stage counter restarts at each change (the reference code's never did).
    ``eps0`` and ``tau`` only set ε_m and the check interval used for logging.
    """
    return Schedule("periodic", b0=b0, eta0=eta0, eps0=eps0, delta=delta, gamma=gamma, b_max=b_max,
                    eta_max=eta_max, tau=tau, trigger="period", period=period, allow_unstable=allow_unstable)


def constant(*, b0: int, eta0: float, eps0: float = 1.0, tau: int = 1) -> Schedule:
    """Constant b and η (Proposition 1 (i)); ``eps0`` and ``tau`` are used for logging only."""
    return Schedule("constant", b0=b0, eta0=eta0, eps0=eps0, tau=tau, b_max=b0)


def cosine(*, b0: int, eta0: float, horizon: int, eta_min: float = 0.0, eps0: float = 1.0,
           tau: int = 1) -> Schedule:
    """Constant b with cosine-annealed η over ``horizon`` steps.

    >>> s = cosine(b0=128, eta0=0.1, horizon=100)
    >>> st = initial_state(s)
    >>> for _ in range(50):
    ...     st, _ = advance(s, st, samples=128)
    >>> round(st.lr, 12)
    0.05
    """
    return Schedule("cosine", b0=b0, eta0=eta0, eps0=eps0, tau=tau, b_max=b0, lr_mode="cosine",
                    horizon=horizon, eta_min=eta_min)


def stack_schedules(schedules) -> Schedule:
    """Stack schedules into one whose fields are arrays (string choices become integer codes).

    >>> batch = stack_schedules([constant(b0=4, eta0=0.1), constant(b0=8, eta0=0.2)])
    >>> batch.b0
    array([4, 8])
    """
    schedules = list(schedules)
    if not schedules or not all(isinstance(s, Schedule) for s in schedules):
        fail("schedules", "stack_schedules", "a non-empty sequence of Schedule", schedules)
    codes = {"trigger": TRIGGERS, "lr_mode": LR_MODES, "stall_action": STALL_ACTIONS}
    out = {}
    for f in fields(Schedule):
        values = [getattr(s, f.name) for s in schedules]
        if f.name in codes:
            out[f.name] = np.array([codes[f.name].index(v) for v in values])
        elif f.name == "name":
            out[f.name] = tuple(values)
        else:
            out[f.name] = np.array(values)
    return Schedule(**out)


# -- state -----------------------------------------------------------------------------------------

class StageState(NamedTuple):
    """Progress of one run (or of a batch of runs, field by field).

    ``batch_size``, ``lr`` and ``eps_m`` are what the *next* step uses;
    ``samples`` counts training samples (SFO of the updates), ``check_samples``
    the gradient evaluations spent measuring ‖∇f‖; ``stalled`` says that the stall
    limit already fired in the current stage (it fires once per stage).
    """

    stage: int
    batch_size: int
    lr: float
    eps_m: float
    step: int
    samples: int
    stage_step: int
    stage_samples: int
    check_samples: int
    stopped: bool
    stalled: bool = False

    def to_dict(self) -> dict:
        """JSON-friendly dict of a single state."""
        return {k: _py(v) for k, v in self._asdict().items()}


def state_from_dict(d: dict) -> StageState:
    """Inverse of :meth:`StageState.to_dict`; refuses missing or unknown keys.

    ``stalled`` may be missing (a state saved before the field existed): it reads as False.
    ``threshold`` is read as ``eps_m``, the one name of ε_m (states saved before the rename).
    """
    if "threshold" in d and "eps_m" not in d:
        d = {("eps_m" if k == "threshold" else k): v for k, v in d.items()}
    keys = set(d) | {"stalled"}
    if keys != set(StageState._fields):
        fail("d", "state_from_dict", f"a dict with exactly the keys {list(StageState._fields)}", sorted(d))
    return StageState(**{k: d[k] for k in StageState._fields if k in d})


def _py(v):
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _code(schedule: Schedule, field: str, choices) -> np.ndarray | int:
    v = getattr(schedule, field)
    return choices.index(v) if isinstance(v, str) else v


class _ArrayOps:
    """Element-wise primitives on numpy arrays (a batch of runs)."""

    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    abs = staticmethod(np.abs)
    isfinite = staticmethod(np.isfinite)
    sqrt = staticmethod(np.sqrt)
    cos = staticmethod(np.cos)
    not_ = staticmethod(np.logical_not)

    @staticmethod
    def power(x, y):
        return np.power(np.asarray(x, dtype=float), y)

    @staticmethod
    def ceil(x):
        return np.ceil(x)

    @staticmethod
    def to_float(x):
        return np.asarray(x, dtype=float)

    @staticmethod
    def to_int(x):
        return np.asarray(x, dtype=np.int64)

    @staticmethod
    def value(x):
        return np.asarray(x)

    @staticmethod
    def inf_like(x):
        return np.full(np.shape(x), np.inf)


class _ScalarOps:
    """The same primitives on Python scalars: one run, about ten times faster than 0-d arrays."""

    minimum = staticmethod(min)
    maximum = staticmethod(max)
    abs = staticmethod(abs)
    isfinite = staticmethod(math.isfinite)
    sqrt = staticmethod(math.sqrt)
    cos = staticmethod(math.cos)
    ceil = staticmethod(math.ceil)
    to_float = staticmethod(float)
    to_int = staticmethod(int)
    value = staticmethod(lambda x: _py(x))
    inf_like = staticmethod(lambda x: math.inf)

    @staticmethod
    def where(cond, a, b):
        return a if cond else b

    @staticmethod
    def not_(x):
        return not x

    @staticmethod
    def power(x, y):
        return float(x) ** y


def _ops(schedule: Schedule, *values):
    if isinstance(schedule.b0, np.ndarray):
        return _ArrayOps
    for v in values:
        if (isinstance(v, np.ndarray) and v.ndim) or isinstance(v, (list, tuple)):
            return _ArrayOps
    return _ScalarOps


def _ceil_int(ops, x):
    # ⌈x⌉ computed so that a float such as 27.000000000000004 (= 8·1.5³) gives 27, not 28.
    return ops.to_int(ops.ceil(x - 1e-9 * ops.maximum(1.0, ops.abs(x))))


def _stage_values(ops, schedule: Schedule, m):
    # cap in floating point first, so that a huge b0 δ^m never overflows the int64 conversion
    grown = ops.minimum(ops.to_float(schedule.b_max),
                        schedule.b0 * ops.power(schedule.delta, m) + schedule.increment * m)
    b_m = ops.minimum(schedule.b_max, _ceil_int(ops, grown))
    eta_m = ops.minimum(schedule.eta_max, schedule.eta0 * ops.power(schedule.gamma, m))
    eps_m = schedule.eps0 * ops.sqrt(schedule.b0 / b_m)
    return b_m, eta_m, eps_m


def stage_values(schedule: Schedule, stage):
    """(b_m, η_m, ε_m) of stage m, the closed form shared by every schedule.

    >>> s = adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=1000, b_max=4096)
    >>> b, lr, eps = stage_values(s, np.arange(11))
    >>> b.tolist()
    [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 4096]
    >>> stage_values(s, 3)
    (64, 0.2744, 0.1767766952966369)
    """
    ops = _ops(schedule, stage)
    return _stage_values(ops, schedule, ops.value(stage))


def _cosine_lr(ops, schedule: Schedule, step):
    horizon = ops.maximum(schedule.horizon, 1)
    frac = ops.minimum(step, horizon) / horizon
    return schedule.eta_min + 0.5 * (schedule.eta0 - schedule.eta_min) * (1.0 + ops.cos(math.pi * frac))


def initial_state(schedule: Schedule, shape=()) -> StageState:
    """Stage 0 of ``schedule``; ``shape`` broadcasts it to a batch of runs (e.g. replicates × configs)."""
    scalar = not isinstance(schedule.b0, np.ndarray) and shape == ()
    b, lr, eps = _stage_values(_ArrayOps, schedule, np.asarray(0))
    shape = np.broadcast_shapes(np.shape(b), tuple(shape) if not isinstance(shape, int) else (shape,))
    zeros = np.zeros(shape, dtype=np.int64)
    state = StageState(stage=zeros, batch_size=np.broadcast_to(b, shape).astype(np.int64),
                       lr=np.broadcast_to(lr, shape).astype(float), eps_m=np.broadcast_to(eps, shape).astype(float),
                       step=zeros, samples=zeros, stage_step=zeros, stage_samples=zeros, check_samples=zeros,
                       stopped=np.zeros(shape, dtype=bool), stalled=np.zeros(shape, dtype=bool))
    return _finish(state, scalar)


def _finish(state: StageState, scalar: bool) -> StageState:
    if scalar:
        return StageState(*(_py(np.asarray(v)) for v in state))
    return StageState(*(np.array(v, copy=True) for v in state))


def check_due(schedule: Schedule, state: StageState):
    """Whether the step about to be counted is a check step (every τ-th step; never once stopped)."""
    ops = _ops(schedule, *state)
    return ((ops.value(state.step) + 1) % schedule.tau == 0) & ops.not_(ops.value(state.stopped))


def advance(schedule: Schedule, state: StageState, samples, *, norm=None, check_cost=0, finite=True):
    """Count one step that consumed ``samples`` samples, then apply the stage rule.

    On a check step (see :func:`check_due`) with a measured ``norm`` = ‖∇f(θ)‖ and
    trigger ``"norm"``: if norm ≤ ε_m and b_m < b_max the run moves to stage m + 1,
    taking (b_{m+1}, η_{m+1}, ε_{m+1}) from :func:`stage_values`. A periodic
    schedule moves on after ``period`` steps in the stage. ``check_cost`` gradient
    evaluations are added to ``check_samples`` on check steps. Returns
    ``(new_state, event)``; ``event`` is an :class:`Event` (an int array for batches).
    ``finite=False`` says the step itself diverged (a NaN or infinite loss or gradient):
    like a non-finite ``norm`` on a check step, it blocks every move on that step and
    is reported as :attr:`Event.NONFINITE`; the step and its samples are still counted.
    A stopped run is left as it is. A NaN or infinite ``norm`` on a check step blocks
    every move on that step (a periodic move or a stall action then happens on the next
    step that is not blocked). The stall action fires once per stage, on the first such
    step with ``stage_step >= stall_limit``.

    >>> s = adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=2, b_max=16)
    >>> st = initial_state(s)
    >>> st, ev = advance(s, st, 8, norm=0.1); ev.name        # not a check step: norm ignored
    'NONE'
    >>> st, ev = advance(s, st, 8, norm=float("nan")); ev.name
    'NONFINITE'
    >>> st, ev = advance(s, st, 8); st, ev = advance(s, st, 8, norm=0.6); ev.name, st.stage
    ('CHECKED', 0)
    >>> st, ev = advance(s, st, 8); st, ev = advance(s, st, 8, norm=0.3); ev.name, st.batch_size
    ('ADVANCED', 16)
    >>> st, ev = advance(s, st, 16); st, ev = advance(s, st, 16, norm=0.01); ev.name, st.batch_size
    ('AT_MAX', 16)
    """
    # One implementation over two sets of primitives: Python scalars for one run, numpy for a batch.
    ops = _ops(schedule, samples, norm, check_cost, finite, *state)
    where, not_ = ops.where, ops.not_
    finite_step = finite
    st = StageState(*(ops.value(v) for v in state))
    active = not_(st.stopped)
    samples = where(active, ops.to_int(samples), 0)
    stepped = ops.to_int(active)
    due = ((st.step + 1) % schedule.tau == 0) & active
    step = st.step + stepped
    stage_step = st.stage_step + stepped
    total = st.samples + samples
    stage_samples = st.stage_samples + samples
    check_samples = st.check_samples + where(due, ops.to_int(check_cost), 0)

    by_norm = _code(schedule, "trigger", TRIGGERS) == 0
    by_period = _code(schedule, "trigger", TRIGGERS) == 1
    cosine_lr = _code(schedule, "lr_mode", LR_MODES) == 1

    measured = due & (norm is not None)
    value = ops.inf_like(step) if norm is None else ops.to_float(norm)
    finite = ops.isfinite(value)
    # a NaN/inf norm, or a step that diverged, blocks every kind of move on this step
    nonfinite = ((measured & not_(finite)) | not_(ops.value(finite_step))) & active
    event = where(measured, int(Event.CHECKED), int(Event.NONE))
    event = where(nonfinite, int(Event.NONFINITE), event)
    below_eps = measured & finite & not_(nonfinite) & (value <= st.eps_m) & by_norm
    below_max = st.batch_size < schedule.b_max
    event = where(below_eps & not_(below_max), int(Event.AT_MAX), event)
    move = below_eps & below_max
    event = where(move, int(Event.ADVANCED), event)

    periodic_move = active & by_period & (stage_step >= schedule.period) & below_max & not_(nonfinite)
    event = where(periodic_move, int(Event.PERIOD), event)
    move = move | periodic_move

    stall, stall_move, stall_stop, event = _stall_safeguard(ops, schedule, st, event, stage_step,
                                                            active & by_norm & not_(move) & not_(nonfinite),
                                                            below_max)
    move = move | stall_move

    stage = st.stage + ops.to_int(move)
    b_new, lr_new, eps_m_new = _stage_values(ops, schedule, stage)
    lr_new = where(cosine_lr, _cosine_lr(ops, schedule, step), lr_new)
    new = StageState(
        stage=stage,
        batch_size=where(active, b_new, st.batch_size),
        lr=where(active, lr_new, st.lr),
        eps_m=where(active, eps_m_new, st.eps_m),
        step=step,
        samples=total,
        stage_step=where(move, 0, stage_step),
        stage_samples=where(move, 0, stage_samples),
        check_samples=check_samples,
        stopped=st.stopped | stall_stop,
        stalled=where(move, False, st.stalled | stall),
    )
    if ops is _ScalarOps:
        return StageState(*(type(v)(x) for v, x in zip(_PYTHON_TYPES, new))), Event(int(event))
    return _finish(new, False), np.asarray(event, dtype=np.int64)


#: One value of each field's Python type, for the scalar state :func:`advance` returns.
_PYTHON_TYPES = StageState(0, 0, 0.0, 0.0, 0, 0, 0, 0, 0, False, False)


def _stall_safeguard(ops, schedule: Schedule, st: StageState, event, stage_step, eligible, below_max):
    """The stall limit of :func:`advance`: once ``stage_step`` reaches or passes ``stall_limit`` on an
    ``eligible`` step (running, norm-triggered, not moving, not blocked) and the stall action has not
    fired in this stage, fire it: advance (or stop at b_max), stop, or warn. A blocked step at the
    limit only delays the action to the next healthy step. Returns (stall, stall_move, stall_stop, event).
    """
    where, not_ = ops.where, ops.not_
    action = _code(schedule, "stall_action", STALL_ACTIONS)
    stall = (eligible & (schedule.stall_limit > 0) & (stage_step >= schedule.stall_limit)
             & not_(ops.value(st.stalled)))
    stall_move = stall & (action == 1) & below_max
    stall_stop = stall & ((action == 2) | ((action == 1) & not_(below_max)))
    event = where(stall_move, int(Event.STALL_ADVANCED), event)
    event = where(stall_stop, int(Event.STALL_STOPPED), event)
    event = where(stall & (action == 3), int(Event.STALL_WARNED), event)
    return stall, stall_move, stall_stop, event


def select(mask, if_true: StageState, if_false: StageState) -> StageState:
    """Element-wise choice between two batched states (e.g. to freeze finished replicates)."""
    return StageState(*(np.where(mask, a, b) for a, b in zip(if_true, if_false)))


def schedule_table(schedule: Schedule, stages: int | None = None) -> list[dict]:
    """The per-stage values (m, b_m, η_m, ε_m) until b_max is reached (or ``stages`` rows).

    >>> rows = schedule_table(adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4,
    ...                                            tau=1000, b_max=4096))
    >>> len(rows), rows[-1]["b"], round(rows[-1]["eta"], 4), round(rows[-1]["eps_m"], 5)
    (10, 4096, 2.0661, 0.0221)
    """
    if stages is None:
        stages = 0
        while stages < 10_000:
            b_m, _, _ = stage_values(schedule, stages)
            stages += 1
            if b_m >= schedule.b_max or (schedule.delta == 1.0 and schedule.increment == 0.0):
                break
    stages = check_integer(stages, "stages", "schedule_table", minimum=1)
    b_m, eta_m, eps_m = stage_values(schedule, np.arange(stages))
    return [{"m": m, "b": int(b_m[m]), "eta": float(eta_m[m]), "eps_m": float(eps_m[m])} for m in range(stages)]
