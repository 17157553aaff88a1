"""Benchmark: do the cheap gradient-norm monitors take the exact monitor's stage decisions, and at what cost?

Claims under test (the targets this benchmark is judged by): the sequential monitor agrees with the exact norm's
decision ‖∇f‖ ≤ ε_m on ≥ 95% of checks, makes every stage transition within one check of the exact
monitor's run, at ≤ 10% of the exact monitor's measurement SFO, and reaches the last threshold at
≤ 0.6× the exact run's total SFO (training + measurement); the debiased monitor as ``sfo train``
configures it never advances a stage while the exact norm is above ε_m.

Setup: real Fashion-MNIST (Debian's package, ``sfotorch.datasets.load_dataset``), the first
``n`` = 10 000 training images, un-augmented; ``sfotorch.models.small_cnn`` with widths 50, 100, 200
(~228 k parameters; ``--widths 32,64,128`` is sfo train's 94 k one); plain SGD driven by
:class:`~sfotorch.scheduler.StageScheduler` (Algorithm 2, adaptive_exponential) over a
:class:`~sfotorch.sampler.ResizableLoader` seeded by the run's seed, in a plain loop; the monitor is
called by the scheduler after ``optimizer.step()``. Each monitor drives its own run; at every check
the exact monitor is also run at the same θ ("beside": its time and SFO are *not* charged to the run)
so that each decision can be compared with the exact one. ``torch.set_num_threads(threads)``.

Monitors: ``exact`` (n per check); ``sequential`` (s_0 = 256 doubled, k = 16 blocks, confidence
0.95); ``zoned`` (the same with an indifference zone ρ = 0.3: a check also stops once its interval's
half-width is at most 0.3 ε_m, and decides by its estimate; ρ chosen from the zone replay of seed 0's
sequential run alone, the smallest replayed value at ≤ 10% of the exact samples per check there); ``debiased`` as sfo train builds it (per-sample-norm hooks on one step in min(25, τ), the last
of each window, nothing on the others; window mean, undecided when clamped or se > ε_m²/2; screened:
a check whose window interval lies above ε_m is "above" at no cost, the others are decided by the
sequential test above, ``confirm = "sequential"``); ``window`` (the same debiased window deciding
alone, ``confirm = "none"``); ``subsampled`` (fresh s = 1 000, point estimate).

Outputs, per monitor (mean over seeds where it says so): checks and decisions agreeing with the exact
norm's (%); advances while the exact norm was above ε_m; per stage transition, its check index minus
the exact monitor's run's (its lag; "·" not reached in one of the runs); measurement SFO / the exact
run's; total SFO (training + measurement) at the transition past each ε_m, as a ratio to the exact
run's; wall time of the run (without the exact passes beside) / the exact run's. Last, the targets
and whether they are met.

Run: ``python benchmarks/bench_decisions.py [--seeds 0,1,2] [--monitors exact,sequential,debiased,subsampled]
[--train-sfo 300000] [--n 10000] [--tau 200] [--threads 1] [--out FILE] [--raw FILE.jsonl]`` (the full
run is long: see the README's benchmark table). ``--raw`` keeps each finished run, so that an
interrupted run resumes where it stopped and seeds can run in separate processes (one thread each)
whose results one last call reports. A smoke run in about a minute:
``python benchmarks/bench_decisions.py --n 600 --train-sfo 4000 --tau 20 --b-max 64 --seeds 0 --widths 8,16,32``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
import time

import torch
from torch import nn

from sfotorch.datasets import load_dataset
from sfotorch.models import build_model
from sfotorch.monitors import DebiasedMonitor, ExactMonitor, ScreenedMonitor, SequentialMonitor, SubsampledMonitor
from sfotorch.monitors.sequential import look_decision
from sfotorch.sampler import ResizableLoader
from sfotorch.scheduler import StageScheduler

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:       # loaded by path (tests): find _report
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit  # noqa: E402  (benchmarks/_report.py)

CONFIG = {
    "n": 10_000,               # training images (the first n)
    "widths": (50, 100, 200),  # small_cnn channel widths (~228 k parameters for 1×28×28)
    "b0": 8, "eta0": 0.1, "eps0": 0.5, "delta": 2.0, "gamma": 1.4,   # Algorithm 2 (γ < √δ)
    "tau": 200,                # steps between checks
    "b_max": 1024,
    "train_sfo": 300_000,      # training samples per run (30 epochs of n = 10 000)
    "chunk": 500,              # batch of the measuring passes (memory only)
    "sequential": {"initial_size": 256, "blocks": 16, "confidence": 0.95},
    "zone": 0.3,               # zoned: the sequential monitor with an indifference zone of ±30% of ε_m
    "subsample": 1000,         # subsampled monitor: s
    "stats_every": 25,         # debiased: hooks on one step in min(25, τ), as sfo train
    "threads": 1,
}
MONITORS = ("exact", "sequential", "zoned", "debiased", "window", "subsampled")


class Beside:
    """The run's monitor (timed, charged) and the exact norm at the same θ (not timed, not charged)."""

    uses_eps_m = True

    def __init__(self, monitor, exact):
        self.monitor, self.exact, self.name = monitor, exact, monitor.name
        self.beside_seconds = 0.0
        self.checks = []

    def measure(self, eps_m):
        m = (self.monitor.measure(eps_m=eps_m) if getattr(self.monitor, "uses_eps_m", False)
             else self.monitor.measure())
        t = time.perf_counter()
        exact = m.norm if self.monitor is self.exact else self.exact.measure().norm
        self.beside_seconds += time.perf_counter() - t
        self.checks.append({"eps_m": eps_m, "norm": m.norm, "below": m.decides_below(eps_m), "cost": int(m.cost),
                            "exact_norm": exact, "exact_below": exact <= eps_m, "undecided": m.undecided})
        if "looks" in m.extra:        # the sequential test's looks: what another stopping rule would have seen
            self.checks[-1]["looks"] = [[look["samples"], look["sq_norm"], look["norm_se"]] for look in m.extra["looks"]]
        return m


def make_monitor(kind, model, loss_fn, data, cfg, seed):
    """The run's monitor and, for the debiased one, the monitor whose backward the step runs."""
    if kind == "exact":
        return ExactMonitor(model, data, loss_fn, batch_size=cfg["chunk"]), None
    if kind == "sequential":
        return SequentialMonitor(model, data, loss_fn, seed=seed, batch_size=cfg["chunk"], **cfg["sequential"]), None
    if kind == "zoned":
        return SequentialMonitor(model, data, loss_fn, seed=seed, batch_size=cfg["chunk"], tolerance=cfg["zone"],
                                 name="zoned", **cfg["sequential"]), None
    if kind == "subsampled":
        return SubsampledMonitor(model, data, loss_fn, sample_size=min(cfg["subsample"], cfg["n"]), seed=seed,
                                 bound="gaussian", batch_size=cfg["chunk"]), None
    r = min(cfg["stats_every"], cfg["tau"])
    mon = DebiasedMonitor(model, loss_fn, variance_source="per_sample_norms", population=cfg["n"],
                          stats_every=r, stats_phase=r - 1, plain_step_norms=False)
    if kind == "window":                                           # sfo train: confirm = "none"
        mon.name = "window"
        return mon, mon
    test = SequentialMonitor(model, data, loss_fn, seed=seed, batch_size=cfg["chunk"], **cfg["sequential"])
    return ScreenedMonitor(mon, test, name="debiased"), mon      # sfo train: confirm = "sequential"


def run(kind, cfg, x, y, seed):
    """One run driven by monitor ``kind``; its checks, transitions, SFO and wall time."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", 10, in_channels=1, widths=cfg["widths"])
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["eta0"])
    monitor, debiased = make_monitor(kind, model, loss_fn, (x, y), cfg, seed)
    beside = Beside(monitor, monitor if kind == "exact" else ExactMonitor(model, (x, y), loss_fn,
                                                                         batch_size=cfg["chunk"]))
    loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=cfg["b0"], seed=seed)
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=beside, b0=cfg["b0"],
                           eta0=cfg["eta0"], eps0=cfg["eps0"], delta=cfg["delta"], gamma=cfg["gamma"],
                           tau=cfg["tau"], b_max=cfg["b_max"])
    start = time.perf_counter()
    diverged = None
    while sched.state.samples < cfg["train_sfo"] and diverged is None:
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            if debiased is not None:
                loss = debiased.backward(xb, yb)
            else:
                loss = loss_fn(model(xb), yb)
                loss.backward()
            if not math.isfinite(float(loss.detach())):   # training diverged (η grows ×γ a stage): the run ends here
                diverged = int(sched.state.step) + 1
                break
            opt.step()
            checks = len(beside.checks)
            sched.step(loss=loss)
            if len(beside.checks) > checks:
                beside.checks[-1].update(step=int(sched.state.step), event=sched.last_event.name)
            if sched.state.samples >= cfg["train_sfo"]:
                break
    wall = time.perf_counter() - start - beside.beside_seconds      # the exact passes beside: not charged
    return {"checks": beside.checks, "transitions": list(sched.transitions), "wall": wall, "diverged": diverged,
            "measure_sfo": int(sched.state.check_samples), "train_sfo": int(sched.state.samples)}


def passed(result, tau):
    """stage m → (check index of the transition past ε_m, total SFO there)."""
    return {t["stage"] - 1: (t["step"] // tau, t["samples"] + t["check_samples"]) for t in result["transitions"]}


def report(results, cfg, kinds, seeds, out):
    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    def fmt(v, spec=".2f"):
        width = int(spec.split(".")[0] or 0)
        return "·".rjust(width) if v is None else format(v, spec)

    tau = cfg["tau"]
    print(f"bench_decisions: Fashion-MNIST n = {cfg['n']}, small_cnn widths {cfg['widths']} "
          f"({results[(kinds[0], seeds[0])]['params']} parameters), τ = {tau}, b0 = {cfg['b0']}, δ = {cfg['delta']}, "
          f"γ = {cfg['gamma']}, η0 = {cfg['eta0']}, ε0 = {cfg['eps0']}, b_max = {cfg['b_max']}, "
          f"{cfg['train_sfo']} training SFO per run, seeds {seeds}, {cfg['threads']} thread(s)", file=out)
    print(f"\n{'monitor':11} {'seeds':>5} {'checks':>6} {'agree %':>7} {'false adv':>9} {'undecided':>9} "
          f"{'meas SFO/exact':>14} {'wall/exact':>10}  transition lags in checks (stage: lag per seed)", file=out)
    summary = {}
    kinds = [k for k in kinds if any((k, s) in results for s in seeds)]      # a monitor without runs: no row
    for kind in kinds:
        kseeds = [s for s in seeds if (kind, s) in results]        # --report-only: the seeds this monitor has
        rows = [results[(kind, s)] for s in kseeds]
        checks = [c for r in rows for c in r["checks"]]
        agree = 100.0 * sum(c["below"] == c["exact_below"] for c in checks) / max(len(checks), 1)
        false_adv = sum(c["event"] == "ADVANCED" and not c["exact_below"] for c in checks)
        meas = mean([r["measure_sfo"] / max(results[("exact", s)]["measure_sfo"], 1) for r, s in zip(rows, kseeds)])
        wall = mean([r["wall"] / results[("exact", s)]["wall"] for r, s in zip(rows, kseeds)])
        stages = sorted({m for s in seeds for m in passed(results[("exact", s)], tau)}
                        | {m for r in rows for m in passed(r, tau)})
        lags = []
        for m in stages:
            per_seed = []
            for r, s in zip(rows, kseeds):
                mine, ref = passed(r, tau).get(m), passed(results[("exact", s)], tau).get(m)
                per_seed.append("·" if mine is None or ref is None else f"{mine[0] - ref[0]:+d}")
            lags.append(f"{m}: {' '.join(per_seed)}")
        undecided = sum(c["undecided"] for c in checks)
        print(f"{kind:11} {len(kseeds):5d} {len(checks):6d} {agree:7.1f} {false_adv:9d} {undecided:9d} "
              f"{fmt(meas, '14.3f')} {fmt(wall, '10.2f')}  {'; '.join(lags)}", file=out)
        summary[kind] = {"agree": agree, "false_adv": false_adv, "meas": meas, "lags": lags, "rows": rows}
    spent = {kind: sorted(c["cost"] for s in seeds if (kind, s) in results for c in results[(kind, s)]["checks"]
                          if "cost" in c) for kind in kinds}
    if any(spent.values()):          # runs written before checks recorded their cost have none
        print("\nsamples a check spent (runs that record it): median, 90th percentile, largest; checks that spent none",
              file=out)
        for kind, costs in spent.items():
            if costs:
                q90 = costs[min(len(costs) - 1, int(0.9 * len(costs)))]
                print(f"  {kind:11} {costs[len(costs) // 2]:7d} {q90:7d} {costs[-1]:7d} {costs.count(0):4d} of "
                      f"{len(costs)}   (n = {cfg['n']})", file=out)
    looked = [c for s in seeds if ("sequential", s) in results for c in results[("sequential", s)]["checks"]
              if "looks" in c]
    if looked:
        where_spent(looked, results, seeds, cfg, out)
        zone_table(looked, cfg, out)
    ended = [f"{kind} seed {s} at step {results[(kind, s)]['diverged']}" for kind in kinds for s in seeds
             if (kind, s) in results and results[(kind, s)].get("diverged")]
    print("runs that diverged (a non-finite loss; the run ends there, its checks until then count): "
          + ("; ".join(ended) if ended else "none"), file=out)
    print("\ntotal SFO (training + measurement) at the transition past ε_m, ratio to the exact run's "
          "(mean over the seeds where both runs passed ε_m; · none did)", file=out)
    stages = sorted({m for s in seeds for m in passed(results[("exact", s)], tau)})
    print(f"{'monitor':11} " + " ".join(f"{'ε_' + str(m):>8}" for m in stages), file=out)
    for kind in kinds:
        ratios = []
        for m in stages:
            vals = []
            for s in (s for s in seeds if (kind, s) in results):
                mine, ref = passed(results[(kind, s)], tau).get(m), passed(results[("exact", s)], tau).get(m)
                vals.append(None if mine is None or ref is None else mine[1] / ref[1])
            ratios.append(mean(vals))
        summary[kind]["sfo_ratios"] = ratios
        print(f"{kind:11} " + " ".join(fmt(v, "8.3f") for v in ratios), file=out)
    print("\ntargets", file=out)
    for name in ("sequential", "zoned"):          # the sequential test's targets, with and without a zone
        if name not in summary:
            continue
        seq = summary[name]
        lag_ok = all(lag in ("+0", "+1", "-1", "·") for entry in seq["lags"] for lag in entry.split(": ")[1].split())
        last = next((v for v in reversed(seq["sfo_ratios"]) if v is not None), None)
        print(f"  {name}: agree {seq['agree']:.1f}% (target ≥ 95): {'met' if seq['agree'] >= 95 else 'NOT met'}; "
              f"every transition within one check: {'met' if lag_ok else 'NOT met'}; measurement SFO "
              f"{fmt(seq['meas'], '.3f')} of exact (target ≤ 0.10): "
              f"{'met' if seq['meas'] is not None and seq['meas'] <= 0.10 else 'NOT met'}; total SFO to the last "
              f"threshold {fmt(last, '.3f')} of exact (target ≤ 0.6): "
              f"{'met' if last is not None and last <= 0.6 else 'NOT met'}", file=out)
    if "debiased" in summary:
        fa = summary["debiased"]["false_adv"]
        print(f"  debiased (sfo train, screened by the sequential test): {fa} advance(s) against an exact norm above "
              f"ε_m (target 0): {'met' if fa == 0 else 'NOT met'}", file=out)
    if "window" in summary:
        print(f"  window (the debiased window alone, for comparison): {summary['window']['false_adv']} advance(s) "
              f"against an exact norm above ε_m", file=out)


ZONES = (0.0, 0.05, 0.1, 0.2, 0.3)


def zone_decision(looks, eps, q, n, rho):
    """The decision and cost of a check with indifference zone ``rho``, replayed on the looks
    [[s, U, se], …] a zone-free check made (a zone stops at or before its last look; the rule of
    :meth:`sfotorch.monitors.SequentialMonitor.measure`)."""
    for s, u, se in looks:
        decision = look_decision(u, se, q, eps, whole=s >= n, tolerance=rho)
        if decision == "nonfinite":                   # the monitor's NaN measurement: no advance
            return False, s
        if decision is not None:
            return math.sqrt(max(u, 0.0)) <= eps, s
    raise ValueError("looks end before the whole set without a decision")


NEAR = (0.05, 0.2)


def where_spent(checks, results, seeds, cfg, out):
    """Our question: which checks the sequential runs' samples went to, by how close the exact norm was to ε_m."""
    exact_total = sum(c["cost"] for s in seeds if ("sequential", s) in results for c in results[("exact", s)]["checks"])
    bands = [(0.0, NEAR[0]), (NEAR[0], NEAR[1]), (NEAR[1], math.inf)]
    print(f"\nwhere the sequential runs' samples went, by |‖∇f‖/ε_m − 1| of the exact norm at the check (samples as a "
          f"fraction of the exact runs' {exact_total} measurement samples on the same seeds)", file=out)
    for low, high in bands:
        inside = [c for c in checks if low <= abs(c["exact_norm"] / c["eps_m"] - 1.0) < high]
        spent = sum(c["cost"] for c in inside)
        label = f"[{low:.0%}, {high:.0%})" if math.isfinite(high) else f"≥ {low:.0%}"
        print(f"  {label:>10}: {len(inside):3d} checks, {spent:7d} samples = {spent / max(exact_total, 1):.3f}", file=out)


def zone_table(checks, cfg, out):
    """Our question: what an indifference zone ρ would have decided on the sequential runs' own checks."""
    probe = SequentialMonitor(nn.Linear(1, 1), (torch.zeros(cfg["n"], 1), torch.zeros(cfg["n"], 1)), nn.MSELoss(),
                              **cfg["sequential"])
    q = probe.quantile()
    print(f"\nindifference zone ρ replayed on the sequential runs' looks ({len(checks)} checks, the same θ and subsets; "
          f"q = {q:.3f}): a check stops once q·se ≤ ρ·ε_m and decides by its estimate", file=out)
    print(f"  {'ρ':>5} {'agree %':>8} {'below, exact above':>18} {'above, exact below':>18} {'samples/check / n':>18}",
          file=out)
    for rho in ZONES:
        replay = [(zone_decision(c["looks"], c["eps_m"], q, cfg["n"], rho), c["exact_below"]) for c in checks]
        agree = 100.0 * sum(below == exact for (below, _), exact in replay) / len(replay)
        wrong_below = sum(below and not exact for (below, _), exact in replay)
        wrong_above = sum(exact and not below for (below, _), exact in replay)
        cost = statistics.fmean(spent for (_, spent), _ in replay) / cfg["n"]
        print(f"  {rho:5.2f} {agree:8.1f} {wrong_below:18d} {wrong_above:18d} {cost:18.3f}", file=out)


def _jsonable(cfg):
    return json.loads(json.dumps(cfg))


def run_key(kind, cfg):
    """What a kept run of monitor ``kind`` must have been run under: the workload and that monitor's own
    settings (another monitor's settings do not change it, so its kept runs stay valid when they change)."""
    own = {"exact": (), "sequential": ("sequential",), "zoned": ("sequential", "zone"), "subsampled": ("subsample",),
           "debiased": ("stats_every", "sequential"), "window": ("stats_every",)}
    others = {key for keys in own.values() for key in keys} - set(own[kind])
    return _jsonable({key: value for key, value in cfg.items() if key not in others})


def load_raw(path, cfg):
    """Runs already finished under the same configuration, from a ``--raw`` file (empty if none)."""
    results = {}
    if path is None:
        return results
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return results
    for row in lines:
        if row["cfg"] == run_key(row["kind"], cfg):
            results[(row["kind"], row["seed"])] = row["result"]
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--monitors", default=",".join(MONITORS))
    for key in ("n", "tau", "train_sfo", "b_max", "threads"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=CONFIG[key])
    parser.add_argument("--widths", default=",".join(map(str, CONFIG["widths"])))
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: report the runs kept in --raw (a monitor's row says how many seeds it has)")
    parser.add_argument("--raw", default=None,
                        help="append each finished run to this JSON-lines file; runs already there are not rerun")
    args = parser.parse_args(argv)
    cfg = dict(CONFIG, n=args.n, tau=args.tau, train_sfo=args.train_sfo, b_max=args.b_max, threads=args.threads,
               widths=tuple(int(w) for w in args.widths.split(",")))
    kinds = [k.strip() for k in args.monitors.split(",")]
    unknown = sorted(set(kinds) - set(MONITORS))
    if unknown or ("exact" not in kinds and not args.raw):
        parser.error(f"--monitors must name monitors among {', '.join(MONITORS)}, exact included (or the exact runs "
                     f"kept in --raw); got {args.monitors}")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(cfg["threads"])
    data = load_dataset("fashion_mnist", subset=cfg["n"])
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([int(data[i][1]) for i in range(len(data))])
    params = sum(p.numel() for p in build_model("small_cnn", 10, in_channels=1, widths=cfg["widths"]).parameters())
    results = load_raw(args.raw, cfg)
    for seed in seeds:
        for kind in kinds:
            if (kind, seed) in results or args.report_only:
                continue
            t = time.perf_counter()
            results[(kind, seed)] = dict(run(kind, cfg, x, y, seed), params=params)
            r = results[(kind, seed)]
            print(f"[seed {seed}] {kind}: {len(r['checks'])} checks, {len(r['transitions'])} transitions, "
                  f"{time.perf_counter() - t:.0f} s" + (f", diverged at step {r['diverged']}" if r["diverged"] else ""),
                  file=sys.stderr, flush=True)
            if args.raw:
                with open(args.raw, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"kind": kind, "seed": seed, "cfg": run_key(kind, cfg), "result": r}) + "\n")
    missing = [s for s in seeds if ("exact", s) not in results]
    if missing:        # another process runs them into the same --raw file; a last call reports
        print(f"bench_decisions: no exact run of seed(s) {missing} in {args.raw} yet: report left to a later call",
              file=sys.stderr)
        return
    kinds = ["exact", *[k for k in kinds if k != "exact"]]
    text = io.StringIO()
    report(results, cfg, kinds, seeds, text)
    emit(text.getvalue(), args.out)


if __name__ == "__main__":
    main()
