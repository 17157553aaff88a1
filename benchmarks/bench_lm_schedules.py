"""Benchmark: Algorithm 2 against the constant, cosine and periodic baselines on a language model on real text.

Question (issue 15, "A language-model workload on real text"): the paper tests its adaptive batch-size and
learning-rate rule on image classifiers only. On a small decoder-only transformer trained on real text, does
Algorithm 2 reach a lower validation loss than the constant and cosine baselines for the same training SFO,
where do its stage changes fall, and what does its measurement of ‖∇f‖ cost?

Setup: the four configurations ``configs/fortunes_lm_{adaptive,constant,cosine,periodic}_cpu.toml`` (Debian's
fortunes, byte-level, 2 048 training sequences of 64 bytes, the 1.03 M-parameter ``tiny_gpt``, plain SGD, the
exact monitor over all 2 048 sequences, 4 epochs = 8 192 training sequences; validation loss on the first 512
held-out sequences after every ‖∇f‖ check and at the end), each trained by ``sfo train`` for every seed into
``OUT/SCHEDULE/seedS/``. Only the schedule differs: Algorithm 2 (b₀ = 8, η₀ = 0.1, δ = 2, γ = 1.4, ε₀ = 1,
τ = 100), constant (b = 128, η = 0.1), cosine (b = 128, η from 0.1 to 0 over the 64 steps), periodic (b ×2 and
η ×1.4 every 200 steps from b₀ = 8). The baselines' ‖∇f‖ measurements are logged only; they do not steer.

Each run is a subprocess ``python -m sfotheory.cli train --config FILE --seeds S... --out OUT/SCHEDULE``: a run
folder is then exactly what a user's ``sfo train`` writes (config.toml, summary.csv, seedS/log.jsonl), no state
of one run (torch threads, allocator, global RNG, imported modules) reaches the next, a diverged seed or a crash
stops only its own call, and an interrupted comparison continues where it stopped (finished seeds are kept, a
seed cut short is continued with ``--resume``). Starting Python and torch costs about 3 s a call, < 2% of a run.
A seed folder that holds a run of another configuration (its 'start' record's tables data, model, optimizer,
schedule, monitor, train, eval differ from the ones asked for) is refused, not reused.

Outputs, from the logs only (``--reuse`` skips the training): per schedule, with the mean and a 95% Student-t
interval over seeds (mean ± t₀.₉₇₅,ₙ₋₁ · s/√n): (1) the final validation loss (nats per token), the training and
measurement SFO, wall and check seconds; (2) the validation loss at equal training SFO, linearly interpolated
between the evaluations around each point (the points: ``--sfo-points``, else 4 evenly spaced over the range
every run of every schedule covers); (3) ‖∇f‖ at each check step; (4) the stage changes (step, training SFO,
b → b', η → η'); (5) the paired difference Algorithm 2 − baseline, seed by seed, of the final validation loss and
of the loss at the equal-SFO points, with its interval (negative: Algorithm 2 lower). A figure
(``--figure``): validation loss and ‖∇f‖ against steps and against training SFO, one colour per schedule, one
thin line per seed, the stage changes marked (▼) and ε_m of Algorithm 2 dotted.

Run: ``nice -n 19 python benchmarks/bench_lm_schedules.py [--seeds 0 1 2] [--out /tmp/lm_schedules]
[--figure docs/results/fortunes_lm_schedules.png] [--report FILE] [--reuse] [--quick] [--set table.key=value]``.
``--quick``: seed 0 on a smaller version of the same four runs (the first 256 sequences, 1 024 training sequences
per schedule, τ and the schedules' step counts scaled to fit, 64 validation sequences) into
``/tmp/lm_schedules_quick`` with its figure there: it exercises the whole script in 60–90 s (nice 19, on a shared
2-core machine) and measures nothing worth reporting. The full comparison: one run of each schedule took
168 (adaptive), 175 (constant), 116 (cosine) and 155 s (periodic) at nice 19 on that machine, 614 s a seed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from bisect import bisect_left
from dataclasses import dataclass, field

from sfotorch.config import load_config
from sfotorch.sfolog import read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: schedule name → its configuration; the first is the one compared with the others (Algorithm 2)
CONFIGS = {name: os.path.join(ROOT, "configs", f"fortunes_lm_{name}_cpu.toml")
           for name in ("adaptive", "constant", "cosine", "periodic")}
ADAPTIVE = "adaptive"
DEFAULT_OUT = "/tmp/lm_schedules"
DEFAULT_FIGURE = os.path.join(ROOT, "docs", "results", "fortunes_lm_schedules.png")
#: the tables that define a run: a seed folder is reused only when its 'start' record holds these unchanged
RUN_TABLES = ("data", "model", "optimizer", "schedule", "monitor", "train", "eval")
LEVEL = 0.95                 # two-sided level of the t intervals
SFO_POINT_COUNT = 4          # equal-SFO points when --sfo-points is not given

# --quick: the same four runs made small. Equal training SFO (train.max_samples) rather than train.max_steps,
# because the schedules' batches differ 16-fold (a step cap would give them 16-fold different sample budgets and
# no common SFO range); n = 256 makes a check cost 256 sequences instead of 2 048; τ, the cosine horizon and the
# periodic period shrink with the runs' step counts (1 024 / 8 = 128 steps at b = 8, 1 024 / 128 = 8 at b = 128),
# b_max with n.
QUICK = {"seeds": [0], "out": "/tmp/lm_schedules_quick",
         "common": ["data.subset=256", "eval.test_subset=64", "train.epochs=0", "train.max_samples=1024"],
         "schedule": {"adaptive": ["schedule.tau=20", "schedule.b_max=256"],
                      "constant": ["schedule.tau=2"],
                      "cosine": ["schedule.tau=2", "schedule.horizon=8"],
                      "periodic": ["schedule.tau=20", "schedule.period=40", "schedule.b_max=256"]}}


# -- reading one run ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    """What one seed's log.jsonl holds for the comparison.

    ``evals``: (step, training SFO, validation loss) per evaluation, by SFO (one per step: a step evaluated
    twice keeps its last record). ``checks``: the 'check' records with a measured ‖∇f‖. ``changes``: the
    records at which the stage changed (``stage_next`` ≠ ``stage``, on a check or not). ``train_sfo`` and
    ``measure_sfo``: the cumulative counts of the last record that has them.
    """

    schedule: str
    seed: int
    evals: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    changes: list = field(default_factory=list)
    train_sfo: int = 0
    measure_sfo: int = 0
    start: dict | None = None
    end: dict | None = None

    @property
    def final_loss(self) -> float | None:
        return self.evals[-1][2] if self.evals else None

    @property
    def finished(self) -> bool:
        return self.end is not None

    def loss_at(self, sfo: float) -> float | None:
        """The validation loss at training SFO ``sfo`` (linear between evaluations; None outside them)."""
        return value_at([e[1] for e in self.evals], [e[2] for e in self.evals], sfo)


def read_run(run_dir: str, schedule: str, seed: int) -> Run:
    """The :class:`Run` of ``run_dir/log.jsonl`` (as ``sfo train`` writes it)."""
    records = read_log(os.path.join(run_dir, "log.jsonl"))
    run = Run(schedule, seed)
    by_step = {}
    for r in records:
        kind = r.get("kind", "check")
        if kind == "start":
            run.start = r
        elif kind == "end":
            run.end = r
        elif kind == "eval" and r.get("test_loss") is not None:
            by_step[r["step"]] = (r["step"], r["samples"], float(r["test_loss"]))
        elif kind == "check":
            if r.get("norm") is not None:
                run.checks.append(r)
            if r.get("stage_next", r["stage"]) != r["stage"]:
                run.changes.append(r)
        if "samples" in r:
            run.train_sfo = max(run.train_sfo, int(r["samples"]))
        if "check_samples" in r:
            run.measure_sfo = max(run.measure_sfo, int(r["check_samples"]))
    run.evals = sorted(by_step.values(), key=lambda e: (e[1], e[0]))
    return run


def value_at(xs, ys, x) -> float | None:
    """``ys`` linearly interpolated at ``x`` over increasing ``xs``; None outside [xs[0], xs[-1]].

    >>> value_at([800, 2400], [3.2, 2.8], 2048)      # 3.2 + (2048 − 800)/1600 · (2.8 − 3.2)
    2.888
    >>> value_at([800, 2400], [3.2, 2.8], 2400), value_at([800, 2400], [3.2, 2.8], 700)
    (2.8, None)
    """
    i = bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return ys[i]
    if i == 0 or i == len(xs):
        return None
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def t_interval(values, level: float = LEVEL) -> tuple[float, float | None]:
    """Mean and half-width t_{(1+level)/2, n−1} · s/√n of ``values`` (None for n = 1): the project's
    :func:`paper_checks.verdicts.mean_interval`, as (mean, half-width).

    >>> m, h = t_interval([0.1, 0.3])                # s = 0.1414, s/√2 = 0.1, t₀.₉₇₅,₁ = 12.706
    >>> round(m, 6), round(h, 4)
    (0.2, 1.2706)
    """
    from paper_checks.verdicts import mean_interval

    values = [float(v) for v in values]
    if not values:
        raise ValueError("t_interval: got no values")
    est = mean_interval(values, confidence=level)
    return est.value, (None if est.interval is None else (est.high - est.low) / 2)


def load_runs(out_dir: str, schedules, seeds) -> dict[str, dict[int, Run]]:
    """``{schedule: {seed: Run}}`` for every ``out_dir/schedule/seedS/log.jsonl`` that exists."""
    runs = {}
    for name in schedules:
        for seed in seeds:
            run_dir = os.path.join(out_dir, name, f"seed{seed}")
            if os.path.exists(os.path.join(run_dir, "log.jsonl")):
                runs.setdefault(name, {})[seed] = read_run(run_dir, name, seed)
    return runs


# -- the comparison ----------------------------------------------------------------------------------------------

def sfo_points(runs: dict[str, dict[int, Run]], count: int = SFO_POINT_COUNT) -> list[int]:
    """``count`` training-SFO values evenly spaced over the range that every run's evaluations cover.

    The range is [largest first evaluation, smallest last evaluation]; empty when the runs share none.
    """
    all_runs = [r for by_seed in runs.values() for r in by_seed.values() if r.evals]
    if not all_runs:
        return []
    lo = max(r.evals[0][1] for r in all_runs)
    hi = min(r.evals[-1][1] for r in all_runs)
    if lo > hi:
        return []
    if count == 1 or lo == hi:
        return [lo]
    return sorted({round(lo + (hi - lo) * i / (count - 1)) for i in range(count)})


def compare(runs: dict[str, dict[int, Run]], points, reference: str = ADAPTIVE) -> dict:
    """Per schedule the per-seed values, and the paired differences ``reference`` − baseline by seed.

    Returns ``{"points": [...], "schedules": {name: {"seeds", "final_loss", "loss_at": {x: [...]},
    "train_sfo", "measure_sfo", "wall_s", "check_s"}}, "paired": {baseline: {"final": [(seed, d)],
    x: [(seed, d)]}}}``; a value a run lacks (a point outside its evaluations) is None and left out of
    the pairs.
    """
    out = {"points": list(points), "schedules": {}, "paired": {}}
    for name, by_seed in runs.items():
        seeds = sorted(by_seed)
        rows = [by_seed[s] for s in seeds]
        summaries = [(r.end or {}).get("summary", {}) for r in rows]
        out["schedules"][name] = {
            "seeds": seeds,
            "final_loss": [r.final_loss for r in rows],
            "loss_at": {x: [r.loss_at(x) for r in rows] for x in points},
            "train_sfo": [r.train_sfo for r in rows],
            "measure_sfo": [r.measure_sfo for r in rows],
            "wall_s": [s.get("wall_s") for s in summaries],
            "check_s": [s.get("check_s") for s in summaries],
        }
    if reference not in runs:
        return out
    ref = runs[reference]
    for name, by_seed in runs.items():
        if name == reference:
            continue
        common = sorted(set(ref) & set(by_seed))
        pairs = {"final": [(s, ref[s].final_loss, by_seed[s].final_loss) for s in common]}
        for x in points:
            pairs[x] = [(s, ref[s].loss_at(x), by_seed[s].loss_at(x)) for s in common]
        out["paired"][name] = {k: [(s, a - b) for s, a, b in v if a is not None and b is not None]
                               for k, v in pairs.items()}
    return out


def stage_table(by_seed: dict[int, Run]) -> list[dict]:
    """Per stage change k (the k-th of a run): how many seeds made it, and their steps, SFO, b and η."""
    rows = []
    depth = max((len(r.changes) for r in by_seed.values()), default=0)
    for k in range(depth):
        made = [r.changes[k] for r in by_seed.values() if len(r.changes) > k]
        rows.append({"change": k, "seeds": len(made), "of": len(by_seed),
                     "step": [c["step"] for c in made], "samples": [c["samples"] for c in made],
                     "b": (made[0]["b"], made[0]["b_next"]), "eta": (made[0]["eta"], made[0]["eta_next"]),
                     "same_b_eta": all((c["b"], c["b_next"], c["eta"], c["eta_next"]) ==
                                       (made[0]["b"], made[0]["b_next"], made[0]["eta"], made[0]["eta_next"])
                                       for c in made)})
    return rows


def norm_table(by_seed: dict[int, Run]) -> list[dict]:
    """Per check step: the seeds' training SFO, ‖∇f‖ and ε_m there."""
    steps = sorted({c["step"] for r in by_seed.values() for c in r.checks})
    rows = []
    for step in steps:
        at = [c for r in by_seed.values() for c in r.checks if c["step"] == step]
        rows.append({"step": step, "samples": [c["samples"] for c in at], "norm": [c["norm"] for c in at],
                     "eps_m": [c["eps_m"] for c in at]})
    return rows


# -- printing ----------------------------------------------------------------------------------------------------

def fmt_ci(values, spec: str = ".4f") -> str:
    """``mean ± half (n)`` of the values that are not None; ``·`` when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return "·"
    mean, half = t_interval(values)
    if half is None:
        return f"{mean:{spec}} (n=1)"
    return f"{mean:{spec}} ± {half:{spec}} (n={len(values)})"


def _budget(train: dict) -> str:
    """The limits of a run's [train] table that are set, e.g. ``epochs=4``."""
    parts = [f"{k}={train[k]}" for k in ("epochs", "max_samples", "max_steps") if train.get(k)]
    return ", ".join(parts) or "?"


def report(runs: dict[str, dict[int, Run]], points, out) -> dict:
    """Print the comparison of ``runs`` to ``out``; return :func:`compare`'s dict."""
    result = compare(runs, points)
    names = list(runs)
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    print(f"bench_lm_schedules: Debian fortunes, byte-level tiny_gpt; seeds {seeds}; mean ± half-width of the "
          f"{LEVEL:.0%} t interval over seeds (n = seeds)", file=out)
    for name in names:
        first = next(iter(runs[name].values()))
        start = first.start or {}
        sched = start.get("schedule", {})
        cfg = start.get("config", {})
        unfinished = [s for s, r in runs[name].items() if not r.finished]
        print(f"  {name:<9} policy {sched.get('name', '?')}, b0 {sched.get('b0', '?')}, eta0 {sched.get('eta0', '?')}, "
              f"tau {sched.get('tau', '?')}, n {start.get('n', '?')}, validation {start.get('n_test', '?')} sequences, "
              f"train {_budget(cfg.get('train', {}))}" + (f"; NOT FINISHED: seeds {unfinished}" if unfinished else ""),
              file=out)

    print("\n(1) at the end of the run: validation loss (nats/token), training and measurement SFO, seconds",
          file=out)
    print(f"{'schedule':<9} {'final val loss':>26} {'training SFO':>22} {'measurement SFO':>24} "
          f"{'wall s':>18} {'check s':>18}", file=out)
    for name in names:
        s = result["schedules"][name]
        print(f"{name:<9} {fmt_ci(s['final_loss']):>26} {fmt_ci(s['train_sfo'], '.0f'):>22} "
              f"{fmt_ci(s['measure_sfo'], '.0f'):>24} {fmt_ci(s['wall_s'], '.0f'):>18} "
              f"{fmt_ci(s['check_s'], '.0f'):>18}", file=out)

    print("\n(2) validation loss at equal training SFO (linear between the evaluations around each point)", file=out)
    if points:
        print(f"{'schedule':<9} " + " ".join(f"{'SFO ' + str(x):>26}" for x in points), file=out)
        for name in names:
            s = result["schedules"][name]
            print(f"{name:<9} " + " ".join(f"{fmt_ci(s['loss_at'][x]):>26}" for x in points), file=out)
    else:
        print("    (no training SFO that every run's evaluations cover)", file=out)

    print("\n(3) ||grad f|| at the checks (exact, all n training sequences; only Algorithm 2 acts on it)", file=out)
    for name in names:
        print(f"  {name}", file=out)
        print(f"  {'step':>6} {'training SFO':>22} {'||grad f||':>26} {'eps_m':>8}", file=out)
        for row in norm_table(runs[name]):
            print(f"  {row['step']:>6} {fmt_ci(row['samples'], '.0f'):>22} {fmt_ci(row['norm']):>26} "
                  f"{statistics.fmean(row['eps_m']):8.4f}", file=out)

    print("\n(4) stage changes: the k-th change of a run, over the seeds that made it", file=out)
    for name in names:
        table = stage_table(runs[name])
        if not table:
            print(f"  {name}: none", file=out)
            continue
        for row in table:
            b0, b1 = row["b"]
            e0, e1 = row["eta"]
            same = "" if row["same_b_eta"] else " (b, eta differ between seeds)"
            print(f"  {name:<9} change {row['change'] + 1}: {row['seeds']}/{row['of']} seeds, step "
                  f"{fmt_ci(row['step'], '.0f')}, training SFO {fmt_ci(row['samples'], '.0f')}, "
                  f"b {b0} -> {b1}, eta {e0:.4g} -> {e1:.4g}{same}", file=out)
        for seed, run in sorted(runs[name].items()):
            steps = ", ".join(f"{c['step']} ({c['samples']})" for c in run.changes) or "none"
            print(f"  {'':<9}   seed {seed}: step (training SFO) {steps}", file=out)

    print(f"\n(5) paired by seed: {ADAPTIVE} - baseline, validation loss (negative: {ADAPTIVE} lower)", file=out)
    if not result["paired"]:
        print(f"    (no {ADAPTIVE} runs to pair with)", file=out)
    for name, pairs in result["paired"].items():
        cells = [fmt_ci([d for _, d in pairs["final"]])] + [fmt_ci([d for _, d in pairs[x]]) for x in points]
        print(f"  {ADAPTIVE} - {name}:", file=out)
        print(f"    {'final':>26} " + " ".join(f"{'SFO ' + str(x):>26}" for x in points), file=out)
        print(f"    {cells[0]:>26} " + " ".join(f"{c:>26}" for c in cells[1:]), file=out)
        print("    per seed (final): " + ", ".join(f"seed {s}: {d:+.4f}" for s, d in pairs["final"]), file=out)
    return result


# -- the figure --------------------------------------------------------------------------------------------------

def draw(runs: dict[str, dict[int, Run]], path: str, *, dpi: int = 130) -> str:
    """Validation loss and ‖∇f‖ against steps and against training SFO; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(12, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex="col")
    colours = {name: f"C{i}" for i, name in enumerate(runs)}
    for name, by_seed in runs.items():
        c = colours[name]
        for run in by_seed.values():
            curves = {"loss": ([e[0] for e in run.evals], [e[1] for e in run.evals], [e[2] for e in run.evals]),
                      "norm": ([r["step"] for r in run.checks], [r["samples"] for r in run.checks],
                               [r["norm"] for r in run.checks])}
            for row, key in enumerate(("loss", "norm")):
                steps, sfo, ys = curves[key]
                for col, xs in enumerate((steps, sfo)):
                    ax = axes[row, col]
                    ax.plot(xs, ys, "-", color=c, lw=0.9, alpha=0.8, marker=".", ms=3)
                    for ch in run.changes:           # ▼ on the curve where the stage changed
                        x = ch["step"] if col == 0 else ch["samples"]
                        y = value_at(xs, ys, x) if xs else None
                        if y is not None:
                            ax.plot([x], [y], "v", color=c, mec="k", mew=0.6, ms=7, zorder=5)
                        else:                        # outside the curve: a tick at the panel's foot
                            ax.plot([x], [0.02], "v", color=c, mec="k", mew=0.6, ms=7,
                                    transform=ax.get_xaxis_transform(), clip_on=False)
            if name == ADAPTIVE and run.checks:     # ε_m in force, from the start to the last evaluation
                last = run.evals[-1] if run.evals else (run.checks[-1]["step"], run.checks[-1]["samples"])
                eps = [run.checks[0]["eps_m"]] + [r.get("eps_m_next", r["eps_m"]) for r in run.checks]
                for col, key in enumerate(("step", "samples")):
                    xs = [1 if col == 0 else 0] + [r[key] for r in run.checks]
                    end = max(last[col], xs[-1])
                    axes[1, col].step(xs + [end], eps + [eps[-1]], where="post", color=c, lw=0.8, ls=":",
                                      alpha=0.8)
    for col, xlabel in enumerate(("step (log scale: b = 128 runs take 16× fewer steps)",
                                  "training SFO (sequences)")):
        axes[1, col].set_xlabel(xlabel)
        axes[1, col].set_yscale("log")
    axes[0, 0].set_xscale("log")
    axes[0, 0].set_ylabel("validation loss (nats / token)")
    axes[1, 0].set_ylabel("‖∇f(θ)‖ (exact, n sequences)")
    handles = [Line2D([], [], color=colours[n], lw=1.5, label=f"{n} ({len(runs[n])} seed{'s' * (len(runs[n]) != 1)})")
               for n in runs]
    handles.append(Line2D([], [], ls="none", marker="v", color="0.6", mec="k", label="stage change"))
    if ADAPTIVE in runs:
        handles.append(Line2D([], [], color=colours[ADAPTIVE], ls=":", label="ε_m of Algorithm 2"))
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=len(handles))
    fig.suptitle("tiny_gpt on Debian fortunes: Algorithm 2 against constant, cosine and periodic schedules "
                 "(one thin line per seed)", fontsize=10)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# -- training ----------------------------------------------------------------------------------------------------

def _normalized(value):
    return json.loads(json.dumps(value))


def plan(name: str, overrides, seeds, out_dir: str) -> tuple[list[int], list[int]]:
    """Which seeds of schedule ``name`` to train: ``(to_train, to_resume)``; finished seeds are kept.

    Refuses (ValueError) a seed folder whose run has other data, model, optimizer, schedule, monitor, train
    or eval tables than ``CONFIGS[name]`` with ``overrides``.
    """
    cfg = load_config(CONFIGS[name], overrides)
    wanted = {t: _normalized(cfg[t]) for t in RUN_TABLES}
    to_train, to_resume = [], []
    for seed in seeds:
        run_dir = os.path.join(out_dir, name, f"seed{seed}")
        if not os.path.exists(os.path.join(run_dir, "log.jsonl")):
            to_train.append(seed)
            continue
        run = read_run(run_dir, name, seed)
        saved = (run.start or {}).get("config", {})
        diffs = [f"{t}.{k}" for t in RUN_TABLES for k in sorted(set(wanted[t]) | set(saved.get(t, {})))
                 if wanted[t].get(k) != saved.get(t, {}).get(k)]
        if diffs:
            raise ValueError(f"The '--out' parameter of bench_lm_schedules must be a folder whose runs were made "
                             f"with the configuration asked for. Got {run_dir}, whose run differs in {diffs} "
                             f"instead (remove it or choose another --out).")
        if not run.finished:
            to_train.append(seed)
            to_resume.append(seed)
    return to_train, to_resume


def train_schedule(name: str, overrides, seeds, out_dir: str, *, resume: bool) -> float:
    """``sfo train`` of schedule ``name`` for ``seeds`` into ``out_dir/name`` (a subprocess); its seconds."""
    cmd = [sys.executable, "-m", "sfotheory.cli", "train", "--config", CONFIGS[name],
           "--seeds", *map(str, seeds), "--out", os.path.join(out_dir, name)]
    for o in overrides:
        cmd += ["--set", o]
    if resume:
        cmd.append("--resume")
    print(f"[bench_lm_schedules] {name}: seeds {seeds}{' (resuming)' if resume else ''}: {' '.join(cmd[1:])}",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):          # 1: a seed diverged, which is a result; 2: bad input
        raise SystemExit(f"bench_lm_schedules: sfo train of {name} failed with exit status {done.returncode}")
    print(f"[bench_lm_schedules] {name}: {len(seeds)} seed(s) in {seconds:.0f} s "
          f"({seconds / len(seeds):.0f} s a run)", file=sys.stderr, flush=True)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2; --quick: 0)")
    parser.add_argument("--schedules", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help="schedules to run and compare (default: all four)")
    parser.add_argument("--out", default=None,
                        help=f"folder of the runs, OUT/SCHEDULE/seedS (default {DEFAULT_OUT}; --quick: {QUICK['out']})")
    parser.add_argument("--figure", default=None,
                        help="the figure (default docs/results/fortunes_lm_schedules.png; --quick: in OUT)")
    parser.add_argument("--report", default=None,
                        help="also write the printed comparison to this file, after a first line '$ COMMAND'")
    parser.add_argument("--reuse", action="store_true", help="only read the runs in OUT; train nothing")
    parser.add_argument("--quick", action="store_true",
                        help="seed 0 of a small version of the four runs (about a minute)")
    parser.add_argument("--sfo-points", nargs="+", type=int, default=None, metavar="N",
                        help="training SFO values for the equal-SFO comparison (default: 4 evenly spaced over "
                             "the range every run covers)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                        help="override one configuration key in every schedule's run (repeatable)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (QUICK["seeds"] if args.quick else [0, 1, 2])
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        parser.error(f"--seeds must be distinct integers >= 0; got {seeds}")
    out_dir = args.out or (QUICK["out"] if args.quick else DEFAULT_OUT)
    figure = args.figure or (os.path.join(out_dir, "fortunes_lm_schedules.png") if args.quick else DEFAULT_FIGURE)
    overrides = {name: (QUICK["common"] + QUICK["schedule"][name] if args.quick else []) + args.overrides
                 for name in args.schedules}

    if not args.reuse:
        try:
            plans = {name: plan(name, overrides[name], seeds, out_dir) for name in args.schedules}
        except ValueError as exc:
            print(f"bench_lm_schedules: error: {exc}", file=sys.stderr)
            return 2
        for name, (to_train, to_resume) in plans.items():
            if to_train:
                train_schedule(name, overrides[name], to_train, out_dir, resume=bool(to_resume))

    runs = load_runs(out_dir, args.schedules, seeds)
    if not runs:
        print(f"bench_lm_schedules: error: no runs of {args.schedules} for seeds {seeds} in {out_dir}",
              file=sys.stderr)
        return 2
    points = args.sfo_points if args.sfo_points else sfo_points(runs)
    text = io.StringIO()
    report(runs, points, text)
    print(text.getvalue(), end="")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:     # first line: the command (as docs/results/ has)
            fh.write(f"$ {shlex.join(['python', 'benchmarks/bench_lm_schedules.py', *argv])}\n{text.getvalue()}")
    print(f"figure: {draw(runs, figure)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
