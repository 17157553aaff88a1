"""Benchmark: the simulator against this machine's Gaussian draw rate, and against a per-replicate Python loop.

Claim 1: :func:`sfotheory.simulate.simulate` runs R replicates × C batch sizes as one array computation and is
much faster than looping over replicates, while computing the same thing (the same oracle law, the same stage
rule call per step, the same stopping at the first ‖∇f(θ_t)‖ ≤ ε or at max_steps).

Claim 2 (the limit, measured in the same run): on the noisy quadratic a simulated step of one working row draws
exactly d standard normals (``NoisyQuadratic.minibatch_grad``: one N(0, I_d) vector per row, scaled to the law
N(0, φ(b)Σ/b) of the batch mean, so the count does not grow with b; nothing else in this sweep draws a normal:
constant schedules make no checks), so the sweep draws d · Σ_t k_t normals (k_t the rows working at step t) and
its throughput in draws/s is that count over its wall time. The limit is what numpy's ``Generator`` (PCG64, the
simulator's bit generator) achieves with nothing else to do: (a) one generator filling a preallocated block of
the simulator's size (one of ``StepRandom``'s two row blocks, R·C/2 rows × d), one thread; (a') the sweep's own
draws replayed alone, ``StepRandom(seed, t, threads).standard_normal((k_t, d))`` for every step t (two
generators seeded per step, filled on ``threads`` threads, exactly as the sweep calls it). The sweep, (a') and
(a) alternate over ``rounds`` rounds in one process (the machine may be shared) and the best of each is kept.
Target: the sweep at ≥ 70% of (a'); the profile of one more sweep says where the rest of its time goes.

Setup (one hyperparameter dict below): noisy quadratic, d = 1000, κ = 1, σ² = 1, f(θ₀) − f_* = 1; η = 0.1,
ε = 0.05 (theory b* = 2C₂/ε² = 42.1); 16 batch sizes log-spaced over [b*/8, 8b*]; 32 replicates each;
max_steps = 2000 (batch sizes below the noise floor C₂/ε² run all of them). Both versions draw their Gaussian
noise from numpy generators; the random streams differ, so the per-b medians agree statistically, not bit for bit.

    .venv/bin/python benchmarks/bench_simulate.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

import numpy as np

from sfotheory.complexity import critical_batch_size
from sfotheory.problems import StepRandom, make_problem
from sfotheory.rule import advance, check_due, constant, initial_state
from sfotheory.simulate import simulate

from _report import emit  # benchmarks/_report.py: run as python benchmarks/<name>.py

SETUP = {"dim": 1000, "kappa": 1.0, "sigma2": 1.0, "gap": 1.0, "eta": 0.1, "eps": 0.05, "batch_sizes": 16,
         "replicates": 32, "max_steps": 2000, "seed": 0}
#: A/B rounds (sweep, its draws alone, block rate), seconds per block-rate measurement, and the target fraction
LIMIT = {"rounds": 3, "seconds": 1.0, "target": 0.70}


def grid(q, eta, eps, num):
    b_star = critical_batch_size(q.constants(), eta, eps)
    return np.unique(np.round(np.geomspace(b_star / 8, 8 * b_star, num)).astype(int)), b_star


def vectorised(q, bs, cfg):
    res = simulate(q, [constant(b0=int(b), eta0=cfg["eta"]) for b in bs], eps=cfg["eps"],
                   replicates=cfg["replicates"], seed=cfg["seed"], max_steps=cfg["max_steps"], keep_trace=False)
    return np.where(res.hit, res.hit_sfo, np.inf), res


def naive(q, bs, cfg):
    """The same computation, one replicate at a time (scalar rule state, one d-vector)."""
    lam, sd = q.eigenvalues, q.noise_sd
    out = np.full((cfg["replicates"], len(bs)), np.inf)
    for c, b in enumerate(bs):
        sched = constant(b0=int(b), eta0=cfg["eta"])
        for r in range(cfg["replicates"]):
            rng = np.random.default_rng([cfg["seed"], c, r])
            theta = q.theta0.copy()
            state = initial_state(sched)
            for _ in range(cfg["max_steps"]):
                bt = state.batch_size
                g = lam * theta + sd * (rng.standard_normal(q.dim) / np.sqrt(bt))
                due = check_due(sched, state)
                theta = theta - state.lr * g
                norm = float(np.sqrt(np.dot(lam * theta, lam * theta)))
                state, _ = advance(sched, state, bt, norm=norm if due else None)
                if norm <= cfg["eps"]:
                    out[r, c] = state.samples
                    break
    return out


# -- the limit ---------------------------------------------------------------------------------------------

def block_rate(shape, seconds):
    """(a): draws/s of one generator filling a preallocated array of ``shape`` again and again, one thread."""
    rng = np.random.default_rng(0)
    out = np.empty(shape)
    rng.standard_normal(out=out)
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        rng.standard_normal(out=out)
        calls += 1
    return calls * out.size / elapsed


def working_rows(res):
    """k_t, the rows the sweep had working at step t (a row that stopped after s steps drew at steps 0..s-1)."""
    steps = np.sort(res.steps.ravel())
    return steps.size - np.searchsorted(steps, np.arange(int(steps[-1])), side="right")


def pattern_rate(working, dim, seed, threads):
    """(a'): draws/s of the sweep's own draws and nothing else: StepRandom(seed, t, threads).standard_normal((k_t, d))
    for every step t."""
    StepRandom(seed, 0, threads=threads).standard_normal((int(working[0]), dim))     # start the thread pool
    t0 = time.perf_counter()
    for t, k in enumerate(working):
        StepRandom(seed, t, threads=threads).standard_normal((int(k), dim))
    return int(working.sum()) * dim / (time.perf_counter() - t0)


def profile_shares(q, bs, cfg):
    """Shares of one more sweep's wall time (under cProfile, so approximate): drawing and the rest."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    vectorised(q, bs, cfg)
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats                  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)

    def cum(file_end, name):
        return sum(v[3] for (f, _, n), v in stats.items() if n == name and f.replace(os.sep, "/").endswith(file_end))

    draw = cum("problems/base.py", "standard_normal")                    # StepRandom: seeding, threads, filling
    oracle = cum("problems/quadratic.py", "minibatch_grad") - draw       # φ(b)/b scaling and θλ, around the draw
    observe = cum("problems/quadratic.py", "observe")                    # f and ‖∇f‖ at every step
    rule = cum("sfotheory/rule.py", "advance") + cum("sfotheory/rule.py", "check_due")
    rest = wall - draw - oracle - observe - rule                          # θ update, stopping, bookkeeping
    return wall, {"drawing the normals (StepRandom.standard_normal)": draw,
                  "oracle arithmetic around the draw (scale by sqrt(phi/b) and sd, add A theta)": oracle,
                  "exact observation of f and ||grad f|| (every step)": observe,
                  "stage rule (advance, check_due)": rule,
                  "the loop's own work (eta g, theta update, stopping, compaction)": rest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 replicates and 500 steps (a smoke run)")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args()
    cfg = dict(SETUP)
    if args.quick:
        cfg.update(replicates=8, max_steps=500)
    text = io.StringIO()
    q = make_problem("quadratic", dim=cfg["dim"], kappa=cfg["kappa"], sigma2=cfg["sigma2"], gap=cfg["gap"],
                     seed=cfg["seed"])
    bs, b_star = grid(q, cfg["eta"], cfg["eps"], cfg["batch_sizes"])
    d, rows, threads = cfg["dim"], cfg["replicates"] * len(bs), min(2, os.cpu_count() or 1)   # simulate's default
    print(f"setup: {cfg}; theory b* = {b_star:.1f}; grid = {bs.tolist()}", file=text)

    # A/B in one process: sweep, its draws alone, the block rate, twice over; the best of each is kept.
    t_vec, rate_pattern, rate_block = [], [], []
    for _ in range(LIMIT["rounds"]):
        t = time.perf_counter()
        n_vec, res = vectorised(q, bs, cfg)
        t_vec.append(time.perf_counter() - t)
        working = working_rows(res)
        rate_pattern.append(pattern_rate(working, d, cfg["seed"], threads))
        rate_block.append(block_rate((rows - rows // 2, d), LIMIT["seconds"]))
    t = time.perf_counter()
    n_naive = naive(q, bs, cfg)
    t_naive = time.perf_counter() - t

    print(f"{'b':>5} {'median N vectorised':>20} {'median N naive':>15} {'hit% vec':>9} {'hit% naive':>10}", file=text)
    for i, b in enumerate(bs):
        print(f"{b:>5} {np.median(n_vec[:, i]):>20.6g} {np.median(n_naive[:, i]):>15.6g} "
              f"{100 * np.isfinite(n_vec[:, i]).mean():>9.0f} {100 * np.isfinite(n_naive[:, i]).mean():>10.0f}",
              file=text)
    print(f"vectorised: {min(t_vec):.2f} s   naive loop: {t_naive:.2f} s   ratio: {t_naive / min(t_vec):.1f}x",
          file=text)

    draws = d * int(working.sum())
    rate, limit, block = draws / min(t_vec), max(rate_pattern), max(rate_block)

    def runs(values, unit=1e6, fmt="{:.1f}"):
        return ", ".join(fmt.format(v / unit) for v in values)

    print(f"\nthe limit, in standard normals per second (numpy {np.__version__}, PCG64; {LIMIT['rounds']} rounds of "
          f"sweep / its draws alone / block, the best of each kept):", file=text)
    print(f"  (a)  one generator filling a preallocated ({rows - rows // 2}, {d}) block, 1 thread: "
          f"{block / 1e6:7.1f} M/s  (rounds: {runs(rate_block)})", file=text)
    print(f"  (a') the sweep's draws alone, StepRandom(seed, t, threads={threads}).standard_normal((k_t, {d})) for "
          f"each step t with its k_t working rows: {limit / 1e6:7.1f} M/s  (rounds: {runs(rate_pattern)})", file=text)
    print(f"  (b)  the sweep: {d} draws per working row per step (whatever b) x {int(working.sum())} row-steps = "
          f"{draws:.4g} draws in {min(t_vec):.2f} s: {rate / 1e6:7.1f} M/s  (rounds: "
          f"{runs([draws / t for t in t_vec])})", file=text)
    share = rate / limit
    verdict = "meets" if share >= LIMIT["target"] else "does not meet"
    print(f"  (c)  (b)/(a') = {100 * share:.0f}% of the limit ({100 * rate / (threads * block):.0f}% of {threads} x "
          f"(a)): {verdict} the target >= {100 * LIMIT['target']:.0f}%", file=text)
    wall, parts = profile_shares(q, bs, cfg)
    print(f"where the sweep's time goes (one more sweep under cProfile, {wall:.2f} s; shares of its wall time):",
          file=text)
    for name, sec in parts.items():
        print(f"  {100 * sec / wall:5.1f}%  {sec:6.2f} s  {name}", file=text)
    emit(text.getvalue(), args.out)


if __name__ == "__main__":
    main()
