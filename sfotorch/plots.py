r"""``sfo plot``: figures of one or many ``sfo train`` runs, read back from their JSON-lines logs.

One overview figure (3 × 3 panels), every run drawn in its own colour, stage boundaries (the
steps where the stage m changed) as thin vertical lines in that colour:

=====================  =====================  ==========================
‖∇f‖ and ε_m vs SFO     ‖∇f‖ vs steps          ‖∇f‖ vs epochs
b_m vs SFO              η_m vs SFO             measurement SFO vs SFO
train loss vs epochs    test accuracy vs ep.   test loss vs epochs
=====================  =====================  ==========================

SFO on the x axes is the *training* SFO Σ|B_t| (``--x sfo_total`` adds the measurement cost).
For a single run, :func:`sfotorch.sfolog.plot_log`'s three-panel figure (‖∇f‖ with ε_m, b, η
against SFO) is written beside it. Both as PNG and PDF, drawn on matplotlib's Agg canvas
(no display, no pyplot state).

A ``RUN_DIR`` is a seed folder holding ``log.jsonl``, or a run folder whose ``seed*/``
subfolders hold one each (every seed is then drawn).
"""

from __future__ import annotations

import glob
import os

from sfotheory.validation import check_choice, fail

from .sfolog import plot_log, read_log

__all__ = ["find_runs", "load_run", "plot_runs"]

_X_LABEL = {"samples": "training SFO (samples)", "sfo_total": "SFO incl. measurement (samples)"}


def find_runs(paths) -> list[str]:
    """The seed folders (each with ``log.jsonl``) named by ``paths``, in order."""
    runs: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isfile(os.path.join(p, "log.jsonl")):
            runs.append(p)
            continue
        seeds = sorted(d for d in glob.glob(os.path.join(p, "seed*")) if os.path.isfile(os.path.join(d, "log.jsonl")))
        if not seeds:
            fail("RUN_DIR", "sfo plot", "a folder written by sfo train (holding log.jsonl, or seed*/log.jsonl)", p,
                 reason="no log.jsonl found there" if os.path.isdir(p) else "no such folder")
        runs.extend(seeds)
    return runs


def load_run(run_dir: str) -> dict:
    """``{label, n, checks, evals, start}`` from a seed folder's log (its 'check' and 'eval' records)."""
    records = read_log(os.path.join(run_dir, "log.jsonl"))
    start = next((r for r in records if r.get("kind") == "start"), {})
    checks = [r for r in records if r.get("kind", "check") == "check"]
    evals = [r for r in records if r.get("kind") == "eval"]
    parent = os.path.basename(os.path.dirname(os.path.abspath(run_dir)))
    label = f"{parent}/{os.path.basename(os.path.abspath(run_dir))}"
    return {"label": label, "n": start.get("n"), "checks": checks, "evals": evals, "start": start,
            "dir": run_dir}


def _epoch(r: dict, n) -> float | None:
    if "epoch" in r:
        return r["epoch"]
    return r["samples"] / n if n else None


def plot_runs(run_dirs, out_stem: str, *, x: str = "samples", formats=("png", "pdf"), dpi: int = 120) -> list[str]:
    """Draw the overview figure of ``run_dirs`` to ``out_stem``.png/.pdf (and, for one run, the
    :func:`~sfotorch.sfolog.plot_log` figure to ``out_stem``_sfo.png/.pdf). Returns the files written."""
    check_choice(x, tuple(_X_LABEL), "x", "plot_runs")
    for f in formats:
        check_choice(f, ("png", "pdf", "svg"), "formats", "plot_runs")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = [load_run(d) for d in find_runs(run_dirs)]
    for run in runs:
        if not run["checks"] and not run["evals"]:
            path = os.path.join(run["dir"], "log.jsonl")
            kinds = sorted({r.get("kind", "check") for r in read_log(path)})
            fail("RUN_DIR", "sfo plot", "a folder whose log.jsonl holds 'check' or 'eval' records to draw", run["dir"],
                 reason=f"{path} holds records of kind {', '.join(kinds)} only" if kinds else f"{path} is empty")
    fig = Figure(figsize=(15, 11), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 3)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for run, color in zip(runs, colors):
        checks, evals, n = run["checks"], run["evals"], run["n"]
        xs = [r[x] for r in checks]
        measured = [(r[x], r["step"], _epoch(r, n), r["norm"]) for r in checks
                    if isinstance(r.get("norm"), (int, float)) and r["norm"] == r["norm"]]
        for col, idx in enumerate((0, 1, 2)):
            pts = [(m[idx], m[3]) for m in measured if m[idx] is not None]
            if pts:
                axes[0, col].plot(*zip(*pts), "o-", ms=2.5, lw=1, color=color,
                                  label=run["label"] if col == 0 else None)
        if checks:
            first = checks[0]
            x_steps = [0] + xs
            axes[0, 0].step(x_steps, [first["eps_m"]] + [r.get("eps_m_next", r["eps_m"]) for r in checks],
                            where="post", color=color, lw=0.8, ls="--")
            axes[1, 0].step(x_steps, [first["b"]] + [r.get("b_next", r["b"]) for r in checks], where="post",
                            color=color, label=run["label"])
            axes[1, 1].step(x_steps, [first["eta"]] + [r.get("eta_next", r["eta"]) for r in checks],
                            where="post", color=color)
            axes[1, 2].plot([0] + [r["samples"] for r in checks], [0] + [r["check_samples"] for r in checks],
                            color=color)
            for r in checks:
                if r.get("stage_next", r["stage"]) != r["stage"]:
                    where = {0: r[x], 1: r["step"], 2: _epoch(r, n)}
                    for col in range(3):
                        if where[col] is not None:
                            axes[0, col].axvline(where[col], color=color, lw=0.6, alpha=0.5)
                    axes[1, 0].axvline(r[x], color=color, lw=0.6, alpha=0.5)
                    axes[1, 1].axvline(r[x], color=color, lw=0.6, alpha=0.5)
        for col, key in enumerate(("train_loss", "test_acc", "test_loss")):
            pts = [(_epoch(r, n), r[key]) for r in evals if r.get(key) is not None and _epoch(r, n) is not None]
            if pts:
                axes[2, col].plot(*zip(*pts), "o-", ms=2.5, lw=1, color=color, label=run["label"])
    titles = [["‖∇f(θ)‖ (dashed: ε_m)", "‖∇f(θ)‖", "‖∇f(θ)‖"],
              ["batch size b_m", "learning rate η_m", "measurement SFO (checks)"],
              ["train loss (mean over batches since last eval)", "test accuracy", "test loss"]]
    xlabels = [[_X_LABEL[x], "steps", "epochs"], [_X_LABEL[x], _X_LABEL[x], "training SFO (samples)"],
               ["epochs", "epochs", "epochs"]]
    for i in range(3):
        for j in range(3):
            ax = axes[i, j]
            ax.set_title(titles[i][j], fontsize=10)
            ax.set_xlabel(xlabels[i][j], fontsize=9)
            ax.grid(alpha=0.3)
    for j in range(3):
        if axes[0, j].has_data():
            axes[0, j].set_yscale("log")
    if axes[1, 0].has_data():
        axes[1, 0].set_yscale("log", base=2)
    if axes[2, 0].has_data():
        axes[2, 0].set_yscale("log")
    if runs:
        axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("sfo train runs — vertical lines: stage boundaries", fontsize=11)
    directory = os.path.dirname(os.path.abspath(out_stem))
    os.makedirs(directory, exist_ok=True)
    written = []
    for f in formats:
        path = f"{out_stem}.{f}"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    if len(runs) == 1 and runs[0]["checks"]:
        for f in formats:
            written.append(plot_log(runs[0]["checks"], f"{out_stem}_sfo.{f}", x=x, dpi=dpi))
    return written
