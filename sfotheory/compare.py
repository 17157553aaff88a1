r"""Algorithm 2 against its baselines and its peers, tuned on one grid, to the same targets ε, in expectation.

The criterion is the paper's: a policy reaches ε at the first step t at which the expected
gradient norm is at most ε, estimated by the mean over R replicates,

.. math::

    t^\star(\varepsilon) = \min\Bigl\{t \in \mathcal T :\ \frac1R \sum_{r=1}^R \|\nabla f(\theta^{(r)}_t)\| \le \varepsilon\Bigr\},
    \qquad
    N(\varepsilon) = \frac1R \sum_{r} N^{(r)}_{t^\star}, \qquad
    N_{\rm meas}(\varepsilon) = \frac1R \sum_{r} \bigl(N^{(r)}_{t^\star} + M^{(r)}_{t^\star}\bigr),

with 𝒯 the observed steps (every k-th), N⁽ʳ⁾_t the training samples that produced θ⁽ʳ⁾_t
(Σ_{s<t} b_s) and M⁽ʳ⁾_t the samples the policy's own measurements cost by then (Algorithm 2's
exact checks, ⌊t/τ⌋ of them at n each on a finite sum; the peers' batch statistics cost none).
Steps to ε is t*(ε) itself. The means run over replicates that are all still running: a run
stopped by its policy (AdaScale's horizon, a stall limit) keeps its last θ; a diverged run counts
as ‖∇f‖ = ∞; a run that spent its budget or its steps leaves the mean undefined from then on, so
a target first met after that counts as not reached.

Intervals: the percentile bootstrap over replicates. Each resample draws R replicate indices
with replacement (one draw per resample, used for every policy) and recomputes t*, N and N_meas
from the resampled mean; the interval is the (α/2, 1 − α/2) quantiles of the resamples, ∞ when
more than α/2 of them never reach ε. ``reached`` is the fraction of replicates whose own
‖∇f(θ_t)‖ ≤ ε at some observed t.

Tuning, on replicates of their own (seed + 1, not the reported ones): per family
(:mod:`sfotheory.compare_grid`), the grid point with the least training SFO N(ε_tune) to the
smallest target ε_tune that some grid point of the family reaches (ties: fewer steps, then the
earlier grid point); when no grid point reaches even the largest target, the one with the least
min_t of the mean ‖∇f(θ_t)‖ (:func:`pick_tuned`). The chosen points are then run on the reported
replicates (seed). Each family is a simulation of its own (:func:`simulate_groups`), and every
simulation draws step t's numbers from (seed, t): the families share one random stream (the same
draws wherever their batch sizes agree), and nothing depends on how many processes run them.

>>> steps = np.array([0, 10, 20, 30])
>>> norms = np.array([[2.0, 2.0], [1.2, 0.6], [0.5, 0.7], [0.4, 0.3]])[:, :, None]    # [t, replicate, policy]
>>> sfo = (steps[:, None, None] * np.array([8, 16])[None, :, None]).astype(float)    # b = 8 and b = 16
>>> p = mean_passage(steps, norms, sfo, sfo, eps=[1.0, 0.5], weights=np.ones((1, 2)))
>>> p.steps[:, 0, 0].tolist(), p.sfo[:, 0, 0].tolist()         # mean 0.9 at t = 10; 0.35 at t = 30
([10.0, 30.0], [120.0, 360.0])
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import NamedTuple

import numpy as np

from .compare_grid import ETA_FACTORS, FAMILIES, GridContext, candidates
from .policies import needs
from .problems import Problem
from .simulate import _DIVERGED, _RULE
from .simulate_policies import PolicyResult, simulate_policies
from .validation import check_in_range, check_integer, check_positive, fail

__all__ = ["Measured", "Passage", "Traces", "bootstrap_weights", "complete_traces", "mean_passage", "measure_groups",
           "pick_tuned", "process_pool", "run_comparison", "simulate_groups"]

#: the statistics of the training batch (per-sample gradients) a policy may read
BATCH_STATISTICS = ("grad_sq", "trace_var", "inner_var")


class Traces(NamedTuple):
    """Observed steps (T,) and, per [observation, replicate, policy], ‖∇f‖, training SFO, SFO with measurement."""

    step: np.ndarray
    norm: np.ndarray
    sfo: np.ndarray
    measured: np.ndarray


class Passage(NamedTuple):
    """t*, N and N_meas per [target, policy, weight row] (``inf`` where the mean never reaches ε)."""

    steps: np.ndarray
    sfo: np.ndarray
    measured: np.ndarray


def complete_traces(result: PolicyResult) -> Traces:
    """The result's traces with the stopped runs filled in as the module docstring states.

    Also rebuilds each run's measurement SFO at every observation from its policy's check
    interval τ and cost (the simulator records it at the end only) and checks the rebuild
    against that record.
    """
    step = np.asarray(result.trace_step, dtype=np.int64)
    norm = np.array(result.trace_norm, dtype=float)
    sfo = np.array(result.trace_sfo, dtype=float)
    ran = step[:, None, None] <= result.steps[None]              # observations made while the run was running
    sfo[~ran] = np.nan
    norm[ran & ~np.isfinite(norm)] = np.inf
    kept = (result.stop_reason == _RULE)[None] & ~ran
    norm = np.where(kept, result.final_norm[None], norm)
    sfo = np.where(kept, result.sfo[None].astype(float), sfo)
    norm = np.where((result.stop_reason == _DIVERGED)[None] & ~ran, np.inf, norm)
    cost = np.array([needs(p).check_cost(result.config["check_cost"]) for p in result.policies], dtype=float)
    tau = np.array([needs(p).tau for p in result.policies], dtype=np.int64)
    last = np.minimum(step[:, None, None], result.steps[None])
    checks = (last // tau) * cost
    rebuilt = (result.steps // tau) * cost
    if not np.array_equal(rebuilt, result.check_sfo.astype(float)):
        raise RuntimeError("the measurement SFO rebuilt from (tau, cost) differs from the simulator's record")
    return Traces(step=step, norm=norm, sfo=sfo, measured=sfo + checks)


def bootstrap_weights(replicates: int, resamples: int, seed: int) -> np.ndarray:
    """Row 0: every replicate once (the estimate); rows 1..B: multinomial counts of a resample with replacement."""
    rng = np.random.default_rng([seed, 7])
    draws = rng.multinomial(replicates, np.full(replicates, 1.0 / replicates), size=resamples)
    return np.vstack([np.ones((1, replicates)), draws]).astype(float)


def _weighted_mean(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ_r w_br x[t, r, c] / R as [t, c, b]; NaN where a weighted entry is NaN, else ∞ where one is ∞."""
    T, R, C = x.shape
    flat = np.moveaxis(x, 1, 2).reshape(T * C, R)
    finite = np.isfinite(flat)
    mean = np.where(finite, flat, 0.0) @ weights.T / R
    inf = (np.isposinf(flat).astype(float) @ weights.T) > 0
    nan = (np.isnan(flat).astype(float) @ weights.T) > 0
    mean = np.where(inf, np.inf, mean)
    mean = np.where(nan, np.nan, mean)
    return mean.reshape(T, C, -1)


def mean_passage(step, norm, sfo, measured, eps, weights) -> Passage:
    """t*(ε), N(ε), N_meas(ε) of the module docstring for every target and every weight row.

    ``norm``, ``sfo``, ``measured`` have shape [T, R, C]; ``weights`` [W, R] (a row of ones is
    the plain mean over replicates; :func:`bootstrap_weights` gives resamples). Returns arrays of
    shape [E, C, W].
    """
    step = np.asarray(step)
    eps = np.asarray(eps, dtype=float)
    weights = np.asarray(weights, dtype=float)
    R = norm.shape[1]
    mean = _weighted_mean(norm, weights)                                   # [T, C, W]
    below = mean[None] <= eps[:, None, None, None]                         # [E, T, C, W]; NaN never counts
    first = np.argmax(below, axis=1)                                       # [E, C, W]
    reached = np.take_along_axis(below, first[:, None], axis=1)[:, 0]
    C = norm.shape[2]
    cols = np.arange(C)[None, :, None]

    def at_first(x):
        per = np.moveaxis(np.where(np.isfinite(x), x, 0.0), 1, 2)[first, cols]        # [E, C, W, R]
        return np.where(reached, np.einsum("ecwr,wr->ecw", per, weights) / R, np.inf)

    return Passage(steps=np.where(reached, step[first].astype(float), np.inf), sfo=at_first(sfo),
                   measured=at_first(measured))


def pick_tuned(eps, sfo, steps, floor) -> tuple[int, float | None, str]:
    """The tuning rule: (index of the chosen grid point, ε_tune or None, the rule applied, in words).

    ``sfo`` and ``steps`` have shape [E, K] (targets × grid points, ``inf`` = not reached);
    ``floor`` [K] is min_t of the mean ‖∇f(θ_t)‖. The chosen point has the least training SFO to
    the smallest ε any point reaches; ties go to fewer steps, then to the earlier point; with no
    target reached, the least floor.

    >>> pick_tuned([0.1, 0.05], np.array([[50.0, 40.0, 60.0], [np.inf, 90.0, 80.0]]),
    ...            np.array([[5.0, 4.0, 6.0], [np.inf, 9.0, 8.0]]), np.array([0.09, 0.04, 0.03]))
    (2, 0.05, 'least training SFO to eps = 0.05')
    """
    eps = np.asarray(eps, dtype=float)
    sfo = np.asarray(sfo, dtype=float)
    steps = np.asarray(steps, dtype=float)
    order = np.argsort(eps)
    for e in order:
        ok = np.isfinite(sfo[e])
        if ok.any():
            keys = [(sfo[e, k], steps[e, k], k) for k in np.flatnonzero(ok)]
            k = min(keys)[2]
            return int(k), float(eps[e]), f"least training SFO to eps = {eps[e]:g}"
    k = int(np.argmin(np.where(np.isnan(floor), np.inf, floor)))
    return k, None, "no target reached: least min_t mean ||grad f||"


def _cpu() -> float:
    """CPU seconds of this process and of its finished child processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _reads_batch(policy) -> bool:
    return bool(set(needs(policy).statistics) & set(BATCH_STATISTICS))


def _simulate_group(problem, policies, kwargs):
    """One simulation (what a worker process runs); returns the result and its CPU time."""
    c0 = time.process_time()
    res = simulate_policies(problem, policies, keep_trace=True, stop_at_hit=False, **kwargs)
    return res, time.process_time() - c0


def process_pool(jobs: int):
    """The pool :func:`simulate_groups` runs its simulations in: ``jobs`` spawned processes.

    Spawned, not forked (the parent may hold threads); each process imports the package once,
    so :func:`run_comparison` keeps one pool for both of its phases.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))


def simulate_groups(problem: Problem, groups, *, jobs: int = 1, progress=None, pool=None, **kwargs):
    """One simulation per group of policies (a family's grid, or one chosen policy), in ``jobs`` processes.

    The groups are fixed by the caller, not by ``jobs``, so the results do not depend on how
    many processes run them: each simulation draws step t's randomness from (seed, t) alone.
    A group whose policies read no per-sample statistic gets the plain mini-batch oracle, a
    half to a third of the cost of the per-sample one. The groups that read batch statistics
    (the costlier ones) are started first. Returns ``(results, cpu)``: one
    :class:`~sfotheory.simulate_policies.PolicyResult` per group, in order, and the CPU seconds
    of the simulations. ``progress`` (a :class:`~sfotheory.progress.Progress`) counts finished groups.
    ``pool``: a :func:`process_pool` to run them in (default: one of ``jobs`` processes, for this call).
    """
    groups = [list(g) for g in groups]
    tasks = [(problem, g, kwargs) for g in groups]
    order = sorted(range(len(tasks)), key=lambda i: (-any(_reads_batch(p) for p in groups[i]), -len(groups[i]), i))
    if jobs > 1 and len(tasks) > 1:
        from concurrent.futures import as_completed

        with contextlib.ExitStack() as stack:
            if pool is None:
                pool = stack.enter_context(process_pool(min(jobs, len(tasks))))
            futures = {pool.submit(_simulate_group, *tasks[i]): i for i in order}
            done = {}
            for fut in as_completed(futures):
                done[futures[fut]] = fut.result()
                _tick(progress, groups[futures[fut]])
    else:
        done = {}
        for i in order:
            done[i] = _simulate_group(*tasks[i])
            _tick(progress, groups[i])
    outs = [done[i] for i in range(len(tasks))]
    return [res for res, _ in outs], sum(cpu for _, cpu in outs)


def _tick(progress, group) -> None:
    if progress is not None:
        progress.update(1, last=f"{type(group[0]).__name__}×{len(group)}")


class Measured(NamedTuple):
    """The expectation criterion over all policies of a split run (:func:`measure_groups`)."""

    passage: Passage        #: [E, C, W]
    floor: np.ndarray       #: [C] min_t of the mean ‖∇f(θ_t)‖
    best: np.ndarray        #: [R, C] each replicate's least observed ‖∇f(θ_t)‖
    reasons: np.ndarray     #: [R, C] stop reasons
    check_cost: int         #: SFO of one exact check


def measure_groups(results, eps, weights) -> Measured:
    """:func:`mean_passage` on each simulation of :func:`simulate_groups`, concatenated in policy order.

    Each policy's t* uses its own simulation's observed steps (the same grid in all of them).
    """
    sizes = [res.configs for res in results]
    C = sum(sizes)
    R = weights.shape[1]
    E, W = len(eps), weights.shape[0]
    out = Passage(*(np.empty((E, C, W)) for _ in range(3)))
    floor, best = np.empty(C), np.empty((R, C))
    reasons = np.empty((R, C), dtype=object)
    for g, res in zip(np.split(np.arange(C), np.cumsum(sizes)[:-1]), results):
        tr = complete_traces(res)
        p = mean_passage(tr.step, tr.norm, tr.sfo, tr.measured, eps, weights)
        for full, part in zip(out, p):
            full[:, g] = part
        with np.errstate(invalid="ignore"):
            mean = np.mean(tr.norm, axis=1)
        floor[g] = np.nanmin(np.where(np.isnan(mean), np.inf, mean), axis=0)
        best[:, g] = np.nanmin(np.where(np.isnan(tr.norm), np.inf, tr.norm), axis=0)
        reasons[:, g] = res.reasons()
    return Measured(out, floor, best, reasons, int(results[0].config["check_cost"]))


def run_comparison(problem: Problem, families, eps, *, replicates: int = 64, tune_replicates: int = 8,
                   seed: int = 0, max_steps: int = 2000, budget: int = 100_000, observe_every: int | None = None,
                   b0: int = 8, resamples: int = 1000, confidence: float = 0.95, jobs: int = 1,
                   progress=None) -> dict:
    """Tune every family on its grid, run the chosen points, and measure them by the expectation criterion.

    Returns the record :class:`sfotheory.compare_result.ComparisonResult` is built from (plain
    data: lists, dicts, floats with ``inf`` for not reached). ``observe_every`` defaults to
    max(1, T // 400); the problem's exact monitor prices Algorithm 2's checks; ``jobs`` processes
    run the simulations of each phase, one per family (:func:`simulate_groups`); ``progress``
    (a :class:`~sfotheory.progress.Progress` of 2 × families units) counts the finished simulations.
    """
    where = "run_comparison"
    t_all, c_all = time.perf_counter(), _cpu()
    families = list(families)
    if not families or any(f not in FAMILIES for f in families) or len(set(families)) != len(families):
        fail("families", where, "distinct names among " + ", ".join(FAMILIES), families)
    eps_list = sorted({float(check_positive(e, "eps", where)) for e in np.atleast_1d(eps)}, reverse=True)
    R = check_integer(replicates, "replicates", where, minimum=2, reason="a bootstrap interval needs two")
    R_tune = check_integer(tune_replicates, "tune_replicates", where, minimum=1)
    seed = check_integer(seed, "seed", where, minimum=0)
    resamples = check_integer(resamples, "resamples", where, minimum=10)
    confidence = float(check_in_range(confidence, 0.0, 1.0, "confidence", where, low_strict=True))
    max_steps = check_integer(max_steps, "max_steps", where, minimum=1)
    jobs = check_integer(jobs, "jobs", where, minimum=1)
    observe_every = max(1, max_steps // 400) if observe_every is None else \
        check_integer(observe_every, "observe_every", where, minimum=1)
    ctx = GridContext.from_problem(problem, b0=b0, eps_min=eps_list[-1], max_steps=max_steps, budget=budget)
    grid = {f: candidates(f, ctx) for f in families}
    threads = max(1, min(2, os.cpu_count() or 1) // jobs)
    common = dict(eps=ctx.eps_min, max_steps=max_steps, budget=ctx.budget, observe_every=observe_every,
                  threads=threads)

    with process_pool(jobs) if jobs > 1 else contextlib.nullcontext() as pool:     # one pool, both phases
        t0 = time.perf_counter()
        parts, tune_cpu = simulate_groups(problem, [[c.policy for c in grid[f]] for f in families], jobs=jobs,
                                          replicates=R_tune, seed=seed + 1, progress=progress, pool=pool, **common)
        tune_wall = time.perf_counter() - t0
        tm = measure_groups(parts, eps_list, np.ones((1, R_tune)))
        tuning, chosen, start = {}, [], 0
        for f in families:
            k = len(grid[f])
            sl = slice(start, start + k)
            pick, eps_tune, rule = pick_tuned(eps_list, tm.passage.sfo[:, sl, 0], tm.passage.steps[:, sl, 0],
                                              tm.floor[sl])
            tuning[f] = {"chosen": pick, "eps_tune": eps_tune, "rule": rule, "candidates": [
                {**c.to_dict(), "steps": tm.passage.steps[:, start + i, 0].tolist(),
                 "sfo": tm.passage.sfo[:, start + i, 0].tolist(),
                 "measured": tm.passage.measured[:, start + i, 0].tolist(), "floor": float(tm.floor[start + i])}
                for i, c in enumerate(grid[f])]}
            chosen.append(grid[f][pick])
            start += k

        t0 = time.perf_counter()
        parts, eval_cpu = simulate_groups(problem, [[c.policy] for c in chosen], jobs=jobs, replicates=R, seed=seed,
                                          progress=progress, pool=pool, **common)
        eval_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = measure_groups(parts, eps_list, bootstrap_weights(R, resamples, seed))
    a = (1.0 - confidence) / 2
    rows = []
    for c, cand in enumerate(chosen):
        for e, target in enumerate(eps_list):
            row = {"policy": cand.family, "eps": target, "reached": float(np.mean(m.best[:, c] <= target))}
            for key, arr in zip(("steps", "sfo", "measured"), m.passage):
                lo, hi = np.quantile(arr[e, c, 1:], [a, 1 - a], method="inverted_cdf")
                row.update({key: float(arr[e, c, 0]), f"{key}_lo": float(lo), f"{key}_hi": float(hi)})
            rows.append(row)
    analysis = time.perf_counter() - t0
    return {
        "problem": problem.describe(), "eps": eps_list, "families": families,
        "settings": {"replicates": R, "tune_replicates": R_tune, "seed": seed, "tune_seed": seed + 1,
                     "max_steps": max_steps, "budget": ctx.budget, "observe_every": observe_every, "b0": ctx.b0,
                     "b_max": ctx.b_max, "g0": ctx.g0, "b_star": [ctx.b_star(f / ctx.L) for f in ETA_FACTORS],
                     "eta_factors": list(ETA_FACTORS), "resamples": resamples, "confidence": confidence,
                     "check_cost": m.check_cost, "jobs": jobs},
        "grid": {f: [c.to_dict() for c in grid[f]] for f in families},
        "tuning": tuning,
        "chosen": [c.to_dict() for c in chosen],
        "rows": rows,
        "stops": {cand.family: {reason: int(np.sum(m.reasons[:, c] == reason))
                                for reason in ("budget", "max_steps", "diverged", "rule_stopped")}
                  for c, cand in enumerate(chosen)},
        "timing": {"tuning_wall": tune_wall, "tuning_cpu": tune_cpu, "evaluation_wall": eval_wall,
                   "evaluation_cpu": eval_cpu, "analysis_wall": analysis,
                   "total_wall": time.perf_counter() - t_all,
                   "total_cpu": _cpu() - c_all},
    }
