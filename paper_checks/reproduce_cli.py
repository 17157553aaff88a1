"""``sfo reproduce``: run every paper check and write one report folder.

    sfo reproduce [--mode quick|standard|full] [--only CLAIM ...] [--data-dir DIR] [--out DIR]

Quick mode (the default) runs each check on CPU-sized problems (synthetic problems and a
Fashion-MNIST subset, nothing downloaded) with few seeds; ``--mode standard`` runs at least 5
paired seeds for every torch claim; each report states its wall time (the committed ones are in
``docs/results/reproduce_quick`` and ``docs/results/reproduce_standard``);
``--mode full`` (or ``--full``) uses more seeds and data (and CIFAR from ``--data-dir`` on a GPU).
The report is ``OUT/report.md`` with its figures and ``results.json`` beside it.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from sfotheory.progress import Progress
from sfotheory.validation import ParameterError

__all__ = ["register", "run_checks"]


def _modules():
    from . import CHECKS

    mods = {}
    for name in CHECKS:
        mod = importlib.import_module(f"paper_checks.{name}")
        mods[mod.CLAIM.id] = mod
    return mods


def run_checks(only=None, *, mode: str = "quick", out_dir="reports/latest", data_dir=None, stream=None,
               command: str = "sfo reproduce"):
    """Run the checks (all, or the claim ids in ``only``), write the report, return (results, report path)."""
    from .common import RunContext
    from .report import environment, write_report

    mods = _modules()
    names = list(mods) if not only else list(only)
    unknown = [n for n in names if n not in mods]
    if unknown:
        raise ParameterError(f"The 'only' parameter of sfo reproduce must name claims among "
                             f"{', '.join(mods)}. Got {', '.join(unknown)} instead.")
    out_dir = Path(out_dir)
    env = environment()          # the code's commit as the run starts: what the checks below import
    progress = Progress(total=len(names), label="reproduce", stream=sys.stderr if stream is None else stream,
                        every=2.0)
    ctx = RunContext(mode=mode, out_dir=out_dir, data_dir=data_dir, progress=progress)
    results, t0 = [], time.perf_counter()
    for name in names:
        progress.status = {}
        progress.update(0, check=name)
        t = time.perf_counter()
        result = mods[name].run(ctx)
        result.wall_time_s = time.perf_counter() - t
        results.append(result)
        progress.update(1, check=name, verdict=result.verdict)
    progress.close()
    meta = {"mode": mode, "wall_time_s": time.perf_counter() - t0, "command": command,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "environment": env}
    return results, write_report(results, out_dir, meta)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="run every paper check and write a Markdown report with verdicts and figures",
        description="Run each claim of Umeda & Iiduka (2025) as a check (measured vs expected with its interval and "
                    "n; PASS, FAIL or INCONCLUSIVE; a figure), then our own questions beyond the paper, and write "
                    "OUT/report.md, which states its wall time. Quick mode runs on a CPU.")
    p.add_argument("--mode", choices=("quick", "standard", "full", "smoke"), default="quick",
                   help="quick: CPU-sized, few seeds (verdicts may be INCONCLUSIVE); standard: "
                        ">= 5 paired seeds for every torch claim; full: more seeds, full "
                        "Fashion-MNIST, CIFAR with --data-dir on a GPU (hours on a CPU); smoke: seconds, exercises "
                        "the code (its verdicts are not evidence)")
    p.add_argument("--full", action="store_true", help="the same as --mode full")
    p.add_argument("--only", nargs="+", metavar="CLAIM", help="run only these claims (ids as listed in the report)")
    p.add_argument("--data-dir", default=None, help="a folder with CIFAR in torchvision's layout (full mode)")
    p.add_argument("--out", default=None, help="report folder (default reports/reproduce-<UTC time>)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from .report import summary_lines

    mode = "full" if args.full else args.mode
    out = args.out or f"reports/reproduce-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    command = "sfo reproduce" + (f" --mode {mode}" if mode != "quick" else "") + \
        (f" --only {' '.join(args.only)}" if args.only else "")
    results, path = run_checks(args.only, mode=mode, out_dir=out, data_dir=args.data_dir, command=command)
    for r in results:
        print(r.text())
    meta = json.loads((Path(path).parent / "results.json").read_text())["meta"]
    print()
    print("\n".join(summary_lines(results, meta)))
    print(f"report: {path}")
    return 0
