r"""Vectorised SGD driven by any policy of :mod:`sfotheory.policies`: Algorithm 2 and its peers side by side.

.. math::

    \theta_{t+1} = \theta_t - \eta_t\, g_{B_t}(\theta_t), \qquad |B_t| = b_t, \qquad
    (b_t, \eta_t) \text{ from } \texttt{step(policy, state, stats)}

Legend as in :mod:`sfotheory.simulate` (θ_t one row's iterate, ε the target of ‖∇f(θ_t)‖,
SFO = Σ_t b_t the training samples, check SFO what the policies' measurements cost).

This is :func:`sfotheory.simulate.simulate` with the stage rule replaced by the policy
interface; it reuses that module's pieces (the rows and what they record, the monitors,
the result record, the stopping rules and every convention of its docstring). A sibling
rather than an extension, because the two differ in what a step needs: the rule reads at
most one norm per check, a peer reads statistics of the step's own batch (per-sample
gradients, :mod:`sfotheory.batch_statistics`), and each policy has its own state type.

All R·C runs are rows of one array θ (row p = r·C + c for replicate r and policy c). A step
is one oracle call on all rows (the mini-batch gradient and, when some policy reads them,
the batch statistics, computed for every row so that a row's randomness does not depend on
which other policies run), one exact observation, and one ``step`` per policy on its rows
(vectorised over its replicates; the stage-rule policies that share a check order take theirs
in one call of the rule, on their schedules stacked row by row, as :func:`~sfotheory.simulate.simulate`
runs them). Per policy:

* batch statistics (‖g_B‖², tr Σ̂, V̂_ip) are those of the step's own batch at θ_t, unbiased
  as :mod:`sfotheory.batch_statistics` states, and charged nothing: they reuse the batch;
* the full norm ‖∇f‖ is measured by the monitor (``"exact"``: the full gradient, cost
  ``problem.full_gradient_cost``; ``("subsample", s)``: cost s) on the steps the policy
  checks, at θ_{t+1} for an ``"after_update"`` policy and at θ_t for a ``"before_update"``
  one, and charged to its check SFO;
* a ``"before_update"`` policy's returned η is the η of the current update (AdaScale's gain;
  Algorithm 2 in the authors' order); otherwise the update uses the η in force before.

Recorded per row as in :class:`~sfotheory.simulate.SimulationResult` (``final_stage`` and
``transition_*`` count the policy's moves, ``checks`` the steps that read a statistic);
``trace_sfo`` is the training SFO that produced each observed θ_t.

>>> from sfotheory.problems import make_problem
>>> from sfotheory.policies import IncreaseBatch, NormTest
>>> from sfotheory.rule import constant
>>> p = make_problem("least_squares", n=400, dim=5, seed=0)
>>> res = simulate_policies(p, [constant(b0=8, eta0=0.2), NormTest(b0=8, eta0=0.2, b_max=400)],
...                         eps=0.05, replicates=4, seed=1, max_steps=3000)
>>> res.hit.shape, bool(res.hit.all()), bool((res.final_batch_size[:, 1] > 8).all())
((4, 2), True, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import fields
from typing import NamedTuple

import numpy as np

from .batch_statistics import minibatch_statistics
from .constants import VarianceModel, WithoutReplacement, WithReplacement
from .policies import Policy, StageRule, Statistics, check_due, initial_state, policy_from_dict, step
from .problems import GLMFiniteSum, NoisyQuadratic, Problem, StepRandom, make_sampler
from .rule import Schedule, stack_schedules
from .rule import advance as rule_advance
from .rule import check_due as rule_check_due
from .simulate import (
    _DIVERGED,
    STOP_REASONS,
    SimulationResult,
    _checked_numbers,
    _measure,
    _monitor_cost,
    _one_blas_thread,
    _Rows,
    _rows_schedule,
)
from .validation import check_choice, fail

__all__ = ["PolicyResult", "simulate_policies"]

_BATCH_STATISTICS = ("grad_sq", "trace_var", "inner_var")


class PolicyResult(SimulationResult):
    """What :func:`simulate_policies` measured: a :class:`SimulationResult` whose configurations are policies."""

    FORMAT = "sfotheory.PolicyResult/1"

    @property
    def policies(self) -> list[Policy]:
        return [policy_from_dict(d) for d in self.config["policies"]]

    @property
    def schedules(self) -> list:
        """Per configuration, the stage-rule schedule it runs, or None for a peer policy."""
        return [p.schedule if isinstance(p, StageRule) else None for p in self.policies]

    def summary(self) -> list[dict]:
        """Per policy: hit fraction, means and medians of steps, training SFO and check SFO among hits."""
        out = []
        for c, policy in enumerate(self.policies):
            h = self.hit[:, c]

            def stat(fn, a, h=h, c=c):
                return float(fn(a[h, c])) if h.any() else math.inf

            out.append({
                "config": c, "policy": policy.name, "kind": policy.kind, "b0": int(policy.b0),
                "eta0": float(policy.eta0), "hit_fraction": float(h.mean()),
                "median_steps": stat(np.median, self.hit_step), "mean_steps": stat(np.mean, self.hit_step),
                "median_sfo": stat(np.median, self.hit_sfo), "mean_sfo": stat(np.mean, self.hit_sfo),
                "median_check_sfo": stat(np.median, self.hit_check_sfo),
                "mean_check_sfo": stat(np.mean, self.hit_check_sfo),
                "exhausted": int(self.exhausted[:, c].sum()),
                "diverged": int((self.stop_reason[:, c] == _DIVERGED).sum()),
            })
        return out


class _RowView(NamedTuple):
    """The common fields of every row's policy state, for the working rows (what :class:`_Rows` reads)."""

    stage: np.ndarray
    batch_size: np.ndarray
    lr: np.ndarray
    step: np.ndarray
    samples: np.ndarray
    check_samples: np.ndarray
    stopped: np.ndarray


def _units(policies: list) -> list[tuple[tuple, bool]]:
    """The configurations advanced together, as (configurations, stacked): the stage-rule policies with the same
    check order and the same statistics (a norm or none) form one stacked unit, advanced by the rule on their
    schedules stacked row by row; every other policy is a unit of its own, advanced by ``step``."""
    units, shared = [], {}
    for c, p in enumerate(policies):
        if isinstance(p, StageRule):
            key = (p.check_order, p.needs().statistics)
            if key in shared:
                units[shared[key]][0].append(c)
                continue
            shared[key] = len(units)
        units.append(([c], isinstance(p, StageRule)))
    return [(tuple(configs), stacked) for configs, stacked in units]


class _PolicyRows(_Rows):
    """The rows of :class:`~sfotheory.simulate._Rows`, each driven by its configuration's policy.

    ``cfg`` holds the working rows' configuration index. The configurations are advanced in units
    (:func:`_units`): ``states[u]`` is unit u's state over its working rows ``rows[u]`` (in working
    order) and ``st`` the merged view of the common fields. A unit of stage-rule policies is one call
    of :func:`sfotheory.rule.advance` on its schedules stacked row by row (``schedules[u]``), as
    :func:`sfotheory.simulate.simulate` runs them: the rule's array arithmetic element by element,
    so each row gets the numbers that ``step`` on its own policy gives, for one call instead of
    one per policy; any other unit is one ``step`` of its policy (``schedules[u]`` is None).
    """

    def __init__(self, problem: Problem, policies: list, row_cfg: np.ndarray, th: np.ndarray, keep_trace: bool):
        self.policies = policies
        self.needs = [p.needs() for p in policies]
        units = _units(policies)
        self.units = [configs for configs, _ in units]
        self.unit_of = np.empty(len(policies), dtype=np.int64)
        for u, configs in enumerate(self.units):
            self.unit_of[list(configs)] = u
        self.cfg = row_cfg
        self._index()
        self.states, self.schedules = [], []
        for u, (configs, stacked) in enumerate(units):
            cfg = self.cfg[self.rows[u]]
            own = {c: initial_state(policies[c], shape=(int(np.sum(cfg == c)),)) for c in configs}
            first = own[configs[0]]
            cols = [np.empty(cfg.size, dtype=v.dtype) for v in first]
            for c in configs:
                for col, v in zip(cols, own[c]):
                    col[cfg == c] = v
            self.states.append(type(first)(*cols))
            self.schedules.append(_rows_schedule(stack_schedules([policies[c].schedule for c in configs]),
                                                 np.searchsorted(np.asarray(configs), cfg)) if stacked else None)
        super().__init__(problem, None, th, keep_trace, st=self._merged())

    def _index(self):
        self.rows = [np.flatnonzero(self.unit_of[self.cfg] == u) for u in range(len(self.units))]
        self.reads_norm = self.mask(lambda n: "full_norm" in n.statistics)
        self.before = self.mask(lambda n: n.order == "before_update")

    def _merged(self) -> _RowView:
        size = self.cfg.size
        cols = {f: np.empty(size, dtype=dt) for f, dt in zip(_RowView._fields, (np.int64, np.int64, float, np.int64,
                                                                                 np.int64, np.int64, bool))}
        for rows, state in zip(self.rows, self.states):
            for f, col in cols.items():
                col[rows] = getattr(state, f)
        return _RowView(**cols)

    def mask(self, predicate) -> np.ndarray:
        """Working rows whose policy satisfies ``predicate(needs)``."""
        return np.array([bool(predicate(n)) for n in self.needs], dtype=bool)[self.cfg]

    def due(self) -> np.ndarray:
        """Working rows whose policy reads its statistics on the step about to be counted."""
        out = np.zeros(self.cfg.size, dtype=bool)
        for u, rows in enumerate(self.rows):
            c = self.units[u][0]
            if rows.size and self.needs[c].statistics:
                schedule = self.schedules[u]
                out[rows] = (rule_check_due(schedule, self.states[u]) if schedule is not None
                             else check_due(self.policies[c], self.states[u]))
        return out

    def advance(self, order: str, b, batch, norm, finite, monitor_cost: int, population: float) -> None:
        """One ``step`` of every unit whose step runs at ``order``, on its rows; refreshes the view."""
        nan = math.nan
        for u, rows in enumerate(self.rows):
            c = self.units[u][0]
            needs = self.needs[c]
            if needs.order != order or rows.size == 0:
                continue
            full_norm = norm[rows] if norm is not None else nan
            if self.schedules[u] is not None:       # what StageRule.advance passes the rule, for the unit's rows
                norm_or_none = full_norm if "full_norm" in needs.statistics else None
                with np.errstate(invalid="ignore", over="ignore", divide="ignore"):     # as step() runs it
                    self.states[u], _ = rule_advance(self.schedules[u], self.states[u], b[rows], norm=norm_or_none,
                                                     check_cost=needs.check_cost(monitor_cost), finite=finite[rows])
                continue
            stats = Statistics(
                samples=b[rows],
                grad_sq=batch.grad_sq[rows] if batch is not None else nan,
                trace_var=batch.trace_var[rows] if batch is not None else nan,
                inner_var=batch.inner_var[rows] if batch is not None else nan,
                full_norm=full_norm, check_cost=needs.check_cost(monitor_cost), population=population,
                finite=finite[rows])
            self.states[u], _ = step(self.policies[c], self.states[u], stats)
        self.st = self._merged()

    def checked(self, due: np.ndarray, old_stage: np.ndarray) -> None:
        """Count this step's checks and record the moves it made (every stage entered, if several)."""
        self.out["checks"][self.W[due]] += 1
        jump = self.st.stage - old_stage
        if not np.any(jump > 0):
            return
        top = int(self.st.stage.max())
        width = self.trans_step.shape[1]
        if top > width:
            extra = max(top, 2 * width) - width
            self.trans_step = np.pad(self.trans_step, ((0, 0), (0, extra)), constant_values=-1)
            self.trans_sfo = np.pad(self.trans_sfo, ((0, 0), (0, extra)), constant_values=-1)
        for j in range(1, int(jump.max()) + 1):
            rows = np.flatnonzero(jump >= j)
            self.trans_step[self.W[rows], old_stage[rows] + j - 1] = self.st.step[rows]
            self.trans_sfo[self.W[rows], old_stage[rows] + j - 1] = self.st.samples[rows]

    def recount_last_observation(self) -> None:
        """The last observation's training SFO, after this step's samples were counted."""
        if self.keep_trace and self.trace["sfo"]:
            self.trace["sfo"][-1][self.W] = self.st.samples

    def compact(self, keep: np.ndarray, loss: np.ndarray, norm: np.ndarray):
        for u, rows in enumerate(self.rows):
            kept = keep[rows]
            self.states[u] = type(self.states[u])(*(np.asarray(v)[kept] for v in self.states[u]))
            if self.schedules[u] is not None:
                self.schedules[u] = _rows_schedule(self.schedules[u], np.flatnonzero(kept))
        self.W, self.th, self.cfg = self.W[keep], self.th[keep], self.cfg[keep]
        self._index()
        self.st = self._merged()
        return loss[keep], norm[keep]


# -- validation -------------------------------------------------------------------------------------------

def _validate(problem, policies, variance, allow_unstable, where):
    if not isinstance(problem, Problem):
        fail("problem", where, "a Problem (see sfotheory.problems.make_problem)", problem, cls=TypeError)
    policies = [policies] if isinstance(policies, (Policy, Schedule)) else list(policies)
    policies = [StageRule(p) if isinstance(p, Schedule) else p for p in policies]
    if not policies or not all(isinstance(p, Policy) for p in policies):
        fail("policies", where, "a Policy, a Schedule, or a non-empty list of them", policies, cls=TypeError)
    variance = WithReplacement() if variance is None else variance
    if not isinstance(variance, VarianceModel):
        fail("variance", where, "WithReplacement() or WithoutReplacement(n)", variance, cls=TypeError)
    limit = 2.0 / problem.L
    n = problem.n if problem.n is not None else (variance.n if isinstance(variance, WithoutReplacement) else None)
    for i, p in enumerate(policies):
        label = f"{where} (policy {i}, {p.name!r})"
        if not allow_unstable and p.eta0 >= limit:
            fail("eta0", label, f"< 2/L = {limit:.6g} for problem {problem.name!r} (L = {problem.L:.6g})", p.eta0,
                 reason="Proposition 1 needs every eta_t < 2/L")
        if not allow_unstable and p.lr_bound() >= limit:
            fail("eta_max", label, f"set so that eta stays < 2/L = {limit:.6g} for problem {problem.name!r}",
                 p.eta_max, reason=f"the policy can reach eta = {p.lr_bound():.6g}")
        if n is not None and p.batch_bound() > n:
            fail("b_max", label, f"<= n = {n}", p.b_max,
                 reason=f"the policy can reach b = {p.batch_bound()}, more samples than the data set holds")
        if set(p.needs().statistics) & set(_BATCH_STATISTICS):
            if not isinstance(problem, (GLMFiniteSum, NoisyQuadratic)):
                fail("policies", label, "policies reading no per-sample statistic on this problem", p.kind,
                     reason=f"problem {problem.name!r} has no per-sample gradients")
            if isinstance(problem, NoisyQuadratic) and isinstance(variance, WithoutReplacement):
                fail("variance", label, "WithReplacement() for a policy reading per-sample statistics of the "
                     "noisy quadratic", variance, reason="its without-replacement mode defines no per-sample gradients")
    return policies, variance


# -- the simulator ----------------------------------------------------------------------------------------

@np.errstate(over="ignore", invalid="ignore")  # a diverging run is reported (stop_reason), not warned about
@_one_blas_thread()
def simulate_policies(problem: Problem, policies, *, eps: float, replicates: int = 1, seed: int = 0,
                      max_steps: int = 10_000, budget: int | None = None, budget_counts: str = "training",
                      variance: VarianceModel | None = None, monitor="exact", observe_every: int = 1,
                      keep_trace: bool = True, stop_at_hit: bool = True, theta0=None, allow_unstable: bool = False,
                      threads: int | None = None) -> PolicyResult:
    """Run SGD on ``problem`` for every policy × replicate in one vectorised computation.

    ``policies`` is one :class:`~sfotheory.policies.Policy` or a list (a
    :class:`~sfotheory.rule.Schedule` is taken as ``StageRule(schedule)``); the other
    arguments are those of :func:`sfotheory.simulate.simulate` (the check order is each
    policy's own, ``needs(policy).order``). Refused: a policy whose η can reach 2/L (unless
    ``allow_unstable``), one whose b can exceed the n samples of a finite sum (or the n of
    ``WithoutReplacement(n)``), and per-sample statistics where the problem defines none.
    Returns a :class:`PolicyResult`.
    """
    t_start = time.perf_counter()
    where = "simulate_policies"
    policies, variance = _validate(problem, policies, variance, allow_unstable, where)
    eps, R, seed, max_steps, budget, observe_every, threads = _checked_numbers(
        eps, replicates, seed, max_steps, budget, observe_every, threads)
    check_choice(budget_counts, ("training", "total"), "budget_counts", where)
    mon_size, monitor_cost = _monitor_cost(problem, monitor, where)
    theta0 = np.asarray(problem.theta0 if theta0 is None else theta0, dtype=float)
    if theta0.shape != (problem.dim,):
        fail("theta0", where, f"an array of shape ({problem.dim},)", theta0.shape)
    population = float(problem.n) if isinstance(variance, WithoutReplacement) and problem.n is not None else math.inf

    C = len(policies)
    P = R * C
    run = _PolicyRows(problem, policies, np.tile(np.arange(C), R), np.tile(theta0, (P, 1)), keep_trace)
    sampler = make_sampler(problem, variance, P, seed)
    reads_batch = any(set(n.statistics) & set(_BATCH_STATISTICS) for n in run.needs)

    loss, norm, done = run.begin(eps, stop_at_hit)
    observed = True

    t = 0
    while True:
        if done.any():
            loss, norm = run.compact(~done, loss, norm)
            done = np.zeros(run.W.size, dtype=bool)
        if run.W.size == 0:
            break
        what, loss, norm, broke = run.limits(t, max_steps, budget, budget_counts, observed, loss, norm)
        if what == "end":
            break
        if what == "budget":
            done = broke
            continue
        st = run.st
        b = st.batch_size
        rng = StepRandom(seed, t, threads=threads)
        if reads_batch:
            g, batch = minibatch_statistics(problem, run.th, b, rng, sampler=sampler, rows=run.W)
        else:
            g, batch = problem.minibatch_grad(run.th, b, rng, sampler=sampler, rows=run.W), None
        finite = np.all(np.isfinite(g), axis=1)
        due = run.due()
        reads_norm, before = run.reads_norm, run.before
        old_stage = st.stage.copy()
        lr = st.lr.copy()
        if before.any():
            value = _measure(problem, run.th, due & reads_norm & before, norm if observed else None, mon_size, seed, t)
            run.advance("before_update", b, batch, value, finite, monitor_cost, population)
            lr[before] = run.st.lr[before]
        g *= lr[:, None]
        run.th -= g
        observed = (t + 1) % observe_every == 0
        if observed:
            loss, norm = run.observe(t + 1)
        if (~before).any():
            value = _measure(problem, run.th, due & reads_norm & ~before, norm if observed else None, mon_size, seed,
                             t)
            run.advance("after_update", b, batch, value, finite, monitor_cost, population)
        if observed:
            run.recount_last_observation()
        run.checked(due, old_stage)
        t += 1
        loss, norm, done = run.after_step(observed, eps, stop_at_hit, loss, norm, done)

    config = {
        "problem": problem.spec(), "policies": [p.to_dict() for p in policies], "eps": eps, "replicates": R,
        "seed": seed, "max_steps": max_steps, "budget": budget, "budget_counts": budget_counts,
        "variance": variance.to_dict(), "monitor": list(monitor) if monitor != "exact" else "exact",
        "check_cost": int(monitor_cost), "observe_every": observe_every, "keep_trace": keep_trace,
        "stop_at_hit": stop_at_hit, "theta0_is_default": bool(np.array_equal(theta0, problem.theta0)),
        "stop_reasons": list(STOP_REASONS),
    }
    result = run.result(config, R, C, wall_time=time.perf_counter() - t_start)
    return PolicyResult(**{f.name: getattr(result, f.name) for f in fields(result)})
