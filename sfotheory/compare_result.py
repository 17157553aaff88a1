r"""What ``sfo compare`` measured: the record, its table, its JSON file and its figure.

A :class:`ComparisonResult` holds, per policy family and target ε, the steps t*(ε), the
training SFO N(ε) and the SFO with measurement N_meas(ε) under the expectation criterion of
:mod:`sfotheory.compare`, each with its bootstrap interval, and the fraction of replicates that
reached ε on their own; beside them the grid, every grid point's tuning numbers, the chosen
points, how the runs stopped and the wall time. ``inf`` means not reached (in JSON: "inf").

>>> r = ComparisonResult.from_dict({"problem": {"name": "quadratic", "params": {}, "seed": 0}, "eps": [0.1],
...     "families": ["constant"], "settings": {}, "grid": {}, "tuning": {}, "chosen": [], "stops": {},
...     "timing": {}, "rows": [{"policy": "constant", "eps": 0.1, "steps": "inf", "steps_lo": 40.0,
...                             "steps_hi": "inf", "sfo": "inf", "sfo_lo": 320.0, "sfo_hi": "inf",
...                             "measured": "inf", "measured_lo": 320.0, "measured_hi": "inf", "reached": 0.5}]})
>>> r.rows[0]["steps"], ComparisonResult.from_dict(r.to_dict()) == r
(inf, True)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .compare_grid import FAMILIES

__all__ = ["ComparisonResult", "plot_comparison"]

FORMAT = "sfotheory.ComparisonResult/1"


@dataclass
class ComparisonResult:
    """The comparison of :func:`sfotheory.compare.run_comparison` (fields as in its returned record)."""

    problem: dict
    eps: list
    families: list
    settings: dict
    grid: dict
    tuning: dict
    chosen: list
    rows: list
    stops: dict
    timing: dict
    command: str = field(default="")

    # -- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-friendly: ±∞ and NaN as strings."""
        return {"format": FORMAT, **_jsonable(asdict(self))}

    @classmethod
    def from_dict(cls, d: dict) -> ComparisonResult:
        d = dict(d)
        d.pop("format", None)
        return cls(**_unjson(d))

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path) -> ComparisonResult:
        d = json.loads(Path(path).read_text())
        if d.get("format") != FORMAT:
            from .validation import fail
            fail("path", "ComparisonResult.load", f"a file written by ComparisonResult.save ({FORMAT})",
                 d.get("format"))
        return cls.from_dict(d)

    # -- views ----------------------------------------------------------------------------------------
    def row(self, family: str, eps: float) -> dict:
        """The result row of ``family`` at target ``eps``."""
        for r in self.rows:
            if r["policy"] == family and math.isclose(r["eps"], eps):
                return r
        raise KeyError((family, eps))

    def table(self) -> str:
        """The printed report: setup, criterion, grid, tuning, the table, the wall time."""
        s, p = self.settings, self.problem
        params = ", ".join(f"{k}={v}" for k, v in p.get("params", {}).items())
        pct = round(100 * s["confidence"])
        cost = s["check_cost"]
        lines = [
            f"problem {p['name']} ({params}), seed {p['seed']}: L = {p['L']:.4g}, sigma2 = {p['sigma2']:.4g} "
            f"({'exact' if p['sigma2_exact'] else 'bound'}), f(theta0) - f_* = {p['f_theta0'] - p['f_star']:.4g}, "
            f"||grad f(theta0)|| = {s['g0']:.4g}",
            f"criterion (the paper's, in expectation): t*(eps) = the first observed step t (every {s['observe_every']}"
            f" steps) with mean over replicates of ||grad f(theta_t)|| <= eps; steps = t*; training SFO = mean over "
            f"replicates of the samples that produced theta_t*; SFO with measurement adds the policy's checks "
            f"(an exact ||grad f|| costs {cost} SFO here; batch statistics cost none); runs stop at "
            f"T = {s['max_steps']} steps or N_max = {s['budget']} training SFO, and a mean over a run that stopped "
            f"there is undefined (not reached).",
            f"intervals: {pct}% percentile bootstrap over replicates ({s['resamples']} resamples, the same resampled indices for "
            f"every policy); inf = not reached in more than {(100 - pct) / 2:g}% of resamples. reached = fraction of "
            f"replicates whose own ||grad f(theta_t)|| <= eps at some observed t.",
        ]
        lines += self._grid_lines()
        lines.append(f"tuning: on {s['tune_replicates']} replicates of seed {s['tune_seed']} (not the reported ones); "
                     "per policy the grid point with the least training SFO to the smallest eps that some grid point "
                     "reaches (ties: fewer steps); none reached: the least min_t mean ||grad f||.")
        for f, cand in zip(self.families, self.chosen):
            tun = self.tuning[f]
            lines.append(f"  {f:<15} eta0 = {cand['eta_factor']:g}/L, c = {_value(cand['value'])}  "
                         f"({tun['rule']}; {len(tun['candidates'])} grid points)")
        lines.append(f"results: {s['replicates']} replicates of seed {s['seed']}")
        head = (f"{'policy':<15} {'eps':>8} {'steps':>7} {f'[{pct}% CI]':>17} {'train SFO':>10} {f'[{pct}% CI]':>19}"
                f" {'SFO+meas':>10} {f'[{pct}% CI]':>19} {'reached':>7}")
        lines.append(head)
        for f in self.families:
            for e in self.eps:
                r = self.row(f, e)
                lines.append(f"{f:<15} {e:>8.4g} {_n(r['steps']):>7} {_ci(r['steps_lo'], r['steps_hi']):>17} "
                             f"{_n(r['sfo']):>10} {_ci(r['sfo_lo'], r['sfo_hi']):>19} {_n(r['measured']):>10} "
                             f"{_ci(r['measured_lo'], r['measured_hi']):>19} {r['reached']:>7.2f}")
        stopped = [f"{f}: " + ", ".join(f"{k} {v}" for k, v in st.items() if v) for f, st in self.stops.items()
                   if any(st.values())]
        if stopped:
            lines.append("how the reported runs ended (budget N_max, step limit T, diverged, stopped by the policy): "
                         + "; ".join(stopped))
        t = self.timing
        if t:
            lines.append(f"wall time {t['total_wall']:.1f} s (tuning {t['tuning_wall']:.1f} s, evaluation "
                         f"{t['evaluation_wall']:.1f} s, intervals {t['analysis_wall']:.1f} s) with {s.get('jobs', 1)} "
                         f"process(es); CPU time {t['total_cpu']:.1f} s")
        return "\n".join(lines)

    def _grid_lines(self) -> list[str]:
        s = self.settings
        lines = [f"grid: eta0 in {{{', '.join(f'{f:g}' for f in s['eta_factors'])}}}/L for every policy x 3 values "
                 f"of its main constant c; b0 = {s['b0']}, b_max = {s['b_max']}, eta_max = 1/L; b clipped to "
                 "[1, b_max], and grid points that the clipping makes equal run once (sfotheory.compare_grid)"]
        for f in self.families:
            fam = FAMILIES[f]
            stars = f"; b*(eta0, eps_min) at the three eta0 = {', '.join(str(b) for b in s['b_star'])}" \
                if f in ("constant", "cosine") and "b_star" in s else ""
            lines.append(f"  {f:<15} {fam.label}; {fam.constant}, c in {{{', '.join(_value(v) for v in fam.values)}}}"
                         + stars)
        return lines


def _value(v: float) -> str:
    """c as written in the grid: 1/32 rather than 0.03125."""
    if 0 < v < 1 and round(1 / v) >= 8 and math.isclose(1 / v, round(1 / v)):
        return f"1/{round(1 / v)}"
    return f"{v:g}"


def _n(x: float) -> str:
    if x is None or math.isinf(x):
        return "-"
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def _ci(lo, hi) -> str:
    def g(x):
        return "inf" if math.isinf(x) else (f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}")
    return f"[{g(lo)}, {g(hi)}]"


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


def _unjson(v):
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, list):
        return [_unjson(x) for x in v]
    if isinstance(v, dict):
        return {k: _unjson(x) for k, x in v.items()}
    return v


def plot_comparison(result: ComparisonResult, path) -> Path:
    """SFO to ε and steps to ε against ε, one line per policy, log axes, bootstrap intervals as bars.

    Solid: training SFO; dashed, in the same colour: SFO with measurement where it differs.
    A target a policy does not reach is left out of its line. matplotlib, Agg backend.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_n, ax_k) = plt.subplots(1, 2, figsize=(11, 4.6))
    pct = round(100 * result.settings["confidence"])
    for i, f in enumerate(result.families):
        color = f"C{i % 10}"
        rows = [result.row(f, e) for e in result.eps]
        for ax, key, style, label in ((ax_n, "sfo", "-", f), (ax_n, "measured", "--", None), (ax_k, "steps", "-", f)):
            pts = [(r["eps"], r[key], r[f"{key}_lo"], r[f"{key}_hi"]) for r in rows if math.isfinite(r[key])]
            if not pts or (key == "measured" and all(r["measured"] == r["sfo"] for r in rows)):
                continue
            e, v, lo, hi = (np.array(x, dtype=float) for x in zip(*pts))
            hi = np.where(np.isfinite(hi), hi, v)
            ax.errorbar(e, v, yerr=[v - lo, hi - v], color=color, ls=style, marker="o", ms=3, capsize=2,
                        label=label)
    for ax, ylabel in ((ax_n, "SFO to eps (solid: training; dashed: with measurement)"), (ax_k, "steps to eps")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("target eps (mean over replicates of ||grad f|| <= eps)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_k.legend(fontsize=7, loc="best")
    p = result.problem
    fig.suptitle(f"{p['name']}: {result.settings['replicates']} replicates, each policy tuned on its grid; "
                 f"{pct}% bootstrap intervals", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
