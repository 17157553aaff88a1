"""The Markdown report of ``sfo reproduce``: claims, measured beside expected, verdicts, and figures.

``write_report(results, out_dir, meta)`` writes ``report.md`` and ``results.json`` into ``out_dir``
(figures are already there, written by the checks) and returns the report's path.
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

from .common import CheckResult

__all__ = ["environment", "write_report"]


def environment() -> dict:
    """Versions and the git commit, for the report header."""
    import numpy
    import scipy
    import sympy

    env = {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
           "sympy": sympy.__version__, "machine": f"{platform.machine()}, {platform.system()}"}
    try:
        import torch

        env["torch"] = torch.__version__
        env["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        env["torch_threads"] = torch.get_num_threads()
    except ModuleNotFoundError:
        env["torch"] = "not installed"
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = "unknown"
    return env


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(results: list[CheckResult], out_dir, meta: dict) -> Path:
    """Write ``report.md`` and ``results.json``; ``meta`` holds mode, wall time, command and environment."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    passed = sum(r.verdict == "PASS" for r in results)
    lines = [
        "# Does the paper hold? `sfo reproduce` report",
        "",
        "Umeda & Iiduka, *Adaptive Batch Size and Learning Rate Scheduler for SGD Based on Minimization of "
        "SFO Complexity* (arXiv 2508.05302). Each claim is measured and put beside what it expects; a FAIL is a "
        "result, stated with its numbers.",
        "",
        f"- mode: **{meta.get('mode')}**; {passed}/{len(results)} claims PASS; wall time "
        f"{meta.get('wall_time_s', 0):.0f} s",
        f"- command: `{meta.get('command', 'sfo reproduce')}`",
        "- environment: " + ", ".join(f"{k} {v}" for k, v in meta.get("environment", {}).items()),
        "",
        "| claim | verdict | first miss (or first measurement) | seeds | time |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        # the first miss says why a claim failed; a pass shows its first measurement
        key = next((c for c in r.comparisons if not c.ok), r.comparisons[0] if r.comparisons else None)
        summary = f"{key.quantity}: {key.measured} (expected {key.expected})" if key else "-"
        lines.append(f"| [{_cell(r.title)}](#{r.claim}) | **{r.verdict}** | {_cell(summary)} | "
                     f"{', '.join(map(str, r.seeds)) or '-'} | {r.wall_time_s:.0f} s |")
    for r in results:
        lines += ["", f"## {r.title}", f'<a id="{r.claim}"></a>', "",
                  f"**{r.verdict}** ({r.mode} mode, {r.wall_time_s:.0f} s). Tolerance: {r.tolerance}", "",
                  "| quantity | measured | expected | within tolerance |", "|---|---|---|---|"]
        lines += [f"| {_cell(c.quantity)} | {_cell(c.measured)} | {_cell(c.expected)} | {'yes' if c.ok else 'no'} |"
                  for c in r.comparisons]
        if r.notes:
            lines += ["", r.notes]
        if r.settings:
            lines += ["", "Settings: " + ", ".join(f"{k} = {v}" for k, v in r.settings.items())]
        lines += [f"\n![{r.claim}]({Path(f).name})" for f in r.figures]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "results": [r.to_dict() for r in results]},
                                                      indent=2, default=str))
    return path
