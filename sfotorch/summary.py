r"""The summaries of ``sfo train``: one row per seed, and the mean ± std over the seeds.

``OUT/seedS/summary.csv`` holds one row (:func:`seed_summary`): the results, training and
measurement SFO, wall time, the software versions, the seed and the flattened configuration.
``OUT/summary.csv`` holds one row per seed, then rows 'mean' and 'std' (sample std, n − 1) of
:data:`SUMMARY_FIELDS` (:func:`seeds_table`); :func:`format_summary` is the same as text.

>>> runs = [{"seed": 0, "status": "finished", "test_acc": 0.5}, {"seed": 1, "status": "finished", "test_acc": 0.7}]
>>> result = {"out_dir": "runs/demo", "runs": runs, **summarize_seeds(runs)}
>>> print(format_summary(result))
runs/demo: 2 seed(s) (0:finished, 1:finished)
  test_acc       0.6 ± 0.141
"""

from __future__ import annotations

import csv
import math
import statistics

from .config import flatten_config
from .sfolog import read_log

__all__ = ["SUMMARY_FIELDS", "format_summary", "seed_summary", "seeds_table", "summarize_seeds", "write_csv"]

#: Numeric columns of a run's summary that the multi-seed summary averages.
SUMMARY_FIELDS = ("test_acc", "best_test_acc", "test_loss", "train_loss", "last_norm", "min_norm", "final_stage",
                  "final_b", "final_eta", "steps", "epochs", "train_samples", "check_samples", "sfo_total", "wall_s",
                  "check_s", "samples_per_s")


def seed_summary(cfg: dict, seed: int, run_dir: str, built, log, extra: dict, status: str, message: str, n: int,
                 vers: dict, env: dict) -> dict:
    """One seed's row: what its log, scheduler, loop and monitor hold at the end of the run.

    ``built``: the seed's :class:`~sfotorch.components.Components`; ``log``: its
    :class:`~sfotorch.runlog.RunLog` (read back for the norms and accuracies); ``extra``: the run
    state (the last evaluation); ``vers``, ``env``: :func:`~sfotorch.device.versions` and
    :func:`~sfotorch.device.resolve_device`.
    """
    sched = built.scheduler
    st = sched.state
    records = read_log(log.path)
    checks = [r for r in records if r.get("kind") == "check" and r.get("norm") is not None]
    norms = [r["norm"] for r in checks if isinstance(r["norm"], float) and math.isfinite(r["norm"])]
    accs = [r["test_acc"] for r in records if r.get("kind") == "eval"]
    wall = log.elapsed()
    last = extra.get("last_eval") or {}
    row = {
        "seed": seed, "status": status, "steps": built.loop.steps, "epochs": round(int(st.samples) / n, 4),
        "train_samples": int(st.samples), "check_samples": int(st.check_samples),
        "sfo_total": int(st.samples) + int(st.check_samples), "final_stage": int(st.stage),
        "final_b": int(st.batch_size), "final_eta": float(st.lr), "stage_changes": len(sched.transitions),
        "last_norm": norms[-1] if norms else None, "min_norm": min(norms) if norms else None,
        "test_acc": last.get("test_acc"), "best_test_acc": max(accs) if accs else None,
        "test_loss": last.get("test_loss"), "train_loss": last.get("train_loss"),
        "wall_s": round(wall, 2), "check_s": round(built.monitor.seconds, 2),
        "samples_per_s": round(int(st.samples) / max(wall - built.monitor.seconds, 1e-9), 1),
        "skipped_steps": built.loop.skipped, "n_train": n, "device": str(env["device"]), "threads": env["threads"],
        "amp": env["amp"], "channels_last": env["channels_last"], "message": message, **vers,
        "config_file": cfg.get("_source"), "run_dir": run_dir,
    }
    row.update(flatten_config(cfg))
    return row


def write_csv(path: str, rows: list[dict]) -> None:
    """``rows`` as CSV with the union of their keys as columns, in order of appearance (None as empty)."""
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


def _mean_std(values: list) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def summarize_seeds(rows: list[dict]) -> dict:
    """``{"mean": {...}, "std": {...}}`` of :data:`SUMMARY_FIELDS` over the seeds' rows (missing and
    NaN values left out; std is the sample std, None for one value)."""
    mean, std = {}, {}
    for key in SUMMARY_FIELDS:
        mean[key], std[key] = _mean_std([r.get(key) for r in rows])
    return {"mean": mean, "std": std}


def seeds_table(rows: list[dict], mean: dict, std: dict) -> list[dict]:
    """The rows of ``OUT/summary.csv``: seed, status and :data:`SUMMARY_FIELDS` per seed, then 'mean' and 'std'."""
    table = [{k: r.get(k) for k in ("seed", "status", *SUMMARY_FIELDS)} for r in rows]
    table.append({"seed": "mean", "status": "", **mean})
    table.append({"seed": "std", "status": "", **std})
    return table


def format_summary(result: dict) -> str:
    """The multi-seed summary as text lines ``key: mean ± std (n seeds)``."""
    n = len(result["runs"])
    lines = [f"{result['out_dir']}: {n} seed(s) "
             f"({', '.join(str(r['seed']) + ':' + r['status'] for r in result['runs'])})"]
    for key in SUMMARY_FIELDS:
        m, s = result["mean"][key], result["std"][key]
        if m is None:
            continue
        lines.append(f"  {key:<14} {m:.6g}" + (f" ± {s:.3g}" if s is not None else ""))
    return "\n".join(lines)
