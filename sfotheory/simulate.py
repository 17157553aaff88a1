r"""Vectorised mini-batch SGD over R replicates × C schedules, driven by the one stage rule.

.. math::

    \theta_{t+1} = \theta_t - \eta_t\, G_{B_t}(\theta_t), \qquad |B_t| = b_t, \qquad
    (b_t, \eta_t) \text{ from } :func:`sfotheory.rule.advance`

Legend: θ_t the iterate of one replicate, G_B the mini-batch gradient of the
problem's oracle, b_t and η_t what the schedule's state says for the step,
ε the target of ‖∇f(θ_t)‖, SFO = Σ_t b_t the training samples (the rule's
``samples``), check SFO the evaluations spent on the rule's ‖∇f‖ checks (its
``check_samples``: n per exact check on a finite sum, ``check_cost`` on the
quadratic, s per subsampled check).

All R·C runs are rows of one array θ of shape (rows, d); a step is one oracle
call on all rows (per-row batch sizes are handled by the oracle), one call of
:func:`~sfotheory.rule.advance` on the batched state, and one exact observation.
Rows leave the working set when they stop, so late steps cost only what is left.

Conventions (stated once, here):

* Observation. The exact ‖∇f(θ_t)‖ and f(θ_t) are computed at t = 0 and after
  every ``observe_every``-th step (and at each row's last step); a replicate *hits*
  at the first observed t with ‖∇f(θ_t)‖ ≤ ε; its hit SFO is the training samples
  consumed to produce θ_t, Σ_{s<t} b_s. Observations are free (they are the
  experimenter's, not the algorithm's); only the rule's checks are charged.
* Check timing. ``check_order="after_update"`` (default): on a check step the
  rule gets ‖∇f(θ_{t+1})‖ and the new (b, η) apply from step t + 1.
  ``"before_update"``: the authors' order, the norm at θ_t is measured after the
  batch was drawn and before the update, and the update already uses η_{m+1}
  (docs/theory.md, "Order of events").
* Monitor. ``"exact"`` uses the full gradient (cost ``problem.full_gradient_cost``);
  ``("subsample", s)`` the norm of a fresh gradient over s samples (cost s).
* Stopping. A row stops at its first hit (``stop_at_hit``), when its next step
  would exceed ``budget`` samples (training only, or training + checks with
  ``budget_counts="total"``), at ``max_steps``, when ‖∇f‖ is not finite
  (diverged) or when the rule stops it (stall). Each row's reason is in
  :attr:`SimulationResult.stop_reason`; nothing is raised for an exhausted budget.
* Randomness at step t is a function of (seed, t) only (:class:`StepRandom`).

>>> from sfotheory.problems import make_problem
>>> from sfotheory.rule import constant
>>> q = make_problem("quadratic", dim=50, kappa=1.0, sigma2=1.0, gap=1.0, seed=0)
>>> res = simulate(q, [constant(b0=8, eta0=0.5), constant(b0=64, eta0=0.5)], eps=0.2,
...                replicates=4, seed=1, max_steps=500)
>>> res.hit.shape, bool(res.hit.all())
((4, 2), True)
>>> bool((res.hit_sfo[:, 1] > res.hit_sfo[:, 0]).all())   # b = 64 spends more samples here
True
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from .constants import VarianceModel, WithoutReplacement, WithReplacement
from .problems import Problem, StepRandom, make_problem, make_sampler
from .rule import Event, Schedule, advance, check_due, initial_state, schedule_from_dict, schedule_table, \
    stack_schedules
from .validation import check_choice, check_integer, check_positive, fail

__all__ = ["STOP_REASONS", "SimulationResult", "schedule_sequence", "simulate"]

#: stop_reason codes of :class:`SimulationResult` (index = code).
STOP_REASONS = ("running", "hit", "budget", "max_steps", "diverged", "rule_stopped")
_HIT, _BUDGET, _MAX, _DIVERGED, _RULE = 1, 2, 3, 4, 5
_MOVES = (int(Event.ADVANCED), int(Event.PERIOD), int(Event.STALL_ADVANCED))
_FORMAT = "sfotheory.SimulationResult/1"


@dataclass
class SimulationResult:
    """What :func:`simulate` measured; arrays are indexed [replicate, config] (traces [obs, replicate, config]).

    ``hit_step``/``hit_sfo``/``hit_check_sfo`` are −1 where ε was not reached;
    ``transition_step``/``transition_sfo`` [r, c, m] give the step and training SFO
    at which stage m + 1 began (−1 if never); ``trace_*`` hold the exact
    observations at steps ``trace_step`` (NaN, or −1 for SFO, after a row stopped).
    """

    config: dict
    hit: np.ndarray
    hit_step: np.ndarray
    hit_sfo: np.ndarray
    hit_check_sfo: np.ndarray
    steps: np.ndarray
    sfo: np.ndarray
    check_sfo: np.ndarray
    checks: np.ndarray
    stop_reason: np.ndarray
    final_norm: np.ndarray
    final_loss: np.ndarray
    min_norm: np.ndarray
    sigma2_max: np.ndarray
    final_stage: np.ndarray
    final_batch_size: np.ndarray
    final_lr: np.ndarray
    transition_step: np.ndarray
    transition_sfo: np.ndarray
    trace_step: np.ndarray
    trace_norm: np.ndarray
    trace_loss: np.ndarray
    trace_sfo: np.ndarray
    wall_time: float = field(default=0.0)

    #: the "format" tag save() writes and load() requires (a subclass saves under its own)
    FORMAT: ClassVar[str] = _FORMAT

    # -- views ----------------------------------------------------------------------------------------
    @property
    def replicates(self) -> int:
        return self.hit.shape[0]

    @property
    def configs(self) -> int:
        return self.hit.shape[1]

    @property
    def eps(self) -> float:
        return float(self.config["eps"])

    @property
    def exhausted(self) -> np.ndarray:
        """Rows stopped by the budget or the step limit before reaching ε."""
        return np.isin(self.stop_reason, (_BUDGET, _MAX))

    @property
    def schedules(self) -> list[Schedule]:
        return [schedule_from_dict(d) for d in self.config["schedules"]]

    def reasons(self) -> np.ndarray:
        """``stop_reason`` as names."""
        return np.asarray(STOP_REASONS, dtype=object)[self.stop_reason]

    def mean_sq_norm(self) -> np.ndarray:
        """Mean over replicates of ‖∇f(θ_t)‖² at the observed steps, shape (observations, configs)."""
        return np.mean(self.trace_norm**2, axis=1)

    def summary(self) -> list[dict]:
        """Per configuration: hit fraction, medians of K and N among hits, SFO of checks."""
        out = []
        for c, sched in enumerate(self.config["schedules"]):
            h = self.hit[:, c]
            out.append({
                "config": c, "schedule": sched["name"], "b0": sched["b0"], "eta0": sched["eta0"],
                "hit_fraction": float(h.mean()),
                "median_steps": float(np.median(self.hit_step[h, c])) if h.any() else math.inf,
                "median_sfo": float(np.median(self.hit_sfo[h, c])) if h.any() else math.inf,
                "median_check_sfo": float(np.median(self.hit_check_sfo[h, c])) if h.any() else math.inf,
                "exhausted": int(self.exhausted[:, c].sum()),
                "diverged": int((self.stop_reason[:, c] == _DIVERGED).sum()),
            })
        return out

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path) -> tuple[Path, Path]:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (config); no pickle. Returns both paths."""
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        np.savez_compressed(base.with_suffix(".npz"), **arrays)
        meta = {"format": self.FORMAT, "config": self.config, "wall_time": self.wall_time}
        base.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=_json_default))
        return base.with_suffix(".npz"), base.with_suffix(".json")

    @classmethod
    def load(cls, path) -> SimulationResult:
        """Inverse of :meth:`save`."""
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        meta = json.loads(base.with_suffix(".json").read_text())
        if meta.get("format") != cls.FORMAT:
            fail("path", f"{cls.__name__}.load", f"a file written by {cls.__name__}.save ({cls.FORMAT})",
                 meta.get("format"))
        with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(config=meta["config"], wall_time=meta["wall_time"], **arrays)

    def problem(self) -> Problem:
        """Rebuild the problem from its (name, parameters, seed)."""
        spec = self.config["problem"]
        return make_problem(spec["name"], spec["params"], seed=spec["seed"])


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# -- validation -------------------------------------------------------------------------------------------

def _reachable(schedule: Schedule):
    """(largest b, largest η) over the stages the schedule can reach."""
    rows = schedule_table(schedule)
    return max(r["b"] for r in rows), max(max(r["eta"] for r in rows), schedule.eta0)


def _validate(problem, schedules, variance, allow_unstable, where):
    if not isinstance(problem, Problem):
        fail("problem", where, "a Problem (see sfotheory.problems.make_problem)", problem, cls=TypeError)
    if isinstance(schedules, Schedule):
        schedules = [schedules]
    schedules = list(schedules)
    if not schedules or not all(isinstance(s, Schedule) and not isinstance(s.b0, np.ndarray) for s in schedules):
        fail("schedules", where, "a Schedule or a non-empty list of single Schedules", schedules, cls=TypeError)
    variance = WithReplacement() if variance is None else variance
    if not isinstance(variance, VarianceModel):
        fail("variance", where, "WithReplacement() or WithoutReplacement(n)", variance, cls=TypeError)
    limit = 2.0 / problem.L
    for i, s in enumerate(schedules):
        b_big, eta_big = _reachable(s)
        label = f"{where} (schedule {i}, {s.name!r})"
        if not allow_unstable and s.eta0 >= limit:
            fail("eta0", label, f"< 2/L = {limit:.6g} for problem {problem.name!r} (L = {problem.L:.6g})", s.eta0,
                 reason="Proposition 1 needs every eta_t < 2/L")
        if not allow_unstable and eta_big >= limit:
            fail("eta_max", label, f"set so that eta_m stays < 2/L = {limit:.6g} for problem {problem.name!r}",
                 s.eta_max, reason=f"eta_0 gamma^m reaches {eta_big:.6g} before b reaches b_max = {s.b_max}")
        if isinstance(variance, WithoutReplacement):
            n = variance.n if problem.n is None else problem.n
            if s.b0 > n:
                fail("b0", label, f"<= n = {n} when sampling without replacement", s.b0)
            if b_big > n:
                fail("b_max", label, f"<= n = {n} when sampling without replacement", s.b_max,
                     reason=f"the schedule reaches b = {b_big}")
    return schedules, variance


def _rows_schedule(stacked: Schedule, index: np.ndarray) -> Schedule:
    """A stacked schedule whose fields are indexed by ``index`` (one entry per row)."""
    d = {f.name: (getattr(stacked, f.name) if f.name == "name" else getattr(stacked, f.name)[index])
         for f in fields(Schedule)}
    return Schedule(**d)


def schedule_sequence(schedules, steps: int):
    """The per-step (b_t, η_t) of deterministic schedules (no norm trigger), from the rule itself.

    Returns two arrays of shape (steps, C). A norm-triggered schedule never moves
    here (no norm is given), which is its sequence only until its first stage change.

    >>> from sfotheory.rule import periodic
    >>> b, lr = schedule_sequence([periodic(b0=2, eta0=0.1, delta=2, gamma=1.2, period=3)], 7)
    >>> b[:, 0].tolist()
    [2, 2, 2, 4, 4, 4, 8]
    """
    schedules = [schedules] if isinstance(schedules, Schedule) else list(schedules)
    steps = check_integer(steps, "steps", "schedule_sequence", minimum=1)
    stacked = stack_schedules(schedules)
    st = initial_state(stacked)
    b = np.empty((steps, len(schedules)), dtype=np.int64)
    lr = np.empty((steps, len(schedules)))
    for t in range(steps):
        b[t], lr[t] = st.batch_size, st.lr
        st, _ = advance(stacked, st, st.batch_size)
    return b, lr


# -- BLAS threads ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def _one_blas_thread():
    """Run numpy's BLAS on one thread inside the block (threadpoolctl); the count is restored after.

    The simulators' matrix products are small (rows × n × d: θXᵀ and ℓ'X of an observation); on
    several threads a BLAS gains little on them, and its workers spin after each call, taking the
    cores that the Gaussian generator's threads and the other processes of ``sfo compare --jobs``
    need. A product's entries do not depend on the thread count (tests/theory/test_simulate.py
    checks it bit for bit), so neither do the results. Usable as a decorator.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


# -- the simulator ----------------------------------------------------------------------------------------

@np.errstate(over="ignore", invalid="ignore")  # a diverging run is reported (stop_reason), not warned about
@_one_blas_thread()
def simulate(problem: Problem, schedules, *, eps: float, replicates: int = 1, seed: int = 0,
             max_steps: int = 10_000, budget: int | None = None, budget_counts: str = "training",
             variance: VarianceModel | None = None, monitor="exact", observe_every: int = 1,
             keep_trace: bool = True, stop_at_hit: bool = True, check_order: str = "after_update",
             theta0=None, allow_unstable: bool = False, threads: int | None = None) -> SimulationResult:
    """Run SGD on ``problem`` for every schedule × replicate in one vectorised computation.

    Parameters: ``schedules`` one :class:`~sfotheory.rule.Schedule` or a list (the C
    configurations); ``eps`` the target ‖∇f‖ ≤ ε; ``replicates`` R; ``seed`` the
    seed of all randomness; ``max_steps`` and ``budget`` (samples per replicate)
    the limits; ``variance`` ``WithReplacement()`` (default) or ``WithoutReplacement(n)``
    (within an epoch); ``monitor`` ``"exact"`` or ``("subsample", s)``; the rest as
    in the module docstring. Returns a :class:`SimulationResult`.
    """
    t_start = time.perf_counter()
    schedules, variance = _validate(problem, schedules, variance, allow_unstable, "simulate")
    eps, R, seed, max_steps, budget, observe_every, threads = _checked_numbers(
        eps, replicates, seed, max_steps, budget, observe_every, threads)
    check_choice(budget_counts, ("training", "total"), "budget_counts", "simulate")
    check_choice(check_order, ("after_update", "before_update"), "check_order", "simulate")
    mon_size, check_cost = _monitor_cost(problem, monitor, "simulate")
    theta0 = np.asarray(problem.theta0 if theta0 is None else theta0, dtype=float)
    if theta0.shape != (problem.dim,):
        fail("theta0", "simulate", f"an array of shape ({problem.dim},)", theta0.shape)

    C = len(schedules)
    P = R * C
    row_cfg = np.tile(np.arange(C), R)                  # row p = r*C + c
    run = _Rows(problem, _rows_schedule(stack_schedules(schedules), row_cfg), np.tile(theta0, (P, 1)), keep_trace)
    sampler = make_sampler(problem, variance, P, seed)

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
        g = problem.minibatch_grad(run.th, b, StepRandom(seed, t, threads=threads), sampler=sampler, rows=run.W)
        due = check_due(run.sch, st)
        if check_order == "before_update":
            value = _measure(problem, run.th, due, norm if observed else None, mon_size, seed, t)
            run.st, ev = advance(run.sch, st, b, norm=value, check_cost=check_cost)
            g *= run.st.lr[:, None]
        else:
            g *= st.lr[:, None]
        run.th -= g
        observed = (t + 1) % observe_every == 0
        if observed:           # θ_{t+1} was produced by the samples up to and including this step's b
            loss, norm = run.observe(t + 1, samples=st.samples + b if check_order == "after_update" else None)
        if check_order == "after_update":
            value = _measure(problem, run.th, due, norm if observed else None, mon_size, seed, t)
            run.st, ev = advance(run.sch, st, b, norm=value, check_cost=check_cost)
        run.checked(due, ev)
        t += 1
        loss, norm, done = run.after_step(observed, eps, stop_at_hit, loss, norm, done)

    config = {
        "problem": problem.spec(), "schedules": [s.to_dict() for s in schedules], "eps": eps, "replicates": R,
        "seed": seed, "max_steps": max_steps, "budget": budget, "budget_counts": budget_counts,
        "variance": variance.to_dict(), "monitor": list(monitor) if monitor != "exact" else "exact",
        "check_cost": int(check_cost), "observe_every": observe_every, "keep_trace": keep_trace,
        "stop_at_hit": stop_at_hit, "check_order": check_order, "theta0_is_default": bool(
            np.array_equal(theta0, problem.theta0)), "stop_reasons": list(STOP_REASONS),
    }
    return run.result(config, R, C, wall_time=time.perf_counter() - t_start)


def _checked_numbers(eps, replicates, seed, max_steps, budget, observe_every, threads):
    """The numeric arguments of :func:`simulate`, checked (threads: at most 2 by default)."""
    where = "simulate"
    eps = float(check_positive(eps, "eps", where, reason="the target is ||grad f|| <= eps"))
    R = check_integer(replicates, "replicates", where, minimum=1)
    seed = check_integer(seed, "seed", where, minimum=0)
    max_steps = check_integer(max_steps, "max_steps", where, minimum=1)
    if budget is not None:
        budget = check_integer(budget, "budget", where, minimum=1, reason="a budget counts samples")
    observe_every = check_integer(observe_every, "observe_every", where, minimum=1)
    threads = min(2, os.cpu_count() or 1) if threads is None else check_integer(threads, "threads", where, minimum=1)
    return eps, R, seed, max_steps, budget, observe_every, threads


def _monitor_cost(problem: Problem, monitor, where: str):
    """(subset size s or None, SFO charged per check) of ``monitor``: "exact" or ("subsample", s)."""
    if monitor == "exact":
        return None, problem.full_gradient_cost
    if isinstance(monitor, (tuple, list)) and len(monitor) == 2 and monitor[0] == "subsample":
        mon_size = check_integer(monitor[1], "monitor[1]", where, minimum=1)
        if problem.n is not None and mon_size > problem.n:
            fail("monitor", where, f"('subsample', s) with s <= n = {problem.n}", monitor)
        return mon_size, mon_size
    fail("monitor", where, "'exact' or ('subsample', s)", monitor)


class _Rows:
    """The P = R·C rows of one simulation: the working set and what is recorded per row.

    ``W`` holds the global ids of the rows still running; ``th``, ``st`` and ``sch`` are theirs
    (row i of each belongs to row ``W[i]``). Per-row outputs are indexed by global id, so rows
    can leave the working set (:meth:`compact`) without moving what was recorded.
    """

    _INT_FIELDS = ("hit_step", "hit_sfo", "hit_check_sfo", "steps", "sfo", "check_sfo", "final_stage",
                   "final_batch_size")

    def __init__(self, problem: Problem, sch: Schedule, th: np.ndarray, keep_trace: bool, st=None):
        P = th.shape[0]
        self.problem, self.sch, self.th, self.keep_trace = problem, sch, th, keep_trace
        self.st = initial_state(sch) if st is None else st  # st: rows driven by something else (policies)
        self.W = np.arange(P)
        self.out = {k: np.full(P, -1, dtype=np.int64) for k in self._INT_FIELDS}
        self.out["checks"] = np.zeros(P, dtype=np.int64)
        self.out["stop_reason"] = np.zeros(P, dtype=np.int64)
        for k in ("final_norm", "final_loss", "final_lr"):
            self.out[k] = np.full(P, np.nan)
        self.min_norm = np.full(P, np.inf)
        self.sigma2_max = np.full(P, -np.inf)
        self.trans_step = np.full((P, 4), -1, dtype=np.int64)
        self.trans_sfo = np.full((P, 4), -1, dtype=np.int64)
        self.trace = {"step": [], "norm": [], "loss": [], "sfo": []}

    def observe(self, t: int, samples=None):
        """Exact f, ‖∇f‖, σ² at the working rows' θ; updates the minimum, the supremum and the trace.
        ``samples``: the training samples that produced θ (default: the state's count, which is that
        once the rule has counted the step)."""
        W, P = self.W, self.min_norm.size
        loss, norm, s2 = self.problem.observe(self.th)
        self.min_norm[W] = np.minimum(self.min_norm[W], np.where(np.isfinite(norm), norm, np.inf))
        self.sigma2_max[W] = np.maximum(self.sigma2_max[W], np.where(np.isfinite(s2), s2, -np.inf))
        if self.keep_trace:
            for key, values, fill, dtype in (("norm", norm, np.nan, float), ("loss", loss, np.nan, float),
                                             ("sfo", self.st.samples if samples is None else samples, -1,
                                              np.int64)):
                row = np.full(P, fill, dtype=dtype)
                row[W] = values
                self.trace[key].append(row)
            self.trace["step"].append(t)
        return loss, norm

    def begin(self, eps: float, stop_at_hit: bool):
        """Observe θ₀; rows already at ‖∇f‖ ≤ ε hit at step 0 (and stop with ``stop_at_hit``), rows with a
        non-finite norm stop as diverged. Returns (loss, norm, done)."""
        loss, norm = self.observe(0)
        hit0 = self.hits(norm <= eps)
        bad = ~np.isfinite(norm)
        self.stop(hit0 & stop_at_hit, _HIT, loss, norm)
        self.stop(bad, _DIVERGED, loss, norm)
        return loss, norm, (hit0 & stop_at_hit) | bad

    def limits(self, t: int, max_steps: int, budget, budget_counts: str, observed: bool, loss, norm):
        """The limits before step t: at ``max_steps`` every working row stops ("end"); with a ``budget``,
        the rows whose next step would pass it stop ("budget", with their mask); else "go". Rows that stop
        are observed first when step t was not. Returns (what, loss, norm, mask)."""
        if t >= max_steps:
            if not observed:
                loss, norm = self.observe(t)
            self.stop(np.ones(self.W.size, dtype=bool), _MAX, loss, norm)
            return "end", loss, norm, None
        if budget is not None:
            st = self.st
            spent = st.samples + (st.check_samples if budget_counts == "total" else 0)
            broke = spent + st.batch_size > budget
            if broke.any():
                if not observed:
                    loss, norm = (self.observe(t) if broke.all()
                                  else _observe_rows(self.problem, self.th, broke, loss, norm))
                self.stop(broke, _BUDGET, loss, norm)
                return "budget", loss, norm, broke
        return "go", loss, norm, None

    def after_step(self, observed: bool, eps: float, stop_at_hit: bool, loss, norm, done):
        """After a step: on an observed θ, the rows first at ‖∇f‖ ≤ ε hit (and stop with ``stop_at_hit``)
        and rows with a non-finite norm stop as diverged; rows the rule stopped stop (observed first if
        this θ was not). Returns (loss, norm, done)."""
        if observed:
            first = self.hits((norm <= eps) & (self.out["hit_step"][self.W] < 0))
            bad = ~np.isfinite(norm)
            hit_stop = first & stop_at_hit
            self.stop(hit_stop, _HIT, loss, norm)
            self.stop(bad, _DIVERGED, loss, norm)
            done = hit_stop | bad
        rule_stop = np.asarray(self.st.stopped) & ~done
        if rule_stop.any():
            if not observed:
                loss, norm = _observe_rows(self.problem, self.th, rule_stop, loss, norm)
            self.stop(rule_stop, _RULE, loss, norm)
            done = done | rule_stop
        return loss, norm, done

    def hits(self, first: np.ndarray) -> np.ndarray:
        """Record working rows ``first`` as hitting ε now (step, SFO, check SFO); returns ``first``."""
        g, st = self.W[first], self.st
        self.out["hit_step"][g] = st.step[first]
        self.out["hit_sfo"][g] = st.samples[first]
        self.out["hit_check_sfo"][g] = st.check_samples[first]
        return first

    def stop(self, mask: np.ndarray, reason: int, loss: np.ndarray, norm: np.ndarray) -> None:
        """Record the final fields of working rows ``mask`` and their stop reason."""
        g, st, out = self.W[mask], self.st, self.out
        out["stop_reason"][g] = reason
        out["steps"][g] = st.step[mask]
        out["sfo"][g] = st.samples[mask]
        out["check_sfo"][g] = st.check_samples[mask]
        out["final_stage"][g] = st.stage[mask]
        out["final_batch_size"][g] = st.batch_size[mask]
        out["final_lr"][g] = st.lr[mask]
        out["final_loss"][g] = loss[mask]
        out["final_norm"][g] = norm[mask]

    def checked(self, due: np.ndarray, ev: np.ndarray) -> None:
        """Count the checks of this step and record the stage transitions it made."""
        self.out["checks"][self.W[due]] += 1
        moved = np.isin(ev, _MOVES)
        if not moved.any():
            return
        m = self.st.stage[moved]
        width = self.trans_step.shape[1]
        if m.max() > width:
            extra = max(m.max(), 2 * width) - width
            self.trans_step = np.pad(self.trans_step, ((0, 0), (0, extra)), constant_values=-1)
            self.trans_sfo = np.pad(self.trans_sfo, ((0, 0), (0, extra)), constant_values=-1)
        self.trans_step[self.W[moved], m - 1] = self.st.step[moved]
        self.trans_sfo[self.W[moved], m - 1] = self.st.samples[moved]

    def compact(self, keep: np.ndarray, loss: np.ndarray, norm: np.ndarray):
        """Drop the stopped rows from the working set; returns the kept rows' (loss, norm)."""
        self.W, self.th = self.W[keep], self.th[keep]
        self.st = type(self.st)(*(v[keep] for v in self.st))
        self.sch = _rows_schedule(self.sch, np.flatnonzero(keep))
        return loss[keep], norm[keep]

    def result(self, config: dict, R: int, C: int, *, wall_time: float) -> SimulationResult:
        """The recorded rows as a :class:`SimulationResult` of (R, C) grids (row p = r·C + c)."""
        def grid(a):
            return a.reshape(R, C, *a.shape[1:])

        T = len(self.trace["step"])

        def traced(key, dtype):
            return np.asarray(self.trace[key], dtype=dtype).reshape(T, R, C) if self.keep_trace \
                else np.zeros((0, R, C), dtype=dtype)

        used = int(np.max(np.sum(self.trans_step >= 0, axis=1), initial=0))
        out = self.out
        return SimulationResult(
            config=config,
            hit=grid(out["hit_step"] >= 0),
            **{k: grid(out[k]) for k in (*self._INT_FIELDS, "checks", "stop_reason", "final_norm", "final_loss",
                                         "final_lr")},
            min_norm=grid(self.min_norm), sigma2_max=grid(self.sigma2_max),
            transition_step=grid(self.trans_step[:, :used]), transition_sfo=grid(self.trans_sfo[:, :used]),
            trace_step=np.asarray(self.trace["step"], dtype=np.int64),
            trace_norm=traced("norm", float), trace_loss=traced("loss", float), trace_sfo=traced("sfo", np.int64),
            wall_time=wall_time,
        )


def _observe_rows(problem, th, mask, loss, norm):
    """Exact (loss, norm) refreshed on ``mask`` rows only (for rows stopping between observations)."""
    loss, norm = loss.copy(), norm.copy()
    l_m, n_m, _ = problem.observe(th[mask])
    loss[mask], norm[mask] = l_m, n_m
    return loss, norm


def _measure(problem, th, due, exact_norm, mon_size, seed, t):
    """The norm the rule's check sees on ``due`` rows (NaN elsewhere, ignored by the rule), or None."""
    if not np.any(due):
        return None
    value = np.full(th.shape[0], np.nan)
    if mon_size is None:
        value[due] = exact_norm[due] if exact_norm is not None else problem.grad_norm(th[due])
    else:
        rng = StepRandom(seed + 1_000_003, t)
        g = problem.subsample_grad(th[due], mon_size, rng)
        value[due] = np.sqrt(np.einsum("ij,ij->i", g, g))
    return value
