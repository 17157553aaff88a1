"""``sfo theory``: the closed-form numbers of Propositions 1 and 2 and the stage law, for given constants.

The formulas and their derivations: docs/theory.md, "Proposition 1", "Proposition 2" and
"Stage thresholds".

    sfo theory --L 1 --sigma2 1 --gap 1 --eta 0.1 --eps 0.5 [--b 64] [--n 50000] [--json]
    sfo theory --paper      # the authors' Algorithm 2 schedule, stage by stage

JSON keys: ``C1``, ``C2``, ``critical_batch_size``, ``steps_at_critical``,
``sfo_at_critical``, ``min_batch_size``, ``critical_batch_size_per_eta``, the
inputs, and with ``--b`` also ``b``, ``steps``, ``sfo``.
"""

from __future__ import annotations

import json
import math

from .complexity import (
    critical_batch_size,
    critical_batch_size_sensitivity,
    min_batch_size,
    sfo_complexity,
    steps_to_eps,
    theory_constants,
)
from .constants import ProblemConstants, WithoutReplacement, WithReplacement
from .paper import PAPER_ADAPTIVE, paper_schedule
from .rule import schedule_table, stage_values
from .stages import max_lr_increases
from .validation import ParameterError

__all__ = ["register", "theory_summary", "paper_report"]

_REQUIRED = ("L", "sigma2", "gap", "eta", "eps")


def theory_summary(constants: ProblemConstants, eta: float, eps: float, b: float | None = None,
                   variance=WithReplacement()) -> dict:
    """Every number ``sfo theory`` prints, as a dict (the JSON output)."""
    c1, c2 = theory_constants(constants, eta)
    b_star = critical_batch_size(constants, eta, eps, variance)
    out = {
        "L": constants.L, "sigma2": constants.sigma2, "gap": constants.gap, "eta": eta, "eps": eps,
        "variance": variance.to_dict(),
        "C1": c1, "C2": c2,
        "critical_batch_size": b_star,
        "steps_at_critical": steps_to_eps(constants, eta, eps, b_star, variance),
        "sfo_at_critical": sfo_complexity(constants, eta, eps, b_star, variance),
        "min_batch_size": min_batch_size(constants, eta, eps, variance),
    }
    if isinstance(variance, WithReplacement):
        out["critical_batch_size_per_eta"] = critical_batch_size_sensitivity(constants, eta, eps)
    if b is not None:
        out.update(b=b, steps=steps_to_eps(constants, eta, eps, b, variance),
                   sfo=sfo_complexity(constants, eta, eps, b, variance))
    return out


def _fmt(x: float) -> str:
    return "inf (eps is out of reach at this b)" if math.isinf(x) else f"{x:.6g}"


def _text(s: dict) -> str:
    model = "with replacement" if s["variance"]["model"] == "with_replacement" else \
        f"without replacement from n = {s['variance']['n']}"
    lines = [
        f"Constants: L = {s['L']:g}, sigma^2 = {s['sigma2']:g}, f(theta_0) - f_* = {s['gap']:g}; "
        f"eta = {s['eta']:g}, eps = {s['eps']:g}; sampling {model}",
        f"  C1 = 2 gap / (eta (2 - L eta))       = {_fmt(s['C1'])}",
        f"  C2 = L sigma^2 eta / (2 - L eta)      = {_fmt(s['C2'])}",
        "Proposition 2 (constant b and eta; target min_t E||grad f|| <= eps):",
        f"  critical batch size b*               = {_fmt(s['critical_batch_size'])}",
        f"  steps K(b*)                          = {_fmt(s['steps_at_critical'])}",
        f"  SFO   N(b*) = K(b*) b*               = {_fmt(s['sfo_at_critical'])}",
        f"  eps reachable only for b >           {_fmt(s['min_batch_size'])}",
    ]
    if "critical_batch_size_per_eta" in s:
        lines.append(f"  d b* / d eta                         = {_fmt(s['critical_batch_size_per_eta'])}"
                     "  (a larger eta moves b* up)")
    if "b" in s:
        ratio = s["sfo"] / s["sfo_at_critical"] if math.isfinite(s["sfo"]) else math.inf
        lines += [f"At b = {s['b']:g}:",
                  f"  steps K(b)                           = {_fmt(s['steps'])}",
                  f"  SFO   N(b)                           = {_fmt(s['sfo'])}  ({ratio:.3g} x N(b*))"]
    return "\n".join(lines)


def paper_report(L: float | None = None) -> str:
    """The authors' Algorithm 2 schedule, stage by stage, with γ < √δ and (given L) the η < 2/L check."""
    p = PAPER_ADAPTIVE
    schedule = paper_schedule()
    rows = schedule_table(schedule)
    lines = [
        "Algorithm 2 (adaptive joint scheduler) with the authors' defaults:",
        f"  b0 = {p['b0']}, eta0 = {p['eta0']}, eps0 = {p['eps0']}, delta = {p['delta']:g}, "
        f"gamma = {p['gamma']}, tau = {p['tau']} steps, b_max = {p['b_max']}",
        f"  gamma < sqrt(delta): {p['gamma']} < {math.sqrt(p['delta']):.6f} -> the variance sum of "
        "eta_m^2/b_m stays bounded (Proposition 1 (iii))",
        "  stage m advances when ||grad f(theta)|| <= eps_m = eps0 sqrt(b0 / b_m):",
        "     m      b_m        eta_m        eps_m",
    ]
    lines += [f"  {r['m']:4d} {r['b']:8d} {r['eta']:12.6g} {r['eps_m']:12.6g}" for r in rows]
    last = rows[-1]
    lines.append(f"  the last stage's eta = {last['eta']:.4g} is below 2/L only for L < {2 / last['eta']:.4g}; "
                 "cap it with eta_max for a rougher loss")
    if L is not None:
        if p["eta0"] >= 2.0 / L:
            lines.append(f"  with L = {L:g}: even eta0 = {p['eta0']} >= 2/L = {2.0 / L:.4g}")
        else:
            k = max_lr_increases(p["eta0"], p["gamma"], L=L)
            _, eta_k, _ = stage_values(schedule, k)
            lines.append(f"  with L = {L:g}: at most {k} learning-rate increases keep eta < 2/L = {2.0 / L:.4g} "
                         f"(eta_{k} = {eta_k:.4g})")
    return "\n".join(lines)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "theory", help="closed-form C1, C2, critical batch size, K(b*), N(b*) (Propositions 1 and 2)",
        description="Print the closed-form theory for constants L, sigma^2, f(theta_0) - f_*, a learning rate "
                    "and a target eps: C1, C2, the critical batch size b* = 2 C2 / eps^2, K(b*) and N(b*); "
                    "with --b also K(b) and N(b). --paper prints the authors' Algorithm 2 schedule.")
    p.add_argument("--L", type=float, help="smoothness constant L > 0")
    p.add_argument("--sigma2", type=float, help="variance sigma^2 >= 0 of one stochastic gradient")
    p.add_argument("--gap", type=float, help="f(theta_0) - f_* >= 0")
    p.add_argument("--eta", type=float, help="learning rate, 0 < eta < 2/L")
    p.add_argument("--eps", type=float, help="target gradient norm eps > 0")
    p.add_argument("--b", type=float, help="also report K(b) and N(b) at this batch size")
    p.add_argument("--n", type=int, help="sample without replacement from n training samples "
                                         "(variance (n - b)/(n - 1) sigma^2 / b); default: with replacement")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--paper", action="store_true",
                   help="print the authors' Algorithm 2 schedule stage by stage (constants optional)")
    p.set_defaults(handler=run)


def run(args) -> int:
    given = {k: getattr(args, k) for k in _REQUIRED if getattr(args, k) is not None}
    if args.paper and not given:
        report = paper_report()
        print(json.dumps({"schedule": schedule_table(paper_schedule())}) if args.json else report)
        return 0
    missing = [f"--{k}" for k in _REQUIRED if k not in given]
    if missing:
        raise ParameterError(f"sfo theory needs all of --L --sigma2 --gap --eta --eps (or --paper alone); "
                             f"missing: {' '.join(missing)}")
    constants = ProblemConstants(L=args.L, sigma2=args.sigma2, gap=args.gap)
    variance = WithoutReplacement(args.n) if args.n is not None else WithReplacement()
    summary = theory_summary(constants, args.eta, args.eps, args.b, variance)
    if args.json:
        print(json.dumps(summary))
    else:
        if args.paper:
            print(paper_report(L=args.L))
            print()
        print(_text(summary))
    return 0
