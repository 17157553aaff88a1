"""Benchmark: a critical-batch-size sweep, vectorised simulator vs a naive per-replicate Python loop.

Claim: :func:`sfotheory.simulate.simulate` runs R replicates × C batch sizes as one array computation and is
much faster than looping over replicates, while computing the same thing (the same oracle law, the same stage
rule call per step, the same stopping at the first ‖∇f(θ_t)‖ ≤ ε or at max_steps).

Setup (one hyperparameter dict below): noisy quadratic, d = 1000, κ = 1, σ² = 1, f(θ₀) − f_* = 1; η = 0.1,
ε = 0.05 (theory b* = 2C₂/ε² = 42.1); 16 batch sizes log-spaced over [b*/8, 8b*]; 32 replicates each;
max_steps = 2000 (batch sizes below the noise floor C₂/ε² run all of them). Both versions draw their Gaussian
noise from numpy generators; the random streams differ, so the per-b medians agree statistically, not bit for bit.

    .venv/bin/python benchmarks/bench_simulate.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sfotheory.complexity import critical_batch_size
from sfotheory.problems import make_problem
from sfotheory.rule import advance, check_due, constant, initial_state
from sfotheory.simulate import simulate

SETUP = {"dim": 1000, "kappa": 1.0, "sigma2": 1.0, "gap": 1.0, "eta": 0.1, "eps": 0.05, "batch_sizes": 16,
         "replicates": 32, "max_steps": 2000, "seed": 0}


def grid(q, eta, eps, num):
    b_star = critical_batch_size(q.constants(), eta, eps)
    return np.unique(np.round(np.geomspace(b_star / 8, 8 * b_star, num)).astype(int)), b_star


def vectorised(q, bs, cfg):
    res = simulate(q, [constant(b0=int(b), eta0=cfg["eta"]) for b in bs], eps=cfg["eps"],
                   replicates=cfg["replicates"], seed=cfg["seed"], max_steps=cfg["max_steps"], keep_trace=False)
    return np.where(res.hit, res.hit_sfo, np.inf)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 replicates and 500 steps (a smoke run)")
    cfg = dict(SETUP)
    if ap.parse_args().quick:
        cfg.update(replicates=8, max_steps=500)
    q = make_problem("quadratic", dim=cfg["dim"], kappa=cfg["kappa"], sigma2=cfg["sigma2"], gap=cfg["gap"],
                     seed=cfg["seed"])
    bs, b_star = grid(q, cfg["eta"], cfg["eps"], cfg["batch_sizes"])
    print(f"setup: {cfg}; theory b* = {b_star:.1f}; grid = {bs.tolist()}")
    t = time.perf_counter()
    n_vec = vectorised(q, bs, cfg)
    t_vec = time.perf_counter() - t
    t = time.perf_counter()
    n_naive = naive(q, bs, cfg)
    t_naive = time.perf_counter() - t
    print(f"{'b':>5} {'median N vectorised':>20} {'median N naive':>15} {'hit% vec':>9} {'hit% naive':>10}")
    for i, b in enumerate(bs):
        print(f"{b:>5} {np.median(n_vec[:, i]):>20.6g} {np.median(n_naive[:, i]):>15.6g} "
              f"{100 * np.isfinite(n_vec[:, i]).mean():>9.0f} {100 * np.isfinite(n_naive[:, i]).mean():>10.0f}")
    print(f"vectorised: {t_vec:.2f} s   naive loop: {t_naive:.2f} s   ratio: {t_naive / t_vec:.1f}x")


if __name__ == "__main__":
    main()
