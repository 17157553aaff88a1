r"""The policy interface: a frozen configuration, an explicit state and one pure step.

A *policy* chooses the batch size b and the learning rate η of the next SGD step from
statistics of the steps so far. It is

* a frozen dataclass (a subclass of :class:`Policy`): its configuration, validated on
  construction and round-tripped through JSON by :meth:`Policy.to_dict` and
  :func:`policy_from_dict`;
* an explicit state, a NamedTuple (``Policy.State``) of Python scalars for one run or of
  numpy arrays of one shape for a batch of runs ("rows");
* the pure function ``step(policy, state, stats) -> (state, event)``, the same code for
  both: written once over two sets of primitives, as :func:`sfotheory.rule.advance` is.

Statistics (:class:`Statistics`; the policy lists the ones it reads in
:func:`needs`), for the training batch B of b samples at θ:

.. math::

    g_B = \frac1b \sum_{i\in B} \nabla f_i(\theta), \qquad
    \widehat{\operatorname{tr}\Sigma} = \frac{1}{b-1}\sum_{i\in B} \|\nabla f_i(\theta) - g_B\|^2, \qquad
    \widehat V_{\rm ip} = \frac{1}{b-1}\sum_{i\in B} \bigl(\nabla f_i(\theta)^\top g_B - \|g_B\|^2\bigr)^2,

and the full-gradient norm ‖∇f(θ)‖. Legend: ``grad_sq`` = ‖g_B‖², ``trace_var`` =
tr Σ̂ (the per-sample sample variance, unbiased for tr Σ with replacement and for
tr S² = n tr Σ/(n − 1) without), ``inner_var`` = V̂_ip (the sample variance of the
per-sample inner products ∇f_iᵀg_B), ``full_norm`` = ‖∇f(θ)‖, ``population`` = n when
B is drawn without replacement from n samples (∞ with replacement), c_b = 1 − b/n the
finite-population factor. The variance of the batch mean is c_b tr(·)/b, so c_b tr Σ̂/b
estimates it without bias and ‖g_B‖² − c_b tr Σ̂/b is unbiased for ‖∇f(θ)‖²
(docs/theory.md, "Sampling with and without replacement" and "Estimating ‖∇f(θ)‖").

SFO cost of a statistic (:data:`STATISTIC_COST`): ‖g_B‖², tr Σ̂ and V̂_ip reuse the
per-sample gradients of the training batch itself and cost no gradient evaluation (wall
time only); ‖∇f(θ)‖ costs what its monitor spends, n for an exact pass. The caller
passes that cost as ``stats.check_cost`` on the steps where it measured; the policy adds
it to ``state.check_samples`` (training samples go to ``state.samples``: docs/theory.md,
"SFO accounting").

Protocol, once per optimizer step::

    due = check_due(policy, state)            # does this step read statistics?
    stats = Statistics(samples=b, ...)        # needs(policy).statistics, measured when due
    state, event = step(policy, state, stats)

``needs(policy).order`` says when ``step`` runs relative to the update θ_{t+1} = θ_t − η g_t:

* ``"after_update"`` (the ``torch.optim.lr_scheduler`` contract): the update used the
  ``lr`` of the state before the call; batch statistics are those of B_t at θ_t, a full
  norm is measured at θ_{t+1}; the new (b, η) apply from step t + 1;
* ``"before_update"``: ``step`` runs between the gradient and the update, and the update
  of step t already uses the returned state's ``lr`` (AdaScale's gain scales the step whose
  batch measured it; Algorithm 2 in the authors' order, docs/theory.md, "Order of events").

Every state has the fields ``stage`` (moves made so far), ``batch_size`` and ``lr`` (what
the next step uses; for a ``"before_update"`` policy, ``lr`` is what the last update used),
``step``, ``samples``, ``check_samples`` and ``stopped``. Invariants every policy keeps
(:func:`sfotheory.testing.check_policy_invariants` checks them): b never decreases unless
the class sets ``may_shrink_batch``; b ≤ b_max; η ≤ η_max; a step whose statistics are not
finite, or whose gradient was not (``stats.finite`` False), moves nothing and is reported
as :attr:`PolicyEvent.NONFINITE`; the state round-trips through ``to_dict``; arrays of rows
give what each row gives alone; the same inputs give the same outputs.

>>> from sfotheory.policies import NormTest
>>> p = NormTest(b0=4, eta0=0.1, theta=0.5, b_max=64)
>>> st = initial_state(p)
>>> st, ev = step(p, st, Statistics(samples=4, grad_sq=1.0, trace_var=2.0))
>>> ev.name, st.batch_size                 # 2/4 > 0.5²·1: b = ⌈2/(0.25·1)⌉
('ADVANCED', 8)
>>> rows = initial_state(p, shape=(2,))
>>> rows, ev = step(p, rows, Statistics(samples=rows.batch_size, grad_sq=np.array([1.0, np.nan]),
...                                     trace_var=np.array([2.0, 2.0])))
>>> rows.batch_size.tolist(), [PolicyEvent(e).name for e in ev]
([8, 4], ['ADVANCED', 'NONFINITE'])
"""

from __future__ import annotations

import enum
import math
import typing
from dataclasses import dataclass, fields
from typing import ClassVar, NamedTuple

import numpy as np

from ..rule import _ArrayOps, _ceil_int, _py, _ScalarOps
from ..validation import check_choice, check_integer, check_positive, fail

__all__ = [
    "COMMON_FIELDS",
    "ORDERS",
    "POLICY_KINDS",
    "STATISTICS",
    "STATISTIC_COST",
    "Clock",
    "GrowthState",
    "Needs",
    "Policy",
    "PolicyEvent",
    "Statistics",
    "ceil_capped",
    "check_due",
    "initial_state",
    "milestones_passed",
    "needs",
    "policy_from_dict",
    "state_from_dict",
    "state_to_dict",
    "step",
]

#: The statistics a policy may read, in the order of :class:`Statistics`.
STATISTICS = ("grad_sq", "trace_var", "inner_var", "full_norm")

#: Gradient evaluations one statistic costs beyond the training batch: 0 for those computed
#: from the training batch's own per-sample gradients, "monitor" for the full-gradient norm.
STATISTIC_COST = {"grad_sq": 0, "trace_var": 0, "inner_var": 0, "full_norm": "monitor"}

#: When :func:`step` runs relative to the update (module docstring).
ORDERS = ("after_update", "before_update")

#: kind → Policy subclass; every subclass with a ``kind`` registers itself here.
POLICY_KINDS: dict[str, type] = {}


class PolicyEvent(enum.IntEnum):
    """What :func:`step` did. Codes 0–8 are those of :class:`sfotheory.rule.Event`."""

    NONE = 0            #: an ordinary step, no statistic read
    CHECKED = 1         #: statistics read, nothing moved
    ADVANCED = 2        #: a measured statistic moved b or η (a test failed, a threshold was met)
    PERIOD = 3          #: the policy's clock moved b or η (a period, a milestone)
    AT_MAX = 4          #: the statistic asked for a larger b, but b = b_max
    NONFINITE = 5       #: a statistic read on this step, or the step's gradient, was not finite: nothing moved
    STALL_ADVANCED = 6  #: Algorithm 2's stall limit moved on
    STALL_STOPPED = 7   #: Algorithm 2's stall limit stopped the run
    STALL_WARNED = 8    #: Algorithm 2's stall limit was reported
    FINISHED = 9        #: the policy's horizon was reached: the run is marked stopped



class Statistics(NamedTuple):
    """What the caller measured for one step (scalars, or arrays with one entry per row).

    ``samples`` is |B_t|, the training samples the step consumed. A statistic the caller did
    not measure is NaN; it is read only on the steps :func:`check_due` names, and only if the
    policy lists it in :func:`needs`. ``check_cost`` is the gradient evaluations spent
    measuring on this step (charged on check steps); ``finite`` says the step's loss and
    gradient were finite.
    """

    samples: int
    grad_sq: float = math.nan
    trace_var: float = math.nan
    inner_var: float = math.nan
    full_norm: float = math.nan
    check_cost: int = 0
    population: float = math.inf
    finite: bool = True


class Needs(NamedTuple):
    """A policy's demand: ``statistics`` read on every τ-th step (τ = ``tau``), and when ``step`` runs."""

    statistics: tuple
    tau: int
    order: str

    def check_cost(self, monitor_cost: int) -> int:
        """SFO one check charges: ``monitor_cost`` if it reads ‖∇f‖, else 0 (batch statistics are free)."""
        return int(monitor_cost) if "full_norm" in self.statistics else 0


# -- primitives ------------------------------------------------------------------------------------------

class _Arrays(_ArrayOps):
    """The rule's array primitives, and a division that defines x/0."""

    @staticmethod
    def ratio(num, den):
        """num/den, with 0 when num ≤ 0 and ∞ when num > 0 = den (never a warning)."""
        num = np.asarray(num, dtype=float)
        den = np.asarray(den, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = num / den
        return np.where(num <= 0, 0.0, np.where(den > 0, q, np.inf))


class _Scalars(_ScalarOps):
    """The rule's scalar primitives, and the same division."""

    @staticmethod
    def ratio(num, den):
        if not num > 0:
            return 0.0 if num <= 0 else math.nan
        return num / den if den > 0 else math.inf


def _ops(*values):
    for v in values:
        if (isinstance(v, np.ndarray) and v.ndim) or isinstance(v, (list, tuple)):
            return _Arrays
    return _Scalars


def ceil_capped(ops, x, cap):
    """⌈min(x, cap)⌉ as an integer (x may be ∞; the rule's tolerance for 27.000000000000004)."""
    return ops.minimum(cap, _ceil_int(ops, ops.minimum(ops.to_float(cap), x)))


def milestones_passed(ops, milestones, x):
    """#{m in milestones : m ≤ x}, element-wise (0 for no milestones)."""
    count = 0
    for m in milestones:
        count = count + ops.to_int(x >= m)
    return count


class Clock(NamedTuple):
    """The bookkeeping every policy does on a step (see :meth:`Policy.clock`)."""

    active: object       #: the run was not stopped
    samples: object      #: the step's samples, counted (0 once stopped)
    step: object         #: the step counter after this step
    total: object        #: training samples after this step
    due: object          #: this step reads the policy's statistics
    check_samples: object  #: measurement SFO after this step
    blocked: object      #: a statistic read here, or the step's gradient, was not finite
    ok: object           #: due and not blocked: the statistics may be used


# -- the policy base class ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """Base class of every policy: configuration fields in a frozen dataclass subclass.

    A subclass sets ``kind`` (its name in JSON), ``State`` (a NamedTuple with at least the
    fields of :data:`COMMON_FIELDS`), implements :meth:`needs`, :meth:`initial_values` and
    :meth:`advance`, and exposes ``b0``, ``b_max``, ``eta0`` and ``eta_max`` (fields or
    properties). ``may_shrink_batch`` says b may decrease.
    """

    kind: ClassVar[str] = ""
    State: ClassVar[type] = None
    may_shrink_batch: ClassVar[bool] = False
    #: configuration fields written as None in JSON when infinite, and as lists when tuples
    _inf_fields: ClassVar[tuple] = ("eta_max",)
    _tuple_fields: ClassVar[tuple] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            if cls.State is not None:
                missing = [f for f in COMMON_FIELDS if f not in cls.State._fields]
                if missing:
                    raise TypeError(f"{cls.__name__}.State lacks the common fields {missing}")
            POLICY_KINDS[cls.kind] = cls

    # -- what a subclass provides ------------------------------------------------------------------------
    def needs(self) -> Needs:
        raise NotImplementedError

    def initial_values(self) -> dict:
        """Field values of the initial state (Python scalars)."""
        raise NotImplementedError

    def advance(self, ops, state, stats: Statistics):
        """(new State of ops-values, event code) for one step; see :func:`step`."""
        raise NotImplementedError

    def read_state(self, d: dict):
        """The state saved by its ``to_dict`` (see :func:`state_from_dict`); refuses missing or unknown keys."""
        state_type = self.State
        if not isinstance(d, dict) or set(d) != set(state_type._fields):
            fail("d", f"state_from_dict({type(self).__name__})",
                 f"a dict with exactly the keys {list(state_type._fields)}", sorted(d) if isinstance(d, dict) else d)
        return _to_python(state_type, [float(d[k]) if isinstance(d[k], str) else d[k] for k in state_type._fields])

    def lr_bound(self) -> float:
        """The largest η the policy can use (what a simulator checks against 2/L)."""
        return float(self.eta0)

    def batch_bound(self) -> int:
        """The largest b the policy can use (what a simulator checks against n)."""
        return int(self.b_max)

    # -- shared ------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.kind

    def to_dict(self) -> dict:
        """JSON-friendly configuration with its ``kind`` (∞ as None, tuples as lists)."""
        out = {"kind": self.kind}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in self._inf_fields and isinstance(v, float) and math.isinf(v):
                v = None
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d.pop("kind", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            fail("d", f"{cls.__name__}.from_dict", f"a dict with keys among {sorted(known)}", unknown)
        for k in cls._inf_fields:
            if k in d and d[k] is None:
                d[k] = math.inf
        for k in cls._tuple_fields:
            if k in d and isinstance(d[k], list):
                d[k] = tuple(d[k])
        return cls(**d)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def clock(self, ops, st, stats: Statistics, names, tau: int) -> Clock:
        """Count the step and decide whether its statistics ``names`` are read and usable."""
        where, not_ = ops.where, ops.not_
        active = not_(ops.value(st.stopped))
        samples = where(active, ops.to_int(stats.samples), 0)
        due = ((st.step + 1) % tau == 0) & active
        finite = ops.value(stats.finite)
        for name in names:
            finite = finite & ops.isfinite(ops.to_float(getattr(stats, name)))
        diverged = not_(ops.value(stats.finite))
        blocked = active & (diverged | (due & not_(finite)))
        return Clock(active=active, samples=samples, step=st.step + ops.to_int(active), total=st.samples + samples,
                     due=due, check_samples=st.check_samples + where(due, ops.to_int(stats.check_cost), 0),
                     blocked=blocked, ok=due & not_(blocked))

    def _validate_common(self):
        """b0 ≥ 1 (≥ 2 when tr Σ̂ or V̂_ip is read), b0 ≤ b_max, 0 < η0 ≤ η_max; stores them normalised."""
        where = type(self).__name__
        minimum = 2 if {"trace_var", "inner_var"} & set(self.needs().statistics) else 1
        b0 = check_integer(self.b0, "b0", where, minimum=minimum,
                           reason="the per-sample variance needs two samples" if minimum == 2 else
                           "a batch holds at least one sample")
        b_max = check_integer(self.b_max, "b_max", where, minimum=b0, reason="b_max is the largest batch, b0 <= b_max")
        eta0 = float(check_positive(self.eta0, "eta0", where))
        eta_max = float(self.eta_max)
        if math.isnan(eta_max) or eta_max < eta0:
            fail("eta_max", where, f">= eta0 = {eta0:g}", self.eta_max)
        object.__setattr__(self, "b0", b0)
        object.__setattr__(self, "b_max", b_max)
        object.__setattr__(self, "eta0", eta0)
        object.__setattr__(self, "eta_max", eta_max)


#: Fields every policy state has; the simulator and the torch scheduler read only these.
COMMON_FIELDS = ("stage", "batch_size", "lr", "step", "samples", "check_samples", "stopped")


class GrowthState(NamedTuple):
    """The state of a policy whose only memory is the step it is at: the common fields alone.

    ``stage`` counts the moves made so far, ``batch_size`` and ``lr`` are what the next step
    uses, ``samples`` and ``check_samples`` the training and measurement SFO.
    """

    stage: int
    batch_size: int
    lr: float
    step: int
    samples: int
    check_samples: int
    stopped: bool

    def to_dict(self) -> dict:
        """JSON-friendly dict of a single state."""
        return state_to_dict(self)


def state_to_dict(state) -> dict:
    """JSON-friendly dict of a single state (NaN and ±∞ as strings, which JSON has no number for)."""
    out = {}
    for k, v in state._asdict().items():
        v = _py(v)
        if isinstance(v, float) and not math.isfinite(v):
            v = repr(v)
        out[k] = v
    return out


_FIELD_TYPES: dict[type, dict] = {}


def _field_types(state_type) -> dict:
    """field → its Python type (int, float or bool), from the NamedTuple's annotations."""
    if state_type not in _FIELD_TYPES:
        hints = typing.get_type_hints(state_type)
        _FIELD_TYPES[state_type] = {k: hints[k] for k in state_type._fields}
    return _FIELD_TYPES[state_type]


def _to_python(state_type, values) -> tuple:
    types = _field_types(state_type)
    return state_type(*(types[k](v) for k, v in zip(state_type._fields, values)))


def _to_arrays(state_type, values) -> tuple:
    dtypes = {int: np.int64, float: float, bool: bool}
    types = _field_types(state_type)
    return state_type(*(np.array(v, dtype=dtypes[types[k]], copy=True) for k, v in zip(state_type._fields, values)))


# -- the functional API ------------------------------------------------------------------------------------

def _check_policy(policy, where: str):
    if not isinstance(policy, Policy):
        fail("policy", where, "a Policy (see sfotheory.policies)", policy, cls=TypeError)


def needs(policy: Policy) -> Needs:
    """The statistics ``policy`` reads on every τ-th step, τ, and when its step runs."""
    _check_policy(policy, "needs")
    return policy.needs()


def initial_state(policy: Policy, shape=()):
    """The state before the first step; ``shape`` broadcasts it to a batch of rows.

    >>> from sfotheory.policies import IncreaseBatch
    >>> initial_state(IncreaseBatch(b0=8, eta0=0.1, milestones=(100,))).batch_size
    8
    >>> initial_state(IncreaseBatch(b0=8, eta0=0.1, milestones=(100,)), shape=(3,)).batch_size.tolist()
    [8, 8, 8]
    """
    _check_policy(policy, "initial_state")
    values = policy.initial_values()
    scalar = _to_python(policy.State, [values[k] for k in policy.State._fields])
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if shape == ():
        return scalar
    return _to_arrays(policy.State, [np.full(shape, v) for v in scalar])


def check_due(policy: Policy, state):
    """Whether the step about to be counted reads the policy's statistics (every τ-th step; never once stopped)."""
    tau = policy.needs().tau
    ops = _ops(*state)
    return ((ops.value(state.step) + 1) % tau == 0) & ops.not_(ops.value(state.stopped))


def step(policy: Policy, state, stats: Statistics):
    """Count one step with statistics ``stats`` and apply the policy; returns ``(state, event)``.

    ``event`` is a :class:`PolicyEvent` for one run, an int64 array of its codes for rows.
    Pure: nothing is modified; the same arguments give the same result.
    """
    if not isinstance(stats, Statistics):
        fail("stats", f"step({type(policy).__name__})", "a Statistics record", stats, cls=TypeError)
    ops = _ops(*state, *stats)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        new, event = policy.advance(ops, type(state)(*(ops.value(v) for v in state)), stats)
    if ops is _Scalars:
        return _to_python(policy.State, new), PolicyEvent(int(event))
    shape = np.broadcast_shapes(*(np.shape(v) for v in new))
    return (_to_arrays(policy.State, [np.broadcast_to(v, shape) for v in new]),
            np.broadcast_to(np.asarray(event, dtype=np.int64), shape).copy())


def policy_from_dict(d: dict) -> Policy:
    """Inverse of :meth:`Policy.to_dict`, dispatching on ``d["kind"]``.

    >>> from sfotheory.policies import GradientNoiseScale
    >>> import json
    >>> p = GradientNoiseScale(b0=4, eta0=0.1, b_max=512)
    >>> policy_from_dict(json.loads(json.dumps(p.to_dict()))) == p
    True
    """
    if not isinstance(d, dict) or "kind" not in d:
        fail("d", "policy_from_dict", "a dict with a 'kind' key (from Policy.to_dict)", d)
    check_choice(d["kind"], tuple(POLICY_KINDS), "kind", "policy_from_dict")
    return POLICY_KINDS[d["kind"]].from_dict(d)


def state_from_dict(policy: Policy, d: dict):
    """Inverse of the state's ``to_dict`` (NaN and ±∞ back from their strings); refuses missing or unknown keys."""
    _check_policy(policy, "state_from_dict")
    return policy.read_state(d)

