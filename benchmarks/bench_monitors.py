"""Benchmark: what each gradient-norm monitor costs and how often it decides like the exact one.

Claim under test (our own target, not the paper's; docs/theory.md, "Estimating ‖∇f(θ)‖"): the
debiased monitor (‖g_B‖² − tr Σ̂/b from the training batches, smoothed over the check interval)
costs no extra SFO, at most 5% extra wall time, and makes the same stage transitions as the exact
monitor within one check interval.

Setup: a generated Fashion-MNIST-like task (10 classes, 16×16 "images" = smooth class templates
+ N(0, 1) pixel noise, 10% label noise) or real Fashion-MNIST (``--data fashion_mnist``, 28×28), an
MLP 256→128→64→10 or ``sfotorch.models.build_model("small_cnn", 10, in_channels=1)`` (smaller n and
budget for the CNN, see ``MODEL_CONFIG``), plain SGD driven by Algorithm 2 (sfotheory.rule:
adaptive_exponential, initial_state, check_due, advance) in a plain loop; batches drawn without
replacement from a per-epoch permutation seeded by (seed, epoch); ``torch.set_num_threads(1)``.
The monitor is measured after ``optimizer.step()`` (the norm at θ_{t+1}). At every check the exact
monitor is also run on the same θ ("alongside": its time and SFO are *not* charged to the run) so
that each decision ‖∇f‖ ≤ ε_m can be compared with the exact one.

Monitors (``DRIVERS``): ``exact``; the old debiased configurations (micro-batches k = 4 on every
step; on one step in 5); the new ones (per-sample-norm hooks inside the one backward on one step in
r = 10, nothing on the others; ``ucb``: the stage advances on the one-sided upper confidence bound;
``r=1``: hooks on every step, the most information the training batches hold); subsampled (fresh
subsets of s).

Outputs, per monitor: training and measurement SFO, per-check agreement with the exact decision,
and for every transition its lag in check intervals behind the exact decision: ``k ≥ 0`` = k checks
after the first check of the stage at which the exact monitor was below ε_m; ``−k`` = early: the
exact monitor was still above ε_m, and continuing the stage from the same state (model, optimizer,
batch stream copied) it first goes below k checks later (``<−K``: not within K checks). "Within one
check interval" means every lag is in {−1, 0, 1}. Extra wall time of a debiased monitor: a paired
replay of the run's (b_t, η_t) sequence on the same batches, alternating step by step a plain
``loss.backward()`` loop and a ``monitor.backward`` loop (+ ``measure()`` at the checks) so that
machine load hits both alike; repeated, median (and range) of monitored/plain − 1. Last, the cost
of one statistics step per source at b = 8, 32, 128 against a plain backward. And per debiased
monitor, the information in a check interval: the standard error se of its window estimate of
‖∇f‖² relative to ε_m² at each check, and how many statistics steps a window would need for
se = ε_m²/2 (``print_feasibility``) — when that exceeds τ, no statistics rate makes the exact
monitor's decision reliably from the training batches of one interval.

Run: ``python benchmarks/bench_monitors.py [--quick] [--models mlp,cnn] [--data generated|fashion_mnist]
[--tau 50] [--stats-every 10] [--train-sfo N] [--drivers "exact,psn r=10"]``
(``--quick``: a third of the training budget, one replay repeat, no subsampled monitor; a few minutes).
The default τ = 50 keeps the runs short; the paper's configurations check every τ = 1000 steps,
where a window holds 20× the statistics steps (``--tau 1000 --stats-every 25``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch import nn

from sfotheory.rule import adaptive_exponential, advance, check_due, initial_state
from sfotorch.models import build_model
from sfotorch.monitors import DebiasedMonitor, ExactMonitor, SubsampledMonitor

CONFIG = {
    "n": 10_000,               # training samples
    "classes": 10,
    "signal": 0.3,             # template amplitude (pixel noise sd = 1)
    "label_noise": 0.1,        # fraction of labels redrawn at random
    "b0": 8, "eta0": 0.05, "eps0": 0.25, "delta": 2.0, "gamma": 1.4,   # Algorithm 2 (γ < √δ)
    "tau": 50,                 # check interval, steps
    "b_max": 1024,
    "train_sfo": 300_000,      # training samples per run (30 epochs)
    "micro_batches": 4,        # old debiased monitor: k
    "stats_every_old": 5,      # old debiased-r monitor: split one step in 5
    "stats_every": 10,         # new monitor: per-sample-norm hooks on one step in r (5 per window)
    "confidence": 0.9,         # new -ucb monitor: one-sided level of the upper bound
    "subsample": 1000,         # subsampled monitor: s
    "counterfactual_checks": 4,  # K: how far an early transition's exact crossing is looked for
    "replays": 3,              # paired-replay repeats (median)
    "seed": 0,
}
# the CNN is ~30× the MLP's cost per sample on one CPU thread: a smaller set and budget
MODEL_CONFIG = {"mlp": {}, "cnn": {"n": 3000, "train_sfo": 45_000, "b_max": 256}}
DRIVERS = ("exact", "debiased k=4", "debiased k=4 r=5", "psn r={r}", "psn r={r} ucb", "psn r=1", "subsampled fresh")


# -- data, model, sampling ----------------------------------------------------------------------------

def make_data(cfg, data):
    if data == "fashion_mnist":
        from sfotorch.datasets import load_dataset
        ds = load_dataset("fashion_mnist", subset=cfg["n"])
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        y = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
        return x, y
    g = torch.Generator().manual_seed(cfg["seed"])
    templates = nn.functional.avg_pool2d(torch.randn(cfg["classes"], 1, 20, 20, generator=g), 5, stride=1)
    templates = templates / templates.std()
    y = torch.randint(0, cfg["classes"], (cfg["n"],), generator=g)
    x = cfg["signal"] * templates[y] + torch.randn(cfg["n"], 1, 16, 16, generator=g)
    flip = torch.rand(cfg["n"], generator=g) < cfg["label_noise"]
    y = torch.where(flip, torch.randint(0, cfg["classes"], (cfg["n"],), generator=g), y)
    return x, y


def make_model(kind, classes, seed, pixels):
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(pixels, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                             nn.Linear(64, classes))
    return build_model("small_cnn", classes, in_channels=1)


class EpochStream:
    """Without replacement within an epoch; the permutation of epoch e is a function of (seed, e)."""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self.perm = self._perm()

    def _perm(self):
        return torch.from_numpy(np.random.default_rng([self.seed, self.epoch]).permutation(self.n))

    def next(self, b):
        if self.pos + b > self.n:          # drop the short tail: every batch has exactly b samples
            self.epoch, self.pos = self.epoch + 1, 0
            self.perm = self._perm()
        idx = self.perm[self.pos:self.pos + b]
        self.pos += b
        return idx


def make_debiased(driver, model, loss_fn, cfg):
    """The debiased monitor of a driver name, or None."""
    if driver.startswith("debiased"):
        r = cfg["stats_every_old"] if "r=" in driver else 1
        return DebiasedMonitor(model, loss_fn, micro_batches=cfg["micro_batches"], population=cfg["n"],
                               stats_every=r)
    if driver.startswith("psn"):
        r = int(driver.split("r=")[1].split()[0])
        return DebiasedMonitor(model, loss_fn, variance_source="per_sample_norms", population=cfg["n"],
                               stats_every=r, stats_phase=r - 1, plain_step_norms=False,
                               decision="upper" if driver.endswith("ucb") else "estimate",
                               confidence=cfg["confidence"])
    return None


def train_step(model, opt, loss_fn, debiased, xb, yb, lr):
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    if debiased is not None:
        debiased.backward(xb, yb)
    else:
        loss_fn(model(xb), yb).backward()
    opt.step()


# -- one run driven by one monitor ----------------------------------------------------------------------

def run(driver, cfg, x, y, model_kind):
    model = make_model(model_kind, cfg["classes"], cfg["seed"], x[0].numel())
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["eta0"])
    schedule = adaptive_exponential(b0=cfg["b0"], eta0=cfg["eta0"], eps0=cfg["eps0"], delta=cfg["delta"],
                                    gamma=cfg["gamma"], tau=cfg["tau"], b_max=cfg["b_max"])
    state = initial_state(schedule)
    exact = ExactMonitor(model, (x, y), loss_fn, batch_size=1000)
    debiased = make_debiased(driver, model, loss_fn, cfg)
    if driver == "exact":
        monitor = exact
    elif debiased is not None:
        monitor = debiased
    else:
        monitor = SubsampledMonitor(model, (x, y), loss_fn, sample_size=cfg["subsample"], fresh=True,
                                    seed=cfg["seed"], micro_batches=8, bound="gaussian", batch_size=1000)
    stream = EpochStream(cfg["n"], cfg["seed"])
    t_train = t_measure = 0.0
    checks, sequence, transitions = [], [], []
    while state.samples < cfg["train_sfo"]:
        b, lr = int(state.batch_size), float(state.lr)
        sequence.append((b, lr))
        t0 = time.perf_counter()
        idx = stream.next(b)
        train_step(model, opt, loss_fn, debiased, x[idx], y[idx], lr)
        t_train += time.perf_counter() - t0
        norm, cost = None, 0
        if check_due(schedule, state):
            t0 = time.perf_counter()
            m = monitor.measure()
            t_measure += time.perf_counter() - t0
            norm, cost = m.norm, m.cost
            ref = m if driver == "exact" else exact.measure()
            eps = float(state.eps_m)
            checks.append({"stage": int(state.stage), "eps": eps, "norm": m.norm, "exact": ref.norm,
                           "agree": (m.norm <= eps) == (ref.norm <= eps), "clamped": m.clamped,
                           "se": m.extra.get("sq_norm_se"), "stats_steps": m.extra.get("stats_steps")})
        old_stage = int(state.stage)
        snapshot = None
        if norm is not None and norm <= checks[-1]["eps"] and checks[-1]["exact"] > checks[-1]["eps"]:
            snapshot = copy.deepcopy((model, opt, stream))        # a possibly early transition: keep the state
        state, event = advance(schedule, state, b, norm=norm, check_cost=cost)
        if int(state.stage) != old_stage:
            tr = {"step": int(state.step), "samples": int(state.samples), "check": len(checks) - 1,
                  "to_b": int(state.batch_size)}
            if snapshot is not None:
                tr["exact_crosses_after"] = counterfactual(snapshot, b, lr, checks[-1]["eps"], cfg, x, y, loss_fn)
            transitions.append(tr)
    final = exact.measure().norm
    return {"driver": driver, "state": state, "checks": checks, "transitions": transitions, "sequence": sequence,
            "t_train": t_train, "t_measure": t_measure, "final_norm": final}


def counterfactual(snapshot, b, lr, eps, cfg, x, y, loss_fn):
    """Continue the stage (same b, η) from the copied state; the first check (1, 2, …) at which the
    exact ‖∇f‖ ≤ ε_m, or None within ``counterfactual_checks``."""
    model, opt, stream = snapshot
    exact = ExactMonitor(model, (x, y), loss_fn, batch_size=1000)
    for j in range(1, cfg["counterfactual_checks"] + 1):
        for _ in range(cfg["tau"]):
            idx = stream.next(b)
            train_step(model, opt, loss_fn, None, x[idx], y[idx], lr)
        if exact.measure().norm <= eps:
            return j
    return None


def lags(result, cfg):
    """Per transition: checks between the exact monitor's first 'below ε_m' in the stage and the advance;
    negative for an early advance (see the module doc)."""
    out = []
    for tr in result["transitions"]:
        stage = result["checks"][tr["check"]]["stage"]
        stage_checks = [i for i, c in enumerate(result["checks"]) if c["stage"] == stage]
        first_exact = next((i for i in stage_checks if result["checks"][i]["exact"] <= result["checks"][i]["eps"]), None)
        if first_exact is not None and first_exact <= tr["check"]:
            out.append(tr["check"] - first_exact)
        else:
            j = tr.get("exact_crosses_after")
            out.append(-j if j is not None else f"<-{cfg['counterfactual_checks']}")
    return out


# -- paired replay: a debiased monitor's extra wall time -------------------------------------------------

def paired_overhead(driver, sequence, cfg, x, y, model_kind):
    """One replay: (plain seconds, monitored seconds), alternating the two loops step by step."""
    pixels = x[0].numel()
    plain_model = make_model(model_kind, cfg["classes"], cfg["seed"], pixels)
    mon_model = make_model(model_kind, cfg["classes"], cfg["seed"], pixels)
    loss_fn = nn.CrossEntropyLoss()
    opts = [torch.optim.SGD(m.parameters(), lr=cfg["eta0"]) for m in (plain_model, mon_model)]
    monitor = make_debiased(driver, mon_model, loss_fn, cfg)
    stream = EpochStream(cfg["n"], cfg["seed"])
    times = [0.0, 0.0]
    for t, (b, lr) in enumerate(sequence):
        idx = stream.next(b)
        xb, yb = x[idx], y[idx]
        for which in ((0, 1) if t % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            if which == 0:
                train_step(plain_model, opts[0], loss_fn, None, xb, yb, lr)
            else:
                train_step(mon_model, opts[1], loss_fn, monitor, xb, yb, lr)
                if (t + 1) % cfg["tau"] == 0:
                    monitor.measure()
            times[which] += time.perf_counter() - t0
    return times


# -- tr Σ̂ sources at small b -------------------------------------------------------------------------------

def source_timing(model_kind, cfg, x, y, batch_sizes=(8, 32, 128), reps=40):
    model = make_model(model_kind, cfg["classes"], cfg["seed"], x[0].numel())
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    for b in batch_sizes:
        xb, yb = x[:b], y[:b]
        variants = {"plain backward": lambda: loss_fn(model(xb), yb).backward()}
        for k in (2, 4):
            mon = DebiasedMonitor(model, loss_fn, micro_batches=k)
            variants[f"micro-batches k={k}"] = (lambda mon=mon: mon.backward(xb, yb))
        per = DebiasedMonitor(model, loss_fn, variance_source="per_sample")
        variants["torch.func per-sample"] = lambda: per.backward(xb, yb)
        hooks = DebiasedMonitor(model, loss_fn, variance_source="per_sample_norms")
        variants["per-sample-norm hooks"] = lambda: hooks.backward(xb, yb)
        timings = {name: [] for name in variants}
        for _ in range(3):                                   # warm-up
            for fn in variants.values():
                fn()
        for _ in range(reps):                                # interleaved: load hits every variant alike
            for name, fn in variants.items():
                for p in model.parameters():
                    p.grad = None
                t0 = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - t0)
        base = statistics.median(timings["plain backward"])
        for name, ts in timings.items():
            rows.append((b, name, statistics.median(ts) * 1e3, statistics.median(ts) / base))
    return rows


def bench_model(kind, args, base_cfg):
    cfg = {**base_cfg, **MODEL_CONFIG[kind]}
    if args.train_sfo is not None:
        cfg["train_sfo"] = args.train_sfo
    if args.quick:
        cfg["train_sfo"] //= 3
        cfg["replays"] = 1
    x, y = make_data(cfg, args.data)
    drivers = [d.format(r=cfg["stats_every"]) for d in DRIVERS if not (args.quick and d.startswith("subsampled"))]
    drivers = list(dict.fromkeys(drivers))          # --stats-every 1: "psn r=1" once
    if args.drivers:
        wanted = [d.strip() for d in args.drivers.split(",") if d.strip()]
        unknown = [d for d in wanted if d not in drivers]
        if unknown or "exact" not in wanted:
            raise SystemExit(f"--drivers: a comma-separated subset of {drivers} including 'exact' (the reference); "
                             f"got {args.drivers!r}")
        drivers = [d for d in drivers if d in wanted]
    print(f"\n# model={kind} data={args.data} threads={args.threads} config={cfg}", flush=True)
    results = []
    for d in drivers:
        t0 = time.perf_counter()
        results.append(run(d, cfg, x, y, kind))
        print(f"  ran {d!r} in {time.perf_counter() - t0:.0f} s", flush=True)
    extra = {}
    for r in results:
        if make_debiased(r["driver"], nn.Linear(1, 1), nn.CrossEntropyLoss(), cfg) is not None:
            ratios = []
            for _ in range(cfg["replays"]):
                plain, monitored = paired_overhead(r["driver"], r["sequence"], cfg, x, y, kind)
                ratios.append(monitored / plain - 1.0)
            extra[r["driver"]] = ratios
    print(f"\n## {kind}: cost, agreement with the exact decision at each check, transition lags")
    print(f"{'monitor':18} {'meas/train SFO':>14} {'extra wall':>22} {'checks':>6} {'agree':>6} {'clamped':>7} "
          f"{'stage':>5} {'final ‖∇f‖':>10}  lags (checks; −k early)")
    for r in results:
        st, ch = r["state"], r["checks"]
        agree = sum(c["agree"] for c in ch) / max(len(ch), 1)
        if r["driver"] in extra:
            e = extra[r["driver"]]
            wall = f"{statistics.median(e):+.1%}" + (f" [{min(e):+.1%},{max(e):+.1%}]" if len(e) > 1 else "")
        else:
            wall = f"meas/train {r['t_measure'] / r['t_train']:.2f}"
        print(f"{r['driver']:18} {st.check_samples / st.samples:14.3f} {wall:>22} {len(ch):6d} {agree:6.1%} "
              f"{sum(c['clamped'] for c in ch):7d} {st.stage:5d} {r['final_norm']:10.4f}  {lags(r, cfg)}")
    print_feasibility(results, cfg)
    return cfg, x, y


def print_feasibility(results, cfg):
    r"""How much information one check interval of training batches holds, per debiased monitor.

    At each check with a finite standard error se of the window estimate ū of ‖∇f‖² (from N_s
    statistics steps): se/ε_m², and the statistics steps a window would need for se = ε_m²/2 — a
    decision that is wrong by more than half the threshold's square only at ~2σ — assuming se ∝
    1/√N_s: N_s (2 se/ε_m²)². Compared with τ (statistics on every step of the window), this says
    whether any statistics rate can make the same decisions as the exact monitor at that check.
    """
    rows = []
    for r in results:
        pts = [(c["se"] / c["eps"] ** 2, c["stats_steps"] * (2 * c["se"] / c["eps"] ** 2) ** 2)
               for c in r["checks"] if c.get("se") is not None and np.isfinite(c["se"]) and c.get("stats_steps")]
        if pts:
            rows.append((r["driver"], pts))
    if not rows:
        return
    print(f"\n## information per check interval (tau = {cfg['tau']} steps): se of the window's ‖∇f‖² estimate "
          f"relative to eps_m², and the statistics steps a window would need for se = eps_m²/2")
    print(f"{'monitor':18} {'checks':>6} {'se/eps² median':>15} {'[10%, 90%]':>16} {'needed N_s median':>18} "
          f"{'checks with N_s <= tau':>23}")
    for driver, pts in rows:
        rel = np.array([p[0] for p in pts])
        need = np.array([p[1] for p in pts])
        q = np.quantile(rel, [0.1, 0.9])
        print(f"{driver:18} {len(pts):6d} {np.median(rel):15.2f} {f'[{q[0]:.2f}, {q[1]:.2f}]':>16} "
              f"{np.median(need):18.0f} {np.mean(need <= cfg['tau']):23.0%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--data", choices=("generated", "fashion_mnist"), default="generated")
    parser.add_argument("--quick", action="store_true",
                        help="a third of the training budget, one replay, no subsampled monitor")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared CPU)")
    parser.add_argument("--skip-runs", action="store_true", help="only the tr Σ̂ source timing")
    parser.add_argument("--tau", type=int, default=None, help=f"check interval τ (default {CONFIG['tau']})")
    parser.add_argument("--stats-every", type=int, default=None,
                        help=f"r of the psn monitors (default {CONFIG['stats_every']})")
    parser.add_argument("--train-sfo", type=int, default=None, help="training samples per run (default per model)")
    parser.add_argument("--drivers", default="", help="comma-separated subset of the monitors (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base_cfg = dict(CONFIG)
    for key, value in (("tau", args.tau), ("stats_every", args.stats_every)):
        if value is not None:
            if value < 1:
                parser.error(f"--{key.replace('_', '-')}: an integer >= 1, got {value}")
            base_cfg[key] = value
    if args.data == "fashion_mnist":
        base_cfg["eps0"] = 0.5
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    for kind in kinds:
        if kind not in MODEL_CONFIG:
            parser.error(f"--models: unknown model {kind!r} (mlp, cnn)")
    data = {}
    for kind in kinds:
        if not args.skip_runs:
            data[kind] = bench_model(kind, args, base_cfg)
        else:
            cfg = {**base_cfg, **MODEL_CONFIG[kind]}
            data[kind] = (cfg, *make_data(cfg, args.data))
    print("\n## one statistics step per source: median time of one backward (ms) and ratio to a plain backward")
    for kind in kinds:
        cfg, x, y = data[kind]
        for b, name, ms, ratio in source_timing(kind, cfg, x, y, reps=40 if kind == "mlp" else 10):
            print(f"{kind:4} b={b:4d} {name:24} {ms:8.3f} ms {ratio:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
