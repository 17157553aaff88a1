"""``sfo cbs``: measure the critical batch size of a synthetic problem and compare it with b* = 2C₂/ε².

    sfo cbs --problem quadratic --dim 1000 --eps 0.05 [--eta 0.1] [--replicates 32] [--seed 0]
            [--batches 16] [--b-min 5 --b-max 400] [--max-steps 2000] [--refine 1]
            [--without-replacement N] [--json] [--plot cbs.png] [--save result.json]

Problem parameters not given keep the problem's defaults (``--dim``, ``--kappa``,
``--sigma2``, ``--gap``, ``--noise`` for the quadratic; ``--n``, ``--dim``,
``--kappa``, ``--ridge`` for the finite sums). ``--json`` prints the
:class:`~sfotheory.cbs.CBSResult` as one JSON object; otherwise the table of
:meth:`~sfotheory.cbs.CBSResult.table`.
"""

from __future__ import annotations

import json

from .cbs import cbs_sweep, log_grid, plot_cbs
from .constants import WithoutReplacement
from .problem_args import PROBLEM_OPTIONS, add_problem_arguments, problem_from_args, run_naming_flags
from .problems import PROBLEMS
from .validation import fail

__all__ = ["register", "run"]

#: command-line option → problem parameter (used only where the problem has that parameter).
#: parameter of the library functions → (its flag, the attribute argparse stores it in)
_FLAGS = {"eps": ("--eps", "eps"), "eta": ("--eta", "eta"), "num_batch_sizes": ("--batches", "batches"),
          "max_steps": ("--max-steps", "max_steps"), "refine": ("--refine", "refine"), "seed": ("--seed", "seed"),
          "replicates": ("--replicates", "replicates"), **{p: (f"--{p}", p) for p in PROBLEM_OPTIONS}}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cbs", help="measure the critical batch size of a synthetic problem against b* = 2 C2 / eps^2",
        description="Sweep constant batch sizes on a log grid, measure the steps K(b) and SFO N(b) to reach "
                    "||grad f|| <= eps (median and CI over replicates), fit K(b) = C1 b / (eps^2 b - C2), and "
                    "report the measured and fitted critical batch size beside the theory's b* = 2 C2 / eps^2.")
    p.add_argument("--problem", default="quadratic", help=f"one of {', '.join(PROBLEMS)} (default quadratic)")
    p.add_argument("--eps", type=float, required=True, help="target gradient norm eps > 0")
    p.add_argument("--eta", type=float, default=None, help="learning rate, 0 < eta < 2/L (default 0.1/L)")
    p.add_argument("--replicates", type=int, default=32, help="replicates per batch size (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the problem and of SGD (default 0)")
    p.add_argument("--batches", type=int, default=16, help="grid points (default 16)")
    p.add_argument("--b-min", type=float, default=None, help="smallest batch size (default b*/8)")
    p.add_argument("--b-max", type=float, default=None, help="largest batch size (default 8 b*)")
    p.add_argument("--max-steps", type=int, default=2000,
                   help="steps after which a replicate counts as not reaching eps (default 2000)")
    p.add_argument("--refine", type=int, default=0, help="rounds of a finer grid around the argmin (default 0)")
    p.add_argument("--without-replacement", type=int, default=None, metavar="N",
                   help="sample without replacement from N samples (finite sums: N must be their n)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw the U-curve of N(b) to this file")
    p.add_argument("--save", default=None, metavar="JSON", help="also write the result to this JSON file")
    add_problem_arguments(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    """The command; a library function's refusal of a value the user gave is reported under its flag."""
    return run_naming_flags(_run, args, _FLAGS, "sfo cbs")


def _run(args) -> int:
    problem = problem_from_args(args, "sfo cbs")
    variance = None
    if args.without_replacement is not None:
        variance = WithoutReplacement(args.without_replacement)
    batch_sizes = None
    if args.b_min is not None or args.b_max is not None:
        from .complexity import critical_batch_size
        from .constants import WithReplacement
        eta = 0.1 / problem.L if args.eta is None else args.eta
        if not 0 < eta < 2 / problem.L:
            fail("--eta", "sfo cbs", f"in (0, 2/L = {2 / problem.L:.6g}) for problem {problem.name!r}", eta)
        b_star = critical_batch_size(problem.constants(), eta, args.eps, variance or WithReplacement())
        lo = args.b_min if args.b_min is not None else b_star / 8
        hi = args.b_max if args.b_max is not None else 8 * b_star
        if not 1 <= lo <= hi:
            fail("--b-min", "sfo cbs", f"in [1, b_max = {hi:g}]", lo)
        if args.without_replacement is not None and hi > args.without_replacement:
            fail("--b-max", "sfo cbs", f"<= n = {args.without_replacement} when sampling without replacement "
                 "(--without-replacement)", hi)
        batch_sizes = log_grid(lo, hi, args.batches)
    if args.replicates is None or args.replicates < 1:
        fail("--replicates", "sfo cbs", ">= 1", args.replicates)
    result = cbs_sweep(problem, eps=args.eps, eta=args.eta, batch_sizes=batch_sizes, num_batch_sizes=args.batches,
                       replicates=args.replicates, seed=args.seed, max_steps=args.max_steps, variance=variance,
                       refine=args.refine)
    if args.plot:
        plot_cbs(result, args.plot)
    if args.save:
        result.save(args.save)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.table())
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
