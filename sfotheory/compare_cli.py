"""``sfo compare``: Algorithm 2, its baselines and its peers, each tuned on one small grid, to the same ε.

    sfo compare --problem logistic --eps 0.05 0.02 0.01 [--policies stage_rule,norm_test,...]
                [--replicates 64] [--tune-replicates 8] [--seed 0] [--max-steps 2000]
                [--budget 100000] [--observe-every K] [--b0 8] [--resamples 1000] [--jobs 2] [--out DIR]

Prints the setup, the criterion, the grid, the tuning choice of every policy and one row per
policy × ε: steps, training SFO and SFO with measurement to ε under the paper's expectation
criterion, each with a bootstrap interval, and the fraction of replicates reaching ε
(:mod:`sfotheory.compare`, :mod:`sfotheory.compare_grid`). With ``--out DIR``: the results as JSON,
``DIR/sfo_compare_<problem>.json`` (:class:`~sfotheory.compare_result.ComparisonResult`), and the
figure ``DIR/sfo_compare_<problem>.png`` (SFO and steps to ε against ε), named by the problem so
that the comparisons of several problems can share one folder. Problem parameters not given keep the problem's defaults (``--dim``, ``--kappa``,
``--sigma2``, ``--gap``, ``--noise``, ``--spectrum``, ``--L`` for the quadratic; ``--n``, ``--dim``,
``--kappa``, ``--ridge`` for the finite sums). Bad input is refused before anything runs or is
written, in one line naming the flag, with exit code 2.
"""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path

from .compare_grid import FAMILIES
from .problem_args import PROBLEM_OPTIONS, add_problem_arguments, problem_from_args, run_naming_flags
from .problems import PROBLEMS
from .validation import fail

__all__ = ["register", "run"]

WHERE = "sfo compare"
#: command-line option → problem parameter (used only where the problem has that parameter).
#: parameter of the library functions → (its flag, the attribute argparse stores it in)
_FLAGS = {"eps": ("--eps", "eps"), "replicates": ("--replicates", "replicates"),
          "tune_replicates": ("--tune-replicates", "tune_replicates"), "seed": ("--seed", "seed"),
          "max_steps": ("--max-steps", "max_steps"), "budget": ("--budget", "budget"),
          "observe_every": ("--observe-every", "observe_every"), "b0": ("--b0", "b0"),
          "resamples": ("--resamples", "resamples"), "jobs": ("--jobs", "jobs"),
          **{p: (f"--{p}", p) for p in PROBLEM_OPTIONS}}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="Algorithm 2 vs its baselines and the adaptive-batch peers, tuned, in expectation",
        description="Tune every policy on the same small grid (eta0 x its main constant), run the chosen ones on "
                    "the same problem, seeds and targets, and report steps, training SFO and SFO with measurement "
                    "to each eps under the expectation criterion (mean over replicates of ||grad f|| <= eps), with "
                    "bootstrap intervals over replicates.")
    p.add_argument("--problem", default="quadratic", help=f"one of {', '.join(PROBLEMS)} (default quadratic)")
    p.add_argument("--policies", default=",".join(FAMILIES),
                   help=f"comma-separated, among {','.join(FAMILIES)} (default: all)")
    p.add_argument("--eps", type=float, nargs="+", required=True, help="targets eps > 0 of the mean ||grad f||")
    p.add_argument("--replicates", type=int, default=64, help="reported replicates (default 64)")
    p.add_argument("--tune-replicates", type=int, default=8,
                   help="replicates of the tuning runs, seed + 1 (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the problem and of the reported runs (default 0)")
    p.add_argument("--max-steps", type=int, default=2000, help="step limit T of every run (default 2000)")
    p.add_argument("--budget", type=int, default=100_000,
                   help="training-SFO limit N_max of every run (default 100000)")
    p.add_argument("--observe-every", type=int, default=None,
                   help="steps between observations of ||grad f|| (default max(1, T // 400))")
    p.add_argument("--b0", type=int, default=8, help="initial batch of the growing policies (default 8)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes for the two simulations of each phase (default min(2, CPUs))")
    p.add_argument("--out", default=None, metavar="DIR", help="write DIR/sfo_compare_<problem>.json (the results) and .png (the figure)")
    add_problem_arguments(p)
    p.set_defaults(handler=run)


def run(args) -> int:
    """The command; a library function's refusal of a value the user gave is reported under its flag."""
    return run_naming_flags(_run, args, _FLAGS, WHERE)


def _families(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",")]
    if not names or any(s not in FAMILIES for s in names) or len(set(names)) != len(names):
        fail("--policies", WHERE, "distinct names among " + ",".join(FAMILIES) + ", comma-separated", text)
    return names


def _check_args(args) -> None:
    """What can be refused before the problem is built (integers' ranges, the targets, the output folder)."""
    for e in args.eps:
        if not math.isfinite(e) or e <= 0:
            fail("--eps", WHERE, "finite and > 0", e, reason="the target is ||grad f|| <= eps")
    for flag, dest, minimum in (("--replicates", "replicates", 2), ("--tune-replicates", "tune_replicates", 1),
                                ("--seed", "seed", 0), ("--max-steps", "max_steps", 1), ("--budget", "budget", 1),
                                ("--b0", "b0", 2), ("--resamples", "resamples", 10), ("--jobs", "jobs", 1)):
        if getattr(args, dest) < minimum:
            fail(flag, WHERE, f">= {minimum}", getattr(args, dest))
    if args.observe_every is not None and args.observe_every < 1:
        fail("--observe-every", WHERE, ">= 1", args.observe_every)
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        fail("--out", WHERE, "a folder (it is created if missing)", args.out, reason="a file of that name exists")


def _command(args, families) -> str:
    """The command that reproduces this run, every setting explicit (kept in the JSON file)."""
    words = ["sfo", "compare", "--problem", args.problem, "--policies", ",".join(families), "--eps",
             *(f"{e:g}" for e in args.eps)]
    for flag, dest in (("--replicates", "replicates"), ("--tune-replicates", "tune_replicates"), ("--seed", "seed"),
                       ("--max-steps", "max_steps"), ("--budget", "budget"), ("--observe-every", "observe_every"),
                       ("--b0", "b0"), ("--resamples", "resamples"), ("--jobs", "jobs"),
                       *((f"--{o}", o) for o in PROBLEM_OPTIONS)):
        if getattr(args, dest) is not None:
            words += [flag, str(getattr(args, dest))]
    return shlex.join(words)


def _run(args) -> int:
    from .compare import run_comparison
    from .progress import Progress
    from .compare_result import ComparisonResult, plot_comparison

    families = _families(args.policies)
    _check_args(args)
    problem = problem_from_args(args, WHERE)
    progress = Progress(total=2 * len(families), label=f"compare {problem.name}", unit="simulation")
    record = run_comparison(problem, families, args.eps, replicates=args.replicates,
                            tune_replicates=args.tune_replicates, seed=args.seed, max_steps=args.max_steps,
                            budget=args.budget, observe_every=args.observe_every, b0=args.b0,
                            resamples=args.resamples, jobs=args.jobs, progress=progress)
    progress.close()
    result = ComparisonResult(**record, command=_command(args, families))
    print(result.table())
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"sfo_compare_{problem.name}"
        result.save(stem.with_suffix(".json"))
        plot_comparison(result, stem.with_suffix(".png"))
        print(f"written: {stem.with_suffix('.json')}, {stem.with_suffix('.png')}")
    return 0
