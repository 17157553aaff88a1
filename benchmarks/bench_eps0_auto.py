"""Benchmark: ε₀ = "auto" (L and σ² measured at θ₀, ε₀ = √(2C₂/b₀)) against hand-picked ε₀ on Fashion-MNIST.

Question (issue 13, item 3): the stage rule makes b_m the critical batch size of ε_m, ε_m² = 2C₂/b_m with
C₂ = Lσ²η₀/(2 − Lη₀) (docs/theory.md, "Stage thresholds"). Does the ε₀ that L and σ² measured at θ₀ give
(:mod:`sfotorch.calibrate`) move the stages of a real run as well as a hand-picked ε₀? Where does it help,
and where not?

Setup: the workload of ``configs/fashion_mnist_adaptive_cpu.toml`` (real Fashion-MNIST from Debian's
package, the first 5 000 training images, un-augmented; ``small_cnn``, 94 k parameters; plain SGD;
Algorithm 2 with b₀ = 8, η₀ = 0.1, δ = 2, γ = 1.4, τ = 200, b_max = 1 024; the exact monitor; 10 epochs =
50 000 training samples), built by :func:`sfotorch.components.build_components` exactly as ``sfo train``
builds it and stepped by its :class:`~sfotorch.loop.TrainingLoop`; only ``schedule.eps0`` differs between
runs: ``"auto"`` and each value of the grid. Every run of a seed starts from the same θ₀ and batch order.
One torch thread.

Outputs: (1) the calibration of each seed: L̂, σ̂², L̂η₀, C₂, ε₀, products, seconds; (2) per ε₀ (means over
seeds): the step at which each stage ended, the final stage and b, the smallest measured ‖∇f‖, test
accuracy on the first 1 000 test images at the end, wall time; (3) per ε₀, the total SFO (training +
measurement, docs/theory.md "SFO accounting") to the first check with ‖∇f‖ ≤ ε for common targets ε, as a
ratio to the auto run's (· when a run never got there, so no ratio); (4) L̂ and σ̂² measured again at the
end of every run (θ_T, same samples and seed), and the ε₀ those would give, against θ₀'s.

Run: ``python benchmarks/bench_eps0_auto.py [--quick] [--seeds 0,1,2] [--grid 0.125,0.25,0.5,1,2]
[--out FILE]``. ``--quick``: the first 2 000 images, τ = 100, 20 000 training samples (10 epochs), seed 0; the
full run: 5 000 images, τ = 200, 50 000 samples, 3 seeds. The quick run's output is
``docs/results/bench_eps0_auto_quick.txt``.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import time

import torch

from sfotorch.calibrate import estimate_constants
from sfotorch.components import build_components
from sfotorch.config import apply_overrides, load_config
from sfotorch.device import resolve_device
from sfotorch.evaluation import evaluate

from _report import emit  # benchmarks/_report.py: run as python benchmarks/<name>.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist_adaptive_cpu.toml")
FULL = {"subset": 5000, "tau": 200, "train_samples": 50_000, "seeds": "0,1,2"}
QUICK = {"subset": 2000, "tau": 100, "train_samples": 20_000, "seeds": "0"}
GRID = (0.125, 0.25, 0.5, 1.0, 2.0)
TARGETS = (1.0, 0.5, 0.25, 0.125)          # common thresholds on ‖∇f‖ for the SFO comparison
THREADS = 1


def run(setup: dict, eps0, seed: int) -> dict:
    """One run of the workload with ``schedule.eps0 = eps0`` ("auto" or a number); its checks and stages."""
    cfg = load_config(CONFIG, [f"data.subset={setup['subset']}", f"schedule.tau={setup['tau']}",
                               f"schedule.eps0={eps0!r}" if eps0 != "auto" else "schedule.eps0=auto",
                               f"train.max_samples={setup['train_samples']}", "train.epochs=0",
                               f"run.threads={THREADS}", "run.device=cpu", "eval.test_subset=1000",
                               "monitor.kind=exact"])     # the exact decisions, whatever the config's default
    env = resolve_device(cfg)
    records: list = []
    t0 = time.perf_counter()
    built = build_components(cfg, seed, env, None, records)
    calibration = built.calibration
    sched, loop = built.scheduler, built.loop
    while int(sched.state.samples) < setup["train_samples"] and not sched.stopped:
        loop.step()
    wall = time.perf_counter() - t0 - (calibration.seconds if calibration else 0.0)
    checks = [r for r in records if "event" in r and r.get("norm") is not None]
    res = evaluate(built.model, built.test_data, batch_size=1000, device=env["device"], transform=built.transform)
    end = estimate_constants(built.model, built.train_data.without_augmentation(), built.monitor.loss_fn,
                             eta=cfg["schedule"]["eta0"], b0=cfg["schedule"]["b0"], seed=seed,
                             batch_size=cfg["monitor"]["batch_size"])
    return {"eps0": float(sched.schedule.eps0), "calibration": calibration, "checks": checks,
            "transitions": list(sched.transitions), "stage": int(sched.state.stage), "b": int(sched.state.batch_size),
            "test_acc": res["test_acc"], "wall": wall, "end": end, "params": sum(p.numel() for p in
                                                                                 built.model.parameters())}


def first_below(result: dict, eps: float):
    """Total SFO (training + measurement) at the first check with ‖∇f‖ ≤ eps, or None."""
    for c in result["checks"]:
        if c["norm"] <= eps:
            return c["samples"] + c["check_samples"]
    return None


def mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def fmt(v, spec):
    width = int(spec.split(".")[0] or 0)
    return "·".rjust(width) if v is None else format(v, spec)


def report(results: dict, labels: list, seeds: list, setup: dict, out) -> None:
    first = results[(labels[0], seeds[0])]
    print(f"bench_eps0_auto: Fashion-MNIST, first {setup['subset']} training images, small_cnn "
          f"({first['params']} parameters), b0 = 8, eta0 = 0.1, delta = 2, gamma = 1.4, tau = {setup['tau']}, "
          f"b_max = 1024, exact monitor, {setup['train_samples']} training samples per run, seeds {seeds}, "
          f"{THREADS} thread", file=out)
    c0 = first["calibration"]
    print(f"\n(1) eps0 = auto, measured at theta_0 (sigma2 on the first {c0.n_samples} images, L on the first "
          f"{c0.hessian_samples}); eps0 = sqrt(2 C2/b0), C2 = L sigma2 eta0/(2 - L eta0)", file=out)
    print(f"{'seed':>4} {'L':>8} {'sigma2':>8} {'L*eta0':>7} {'C2':>9} {'eps0':>7} {'products':>8} "
          f"{'converged':>9} {'seconds':>7}", file=out)
    for s in seeds:
        c = results[("auto", s)]["calibration"]
        print(f"{s:4d} {c.L:8.4g} {c.sigma2:8.4g} {c.l_eta:7.3g} {c.C2:9.4g} {c.eps0:7.4g} {c.iterations:8d} "
              f"{str(c.converged):>9} {c.seconds:7.1f}", file=out)

    print("\n(2) stages: the step at which stage m ended (mean over seeds; · not in every seed), end of run",
          file=out)
    stages = sorted({t["stage"] for r in results.values() for t in r["transitions"]})
    head = " ".join(f"{'end ' + str(m - 1):>7}" for m in stages)
    print(f"{'eps0':>12} {head} {'stage':>5} {'b':>5} {'min |grad|':>10} {'test acc':>8} {'wall s':>7}", file=out)
    for label in labels:
        rows = [results[(label, s)] for s in seeds]
        ends = []
        for m in stages:
            steps = [next((t["step"] for t in r["transitions"] if t["stage"] == m), None) for r in rows]
            ends.append(None if None in steps else statistics.fmean(steps))
        eps_txt = f"auto {mean([r['eps0'] for r in rows]):.3g}" if label == "auto" else f"{label:g}"
        print(f"{eps_txt:>12} " + " ".join(fmt(e, "7.0f") for e in ends)
              + f" {mean([r['stage'] for r in rows]):5.2g} {mean([r['b'] for r in rows]):5.0f} "
              f"{mean([min(c['norm'] for c in r['checks']) for r in rows]):10.3f} "
              f"{mean([r['test_acc'] for r in rows]):8.4f} {mean([r['wall'] for r in rows]):7.0f}", file=out)

    print("\n(3) total SFO (training + measurement) to the first check with |grad f| <= eps, ratio to the auto run "
          "(mean over seeds where both got there; · none); auto's own SFO in thousands", file=out)
    print(f"{'eps0':>12} " + " ".join(f"{'<= ' + format(e, 'g'):>9}" for e in TARGETS), file=out)
    for label in labels:
        cells = []
        for eps in TARGETS:
            vals = []
            for s in seeds:
                mine, ref = first_below(results[(label, s)], eps), first_below(results[("auto", s)], eps)
                if label == "auto":
                    vals.append(None if mine is None else mine / 1000)
                else:
                    vals.append(None if mine is None or ref is None else mine / ref)
            v = mean(vals)
            cells.append(fmt(v, "8.1f") + "k" if label == "auto" and v is not None else fmt(v, "9.3f"))
        eps_txt = "auto" if label == "auto" else f"{label:g}"
        print(f"{eps_txt:>12} " + " ".join(cells), file=out)
    reached = {label: [sum(first_below(results[(label, s)], e) is not None for s in seeds) for e in TARGETS]
               for label in labels}
    print("    seeds reaching each eps: " + "; ".join(f"{'auto' if k == 'auto' else format(k, 'g')}: "
                                                     + "/".join(map(str, v)) for k, v in reached.items()), file=out)

    print("\n(4) the constants again at the end of each run (theta_T, same samples and seed), mean over seeds",
          file=out)
    print(f"{'eps0':>12} {'L(T)':>8} {'L(T)/L(0)':>9} {'sigma2(T)':>9} {'s2(T)/s2(0)':>11} {'eps_ref(T)':>10} "
          f"{'eps_ref(T)/eps0_auto':>20}", file=out)
    for label in labels:
        rows, autos = [results[(label, s)] for s in seeds], [results[("auto", s)]["calibration"] for s in seeds]
        eps_t = [r["end"].eps0 if r["end"].stable else None for r in rows]
        print(f"{'auto' if label == 'auto' else format(label, 'g'):>12} {mean([r['end'].L for r in rows]):8.4g} "
              f"{mean([r['end'].L / a.L for r, a in zip(rows, autos)]):9.2f} "
              f"{mean([r['end'].sigma2 for r in rows]):9.4g} "
              f"{mean([r['end'].sigma2 / a.sigma2 for r, a in zip(rows, autos)]):11.2f} "
              f"{fmt(mean(eps_t), '10.4g')} "
              f"{fmt(mean([None if e is None else e / a.eps0 for e, a in zip(eps_t, autos)]), '20.2f')}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 000 images, tau = 100, 20 000 samples, seed 0 (about 10 min)")
    parser.add_argument("--seeds", default=None)
    parser.add_argument("--grid", default=",".join(map(str, GRID)))
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    setup = dict(QUICK if args.quick else FULL)
    seeds = [int(s) for s in (args.seeds or setup["seeds"]).split(",")]
    grid = [float(g) for g in args.grid.split(",")]
    if any(not (math.isfinite(g) and g > 0) for g in grid):
        parser.error(f"--grid must list numbers > 0; got {args.grid}")
    torch.set_num_threads(THREADS)
    labels = ["auto", *grid]
    results = {}
    for seed in seeds:
        for label in labels:
            t = time.perf_counter()
            results[(label, seed)] = r = run(setup, label, seed)
            print(f"[seed {seed}] eps0 = {label} ({r['eps0']:.4g}): stage {r['stage']}, b {r['b']}, "
                  f"{len(r['checks'])} checks, {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    text = io.StringIO()
    report(results, labels, seeds, setup, text)
    emit(text.getvalue(), args.out)


if __name__ == "__main__":
    main()
