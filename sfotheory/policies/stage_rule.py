r"""Algorithm 2 and its baselines as one policy: the stage rule of :mod:`sfotheory.rule`, wrapped.

The stage law (b_m, η_m, ε_m) and its triggers keep their one owner,
:func:`sfotheory.rule.advance`; this module only adapts its signature to the policy
interface, so that Algorithm 2 (trigger ‖∇f‖ ≤ ε_m) and the authors' baselines (periodic,
constant, cosine) run beside the peer policies in the same simulator and scheduler:

.. math::

    b_m = \min\bigl(b_{\max}, \lceil b_0 \delta^m + a m \rceil\bigr), \qquad
    \eta_m = \min(\eta_{\max}, \eta_0 \gamma^m), \qquad
    \varepsilon_m = \varepsilon_0 \sqrt{b_0 / b_m}

(docs/theory.md, "Algorithm 2"). The state is :class:`sfotheory.rule.StageState`; the
events are the rule's, with the same codes (:class:`~sfotheory.policies.base.PolicyEvent`).
A norm-triggered schedule reads ``full_norm`` on every τ-th step, charged ``check_cost``
(the monitor's SFO); the other triggers read nothing and are charged nothing.

>>> from sfotheory.rule import adaptive_exponential
>>> from sfotheory.policies.base import Statistics, initial_state, needs, step
>>> p = StageRule(adaptive_exponential(b0=8, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=1, b_max=4096))
>>> needs(p)
Needs(statistics=('full_norm',), tau=1, order='after_update')
>>> st, ev = step(p, initial_state(p), Statistics(samples=8, full_norm=0.4, check_cost=1000))
>>> ev.name, st.batch_size, round(st.lr, 6), st.check_samples
('ADVANCED', 16, 0.14, 1000)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rule import Schedule, StageState, advance, initial_state, schedule_from_dict, schedule_table, state_from_dict
from ..validation import check_choice, fail
from .base import ORDERS, Needs, Policy, Statistics

__all__ = ["StageRule"]


@dataclass(frozen=True)
class StageRule(Policy):
    """A :class:`~sfotheory.rule.Schedule` (Algorithm 2 or a baseline) under the policy interface.

    ``check_order`` is when the norm is measured: ``"after_update"`` (ours) or
    ``"before_update"`` (the authors' order: the triggering step's update uses η_{m+1}).
    """

    schedule: Schedule
    check_order: str = "after_update"

    kind = "stage_rule"
    State = StageState

    def __post_init__(self):
        if not isinstance(self.schedule, Schedule) or isinstance(self.schedule.b0, np.ndarray):
            fail("schedule", "StageRule", "a single Schedule (see sfotheory.rule)", self.schedule, cls=TypeError)
        check_choice(self.check_order, ORDERS, "check_order", "StageRule")

    # the fields every policy exposes
    b0 = property(lambda self: self.schedule.b0)
    b_max = property(lambda self: self.schedule.b_max)
    eta0 = property(lambda self: self.schedule.eta0)
    eta_max = property(lambda self: self.schedule.eta_max)

    @property
    def name(self) -> str:
        return self.schedule.name

    @property
    def reads_norm(self) -> bool:
        return self.schedule.trigger == "norm"

    def needs(self) -> Needs:
        return Needs(("full_norm",) if self.reads_norm else (), self.schedule.tau, self.check_order)

    def initial_values(self) -> dict:
        return initial_state(self.schedule)._asdict()

    def batch_bound(self) -> int:
        return max(row["b"] for row in schedule_table(self.schedule))

    def lr_bound(self) -> float:
        return max(max(row["eta"] for row in schedule_table(self.schedule)), self.schedule.eta0)

    def advance(self, ops, state, stats: Statistics):
        norm = stats.full_norm if self.reads_norm else None
        cost = stats.check_cost if self.reads_norm else 0
        return advance(self.schedule, state, stats.samples, norm=norm, check_cost=cost, finite=stats.finite)

    def read_state(self, d: dict):
        return state_from_dict(d)       # the rule's reader: it also reads states saved under older field names

    def to_dict(self) -> dict:
        return {"kind": self.kind, "schedule": self.schedule.to_dict(), "check_order": self.check_order}

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d.pop("kind", None)
        unknown = sorted(set(d) - {"schedule", "check_order"})
        if unknown:
            fail("d", "StageRule.from_dict", "a dict with keys among ['check_order', 'schedule']", unknown)
        if "schedule" not in d:
            fail("d", "StageRule.from_dict", "a dict with a 'schedule' key", sorted(d))
        return cls(schedule_from_dict(d["schedule"]), **{k: v for k, v in d.items() if k != "schedule"})
