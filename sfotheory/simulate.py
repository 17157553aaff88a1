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

import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

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
        meta = {"format": _FORMAT, "config": self.config, "wall_time": self.wall_time}
        base.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=_json_default))
        return base.with_suffix(".npz"), base.with_suffix(".json")

    @classmethod
    def load(cls, path) -> SimulationResult:
        """Inverse of :meth:`save`."""
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        meta = json.loads(base.with_suffix(".json").read_text())
        if meta.get("format") != _FORMAT:
            fail("path", "SimulationResult.load", f"a file written by SimulationResult.save ({_FORMAT})",
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


# -- the simulator ----------------------------------------------------------------------------------------

@np.errstate(over="ignore", invalid="ignore")  # a diverging run is reported (stop_reason), not warned about
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
    where = "simulate"
    t_start = time.perf_counter()
    schedules, variance = _validate(problem, schedules, variance, allow_unstable, where)
    eps = float(check_positive(eps, "eps", where, reason="the target is ||grad f|| <= eps"))
    R = check_integer(replicates, "replicates", where, minimum=1)
    seed = check_integer(seed, "seed", where, minimum=0)
    max_steps = check_integer(max_steps, "max_steps", where, minimum=1)
    if budget is not None:
        budget = check_integer(budget, "budget", where, minimum=1, reason="a budget counts samples")
    check_choice(budget_counts, ("training", "total"), "budget_counts", where)
    observe_every = check_integer(observe_every, "observe_every", where, minimum=1)
    check_choice(check_order, ("after_update", "before_update"), "check_order", where)
    if monitor == "exact":
        mon_size, check_cost = None, problem.full_gradient_cost
    elif isinstance(monitor, (tuple, list)) and len(monitor) == 2 and monitor[0] == "subsample":
        mon_size = check_integer(monitor[1], "monitor[1]", where, minimum=1)
        if problem.n is not None and mon_size > problem.n:
            fail("monitor", where, f"('subsample', s) with s <= n = {problem.n}", monitor)
        check_cost = mon_size
    else:
        fail("monitor", where, "'exact' or ('subsample', s)", monitor)
    threads = min(2, os.cpu_count() or 1) if threads is None else check_integer(threads, "threads", where, minimum=1)

    C = len(schedules)
    P = R * C
    stacked = stack_schedules(schedules)
    row_cfg = np.tile(np.arange(C), R)                  # row p = r*C + c
    W = np.arange(P)                                     # the working set (global row ids)
    sch = _rows_schedule(stacked, row_cfg)
    st = initial_state(sch)
    if theta0 is None:
        theta0 = problem.theta0
    theta0 = np.asarray(theta0, dtype=float)
    if theta0.shape != (problem.dim,):
        fail("theta0", where, f"an array of shape ({problem.dim},)", theta0.shape)
    th = np.tile(theta0, (P, 1))
    sampler = make_sampler(problem, variance, P, seed)

    # Per-row outputs (global).
    neg = lambda dt=np.int64: np.full(P, -1, dtype=dt)  # noqa: E731
    out = {k: neg() for k in ("hit_step", "hit_sfo", "hit_check_sfo", "steps", "sfo", "check_sfo",
                              "final_stage", "final_batch_size")}
    out["checks"] = np.zeros(P, dtype=np.int64)
    out["stop_reason"] = np.zeros(P, dtype=np.int64)
    for k in ("final_norm", "final_loss", "final_lr"):
        out[k] = np.full(P, np.nan)
    min_norm = np.full(P, np.inf)
    sigma2_max = np.full(P, -np.inf)
    trans_step = np.full((P, 4), -1, dtype=np.int64)
    trans_sfo = np.full((P, 4), -1, dtype=np.int64)
    tr_step, tr_norm, tr_loss, tr_sfo = [], [], [], []

    def observe(t):
        """Exact f, ‖∇f‖, σ² at the working rows' current θ; updates min/sup and the trace."""
        loss, norm, s2 = problem.observe(th)
        min_norm[W] = np.minimum(min_norm[W], np.where(np.isfinite(norm), norm, np.inf))
        sigma2_max[W] = np.maximum(sigma2_max[W], np.where(np.isfinite(s2), s2, -np.inf))
        if keep_trace:
            row = np.full(P, np.nan)
            row[W] = norm
            tr_norm.append(row)
            row = np.full(P, np.nan)
            row[W] = loss
            tr_loss.append(row)
            row = np.full(P, -1, dtype=np.int64)
            row[W] = st.samples
            tr_sfo.append(row)
            tr_step.append(t)
        return loss, norm

    def stop(mask, reason, loss, norm):
        """Record the final fields of working rows ``mask`` and mark them stopped."""
        g = W[mask]
        out["stop_reason"][g] = reason
        out["steps"][g] = st.step[mask]
        out["sfo"][g] = st.samples[mask]
        out["check_sfo"][g] = st.check_samples[mask]
        out["final_stage"][g] = st.stage[mask]
        out["final_batch_size"][g] = st.batch_size[mask]
        out["final_lr"][g] = st.lr[mask]
        out["final_loss"][g] = loss[mask]
        out["final_norm"][g] = norm[mask]

    loss, norm = observe(0)
    observed = True
    hit0 = norm <= eps
    out["hit_step"][W[hit0]] = 0
    out["hit_sfo"][W[hit0]] = 0
    out["hit_check_sfo"][W[hit0]] = 0
    done = (hit0 & stop_at_hit) | ~np.isfinite(norm)
    stop(hit0 & stop_at_hit, _HIT, loss, norm)
    stop(~np.isfinite(norm), _DIVERGED, loss, norm)

    t = 0
    while True:
        if done.any():                                   # compact the working set
            keep = ~done
            W, th = W[keep], th[keep]
            st = type(st)(*(v[keep] for v in st))
            sch = _rows_schedule(sch, np.flatnonzero(keep))
            loss, norm = loss[keep], norm[keep]
            done = np.zeros(W.size, dtype=bool)
        if W.size == 0:
            break
        if t >= max_steps:
            if not observed:
                loss, norm = observe(t)
            stop(np.ones(W.size, dtype=bool), _MAX, loss, norm)
            break
        b = st.batch_size
        if budget is not None:
            spent = st.samples + (st.check_samples if budget_counts == "total" else 0)
            broke = spent + b > budget
            if broke.any():
                if not observed:
                    loss, norm = observe(t) if broke.all() else _observe_rows(problem, th, broke, loss, norm)
                stop(broke, _BUDGET, loss, norm)
                done = broke
                continue
        rng = StepRandom(seed, t, threads=threads)
        g = problem.minibatch_grad(th, b, rng, sampler=sampler, rows=W)
        due = check_due(sch, st)
        lr = st.lr
        if check_order == "before_update":
            value = _measure(problem, th, due, norm if observed else None, mon_size, seed, t)
            st, ev = advance(sch, st, b, norm=value, check_cost=check_cost)
            g *= st.lr[:, None]
        else:
            g *= lr[:, None]
        th -= g
        observed = (t + 1) % observe_every == 0
        if observed:
            loss, norm = observe(t + 1)
        if check_order == "after_update":
            value = _measure(problem, th, due, norm if observed else None, mon_size, seed, t)
            st, ev = advance(sch, st, b, norm=value, check_cost=check_cost)
        out["checks"][W[due]] += 1
        moved = np.isin(ev, _MOVES)
        if moved.any():
            m = st.stage[moved]
            if m.max() > trans_step.shape[1]:
                extra = max(m.max(), 2 * trans_step.shape[1]) - trans_step.shape[1]
                trans_step = np.pad(trans_step, ((0, 0), (0, extra)), constant_values=-1)
                trans_sfo = np.pad(trans_sfo, ((0, 0), (0, extra)), constant_values=-1)
            trans_step[W[moved], m - 1] = st.step[moved]
            trans_sfo[W[moved], m - 1] = st.samples[moved]
        t += 1
        if observed:
            first = (norm <= eps) & (out["hit_step"][W] < 0)
            gh = W[first]
            out["hit_step"][gh] = st.step[first]
            out["hit_sfo"][gh] = st.samples[first]
            out["hit_check_sfo"][gh] = st.check_samples[first]
            bad = ~np.isfinite(norm)
            hit_stop = first & stop_at_hit
            stop(hit_stop, _HIT, loss, norm)
            stop(bad, _DIVERGED, loss, norm)
            done = hit_stop | bad
        rule_stop = np.asarray(st.stopped) & ~done
        if rule_stop.any():
            if not observed:
                loss, norm = _observe_rows(problem, th, rule_stop, loss, norm)
            stop(rule_stop, _RULE, loss, norm)
            done = done | rule_stop

    def grid(a):
        return a.reshape(R, C, *a.shape[1:])

    T = len(tr_step)
    traces = {
        "trace_step": np.asarray(tr_step, dtype=np.int64),
        "trace_norm": np.asarray(tr_norm).reshape(T, R, C) if keep_trace else np.zeros((0, R, C)),
        "trace_loss": np.asarray(tr_loss).reshape(T, R, C) if keep_trace else np.zeros((0, R, C)),
        "trace_sfo": np.asarray(tr_sfo, dtype=np.int64).reshape(T, R, C) if keep_trace
        else np.zeros((0, R, C), dtype=np.int64),
    }
    used = int(np.max(np.sum(trans_step >= 0, axis=1), initial=0))
    config = {
        "problem": problem.spec(), "schedules": [s.to_dict() for s in schedules], "eps": eps, "replicates": R,
        "seed": seed, "max_steps": max_steps, "budget": budget, "budget_counts": budget_counts,
        "variance": variance.to_dict(), "monitor": list(monitor) if monitor != "exact" else "exact",
        "check_cost": int(check_cost), "observe_every": observe_every, "keep_trace": keep_trace,
        "stop_at_hit": stop_at_hit, "check_order": check_order, "theta0_is_default": bool(
            np.array_equal(theta0, problem.theta0)), "stop_reasons": list(STOP_REASONS),
    }
    return SimulationResult(
        config=config,
        hit=grid(out["hit_step"] >= 0),
        **{k: grid(out[k]) for k in ("hit_step", "hit_sfo", "hit_check_sfo", "steps", "sfo", "check_sfo", "checks",
                                     "stop_reason", "final_norm", "final_loss", "final_stage", "final_batch_size",
                                     "final_lr")},
        min_norm=grid(min_norm), sigma2_max=grid(sigma2_max),
        transition_step=grid(trans_step[:, :used]), transition_sfo=grid(trans_sfo[:, :used]),
        **traces, wall_time=time.perf_counter() - t_start,
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
