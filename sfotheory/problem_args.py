"""The synthetic problem named on an ``sfo`` command line (``--problem`` and its parameter flags),
and a library's refusal of a flag's value reported under the flag; shared by ``sfo cbs`` and
``sfo compare``."""

from __future__ import annotations

import math

from .problems import PROBLEMS, make_problem, problem_parameters
from .validation import ParameterError, fail

__all__ = ["PROBLEM_OPTIONS", "add_problem_arguments", "problem_from_args", "run_naming_flags", "value_given"]

#: The problem-parameter flags (``--dim``, ``--kappa``, …); each problem takes a subset of them.
PROBLEM_OPTIONS = ("dim", "kappa", "sigma2", "gap", "noise", "n", "ridge", "spectrum", "L")


def add_problem_arguments(parser) -> None:
    """The flags of :data:`PROBLEM_OPTIONS`, in their own group of ``parser``'s help."""
    g = parser.add_argument_group("problem parameters (each problem uses those it has; see sfotheory.problems)")
    g.add_argument("--dim", type=int, help="dimension d")
    g.add_argument("--kappa", type=float, help="condition number")
    g.add_argument("--sigma2", type=float, help="quadratic: noise variance sigma^2 = tr Sigma")
    g.add_argument("--gap", type=float, help="quadratic: f(theta_0) - f_*")
    g.add_argument("--noise", help="quadratic: 'isotropic' or 'hessian'; least squares / cauchy: noise level")
    g.add_argument("--spectrum", help="quadratic: 'log' or 'linear'")
    g.add_argument("--L", type=float, help="quadratic: largest eigenvalue")
    g.add_argument("--n", type=int, help="finite sums: number of samples")
    g.add_argument("--ridge", type=float, help="finite sums: l2 weight")


def problem_from_args(args, where: str):
    """``make_problem(args.problem, …)`` from the flags given; a flag the problem does not take is
    refused naming the flag (``where`` is the command, e.g. ``"sfo cbs"``)."""
    if args.problem not in PROBLEMS:
        fail("--problem", where, "one of " + ", ".join(repr(k) for k in PROBLEMS), args.problem)
    known = problem_parameters(args.problem)
    params = {}
    for opt in PROBLEM_OPTIONS:
        value = getattr(args, opt)
        if value is None:
            continue
        if opt not in known:
            fail(f"--{opt}", f"{where} --problem {args.problem}",
                 "one of the problem's parameters (" + ", ".join(known) + ")", value)
        if opt == "noise" and args.problem != "quadratic":
            value = float(value)
        params[opt] = value
    return make_problem(args.problem, params, seed=args.seed)


def value_given(given, received) -> bool:
    """Whether ``received`` (what a library function refused) is the value of a flag, or one of its values."""
    if given is None:
        return False
    for v in (given if isinstance(given, list) else [given]):
        if v == received:
            return True
        try:
            a, b = float(v), float(received)
        except (TypeError, ValueError):
            continue
        if a == b or (math.isnan(a) and math.isnan(b)):
            return True
    return False


def run_naming_flags(body, args, flags: dict, where: str) -> int:
    """``body(args)``; a ParameterError about a value the user gave under a flag is raised again naming the flag.

    ``flags``: the library's parameter name → (flag, args attribute).
    """
    try:
        return body(args)
    except ParameterError as err:
        flag, dest = flags.get(getattr(err, "parameter", None), (None, None))
        if flag is None or not value_given(getattr(args, dest), err.value):
            raise                  # not a value the user gave under that flag
        fail(flag, where, err.rule, getattr(args, dest), reason=err.reason, cls=type(err))
