"""Benchmark: what each gradient-norm monitor costs and how often it decides like the exact one.

Claim under test (issue 4): the debiased monitor (‖g_B‖² − tr Σ̂/b from micro-batches of the
training batches, window mean over the check interval) costs no extra SFO, at most 5% extra wall
time, and makes the same stage transitions as the exact monitor within one check interval.

Setup: a generated Fashion-MNIST-like task (10 classes, 16×16 "images" = smooth class templates
+ N(0, 1) pixel noise, 10% label noise, n = 10 000 training samples), a small MLP or CNN, plain SGD
driven by Algorithm 2 (sfotheory.rule: adaptive_exponential, initial_state, check_due, advance) in
a plain loop; batches drawn without replacement from a per-epoch permutation seeded by (seed, epoch).
The monitor is measured after ``optimizer.step()`` (the norm at θ_{t+1}). At every check the exact
monitor is also run on the same θ ("alongside": its time and SFO are *not* charged to the run) so
that each decision ‖∇f‖ ≤ ε_m can be compared with the exact one.

Outputs, per driving monitor: training SFO, measurement SFO (and its ratio), wall time of training
and of measuring, per-check agreement with the exact decision, and for every transition the lag in
check intervals between the first check at which the exact monitor was below ε_m in that stage and
the check at which the driving monitor advanced ("early" when the exact monitor had not yet been
below). The debiased monitor's extra wall time is measured by a paired replay: the same (b_t, η_t)
sequence and batches run with a plain ``loss.backward()`` and with ``monitor.backward``, alternating
step by step so that machine load hits both alike. Last, the cost of tr Σ̂ sources at b = 8, 32, 128:
plain backward vs k micro-batches vs torch.func per-sample gradients.

Run: ``python benchmarks/bench_monitors.py [--model mlp|cnn] [--quick] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from sfotheory.rule import adaptive_exponential, advance, check_due, initial_state
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
    "micro_batches": 4,        # debiased monitor: k
    "stats_every": 5,          # debiased-r monitor: split one step in r
    "subsample": 1000,         # subsampled monitor: s
    "seed": 0,
}


# -- data, model, sampling ----------------------------------------------------------------------------

def make_data(cfg):
    g = torch.Generator().manual_seed(cfg["seed"])
    templates = nn.functional.avg_pool2d(torch.randn(cfg["classes"], 1, 20, 20, generator=g), 5, stride=1)
    templates = templates / templates.std()
    y = torch.randint(0, cfg["classes"], (cfg["n"],), generator=g)
    x = cfg["signal"] * templates[y] + torch.randn(cfg["n"], 1, 16, 16, generator=g)
    flip = torch.rand(cfg["n"], generator=g) < cfg["label_noise"]
    y = torch.where(flip, torch.randint(0, cfg["classes"], (cfg["n"],), generator=g), y)
    return x, y


def make_model(kind, classes, seed):
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                             nn.Linear(64, classes))
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, classes))


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


# -- one run driven by one monitor ----------------------------------------------------------------------

def run(driver, cfg, x, y, model_kind):
    model = make_model(model_kind, cfg["classes"], cfg["seed"])
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["eta0"])
    schedule = adaptive_exponential(b0=cfg["b0"], eta0=cfg["eta0"], eps0=cfg["eps0"], delta=cfg["delta"],
                                    gamma=cfg["gamma"], tau=cfg["tau"], b_max=cfg["b_max"])
    state = initial_state(schedule)
    exact = ExactMonitor(model, (x, y), loss_fn, batch_size=2000)
    debiased = None
    if driver == "exact":
        monitor = exact
    elif driver.startswith("debiased"):
        r = cfg["stats_every"] if driver.endswith("-r") else 1
        monitor = debiased = DebiasedMonitor(model, loss_fn, micro_batches=cfg["micro_batches"], population=cfg["n"],
                                             stats_every=r)
    elif driver.startswith("subsampled"):
        monitor = SubsampledMonitor(model, (x, y), loss_fn, sample_size=cfg["subsample"], fresh=driver.endswith("fresh"),
                                    seed=cfg["seed"], micro_batches=8, bound="gaussian", batch_size=2000)
    stream = EpochStream(cfg["n"], cfg["seed"])
    t_train = t_measure = 0.0
    checks, sequence, transitions = [], [], []
    while state.samples < cfg["train_sfo"]:
        b, lr = int(state.batch_size), float(state.lr)
        sequence.append((b, lr))
        t0 = time.perf_counter()
        idx = stream.next(b)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        if debiased is not None:
            debiased.backward(x[idx], y[idx])
        else:
            loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        t_train += time.perf_counter() - t0
        norm, cost = None, 0
        if check_due(schedule, state):
            t0 = time.perf_counter()
            m = monitor.measure()
            t_measure += time.perf_counter() - t0
            norm, cost = m.norm, m.cost
            ref = m if driver == "exact" else exact.measure()
            eps = float(state.threshold)
            checks.append({"stage": int(state.stage), "eps": eps, "norm": m.norm, "exact": ref.norm,
                           "agree": (m.norm <= eps) == (ref.norm <= eps), "clamped": m.clamped})
        old_stage = int(state.stage)
        state, event = advance(schedule, state, b, norm=norm, check_cost=cost)
        if int(state.stage) != old_stage:
            transitions.append({"step": int(state.step), "samples": int(state.samples), "check": len(checks) - 1,
                                "to_b": int(state.batch_size)})
    final = exact.measure().norm
    return {"driver": driver, "state": state, "checks": checks, "transitions": transitions, "sequence": sequence,
            "t_train": t_train, "t_measure": t_measure, "final_norm": final}


def lags(result):
    """Per transition: checks between the exact monitor's first 'below ε_m' in the stage and the advance."""
    out = []
    for tr in result["transitions"]:
        stage_checks = [i for i, c in enumerate(result["checks"]) if c["stage"] == result["checks"][tr["check"]]["stage"]]
        first_exact = next((i for i in stage_checks if result["checks"][i]["exact"] <= result["checks"][i]["eps"]), None)
        out.append("early" if first_exact is None or first_exact > tr["check"] else tr["check"] - first_exact)
    return out


# -- paired replay: the debiased monitor's extra wall time ------------------------------------------------

def paired_overhead(sequence, cfg, x, y, model_kind, k, r):
    plain_model = make_model(model_kind, cfg["classes"], cfg["seed"])
    mon_model = make_model(model_kind, cfg["classes"], cfg["seed"])
    loss_fn = nn.CrossEntropyLoss()
    opts = [torch.optim.SGD(m.parameters(), lr=cfg["eta0"]) for m in (plain_model, mon_model)]
    monitor = DebiasedMonitor(mon_model, loss_fn, micro_batches=k, population=cfg["n"], stats_every=r)
    stream = EpochStream(cfg["n"], cfg["seed"])
    times = [0.0, 0.0]
    for t, (b, lr) in enumerate(sequence):
        idx = stream.next(b)
        xb, yb = x[idx], y[idx]
        order = (0, 1) if t % 2 == 0 else (1, 0)
        for which in order:
            t0 = time.perf_counter()
            opt = opts[which]
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            if which == 0:
                loss_fn(plain_model(xb), yb).backward()
            else:
                monitor.backward(xb, yb)
            opt.step()
            if which == 1 and (t + 1) % cfg["tau"] == 0:
                monitor.measure()
            times[which] += time.perf_counter() - t0
    return times


# -- tr Σ̂ sources at small b -------------------------------------------------------------------------------

def source_timing(model_kind, cfg, x, y, batch_sizes=(8, 32, 128), reps=60):
    model = make_model(model_kind, cfg["classes"], cfg["seed"])
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    for b in batch_sizes:
        xb, yb = x[:b], y[:b]
        variants = {"plain backward": lambda: loss_fn(model(xb), yb).backward()}
        for k in (2, 4, 8):
            if k <= b:
                mon = DebiasedMonitor(model, loss_fn, micro_batches=k)
                variants[f"micro-batches k={k}"] = (lambda mon=mon: mon.backward(xb, yb))
        per = DebiasedMonitor(model, loss_fn, variance_source="per_sample")
        variants["torch.func per-sample"] = lambda: per.backward(xb, yb)
        timings = {name: [] for name in variants}
        for _ in range(5):                                   # warm-up
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--quick", action="store_true", help="a third of the training budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared CPU)")
    parser.add_argument("--skip-runs", action="store_true", help="only the tr Σ̂ source timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = dict(CONFIG)
    if args.quick:
        cfg["train_sfo"] //= 3
    x, y = make_data(cfg)
    print(f"# bench_monitors: model={args.model} threads={args.threads} config={cfg}")

    if not args.skip_runs:
        results = [run(d, cfg, x, y, args.model) for d in ("exact", "debiased", "debiased-r", "subsampled-fresh",
                                                 "subsampled-fixed")]
        print("\n## cost and agreement (exact monitor run alongside at every check, not charged)")
        print(f"{'monitor':18} {'train SFO':>9} {'meas SFO':>9} {'meas/train':>10} {'t_train s':>9} {'t_meas s':>8} "
              f"{'meas/train wall':>15} {'checks':>6} {'agree':>6} {'clamped':>7} {'stage':>5} {'b':>5} "
              f"{'final ‖∇f‖':>10}")
        for r in results:
            st, ch = r["state"], r["checks"]
            agree = sum(c["agree"] for c in ch) / max(len(ch), 1)
            print(f"{r['driver']:18} {st.samples:9d} {st.check_samples:9d} {st.check_samples / st.samples:10.3f} "
                  f"{r['t_train']:9.1f} {r['t_measure']:8.2f} {r['t_measure'] / r['t_train']:15.3f} {len(ch):6d} "
                  f"{agree:6.1%} {sum(c['clamped'] for c in ch):7d} {st.stage:5d} {st.batch_size:5d} "
                  f"{r['final_norm']:10.4f}")
        print("\n## transitions: (step, samples → b) and lag in check intervals behind the exact decision")
        for r in results:
            trs = ", ".join(f"({t['step']}, {t['samples']}→{t['to_b']})" for t in r["transitions"])
            print(f"{r['driver']:18} {trs}")
            print(f"{'':18} lags: {lags(r)}")
        for r in results:
            if r["driver"].startswith("debiased"):
                every = cfg["stats_every"] if r["driver"].endswith("-r") else 1
                plain, monitored = paired_overhead(r["sequence"], cfg, x, y, args.model, cfg["micro_batches"], every)
                print(f"\n## {r['driver']}: paired replay of its {len(r['sequence'])} steps: plain {plain:.2f} s, "
                      f"monitor.backward (k={cfg['micro_batches']}, stats_every={every}) + measure {monitored:.2f} s, "
                      f"extra wall time {monitored / plain - 1:+.1%}")

    print("\n## tr Σ̂ sources: median time of one backward (ms) and ratio to a plain backward")
    for kind in ("mlp", "cnn"):
        for b, name, ms, ratio in source_timing(kind, cfg, x, y):
            print(f"{kind:4} b={b:4d} {name:24} {ms:8.3f} ms {ratio:6.2f}x")


if __name__ == "__main__":
    main()
