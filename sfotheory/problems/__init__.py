r"""Synthetic L-smooth problems with known constants, one module per problem.

=================== ============================= ========== ================ =====================
name                f                             L          f_*              σ² (one sample)
=================== ============================= ========== ================ =====================
``quadratic``       ½θᵀAθ + Gaussian noise        exact      exact (0)        exact (tr Σ)
``least_squares``   (1/2n)‖Xθ − y‖²               exact      exact            certified on a ball
``logistic``        logistic loss + (λ/2)‖θ‖²     certified  certified bound  certified, global
``cauchy``          Cauchy-loss regression        certified  certified (0)    certified, global
=================== ============================= ========== ================ =====================

Every problem is rebuilt from (name, parameters, seed) by :func:`make_problem`;
``problem.spec()`` returns exactly those. Oracles are vectorised over leading axes
(θ of shape (..., d)); see :mod:`sfotheory.problems.base` for the σ² convention
and the two samplers (with replacement; without replacement within an epoch).

>>> p = make_problem("quadratic", dim=10, kappa=4.0, seed=1)
>>> p.name, p.dim, p.L
('quadratic', 10, 1.0)
>>> make_problem(**p.spec()).theta0.tolist() == p.theta0.tolist()
True
>>> make_problem("rosenbrock")
Traceback (most recent call last):
...
sfotheory.validation.ParameterError: The 'name' parameter of make_problem must be one of 'quadratic', 'least_squares', 'logistic', 'cauchy'. Got name='rosenbrock' instead.
"""

from __future__ import annotations

import inspect

from ..validation import fail
from .base import Problem, Sampler, StepRandom, make_sampler
from .cauchy import CauchyRegression
from .finite_sum import GLMFiniteSum
from .least_squares import LeastSquares
from .logistic import Logistic
from .quadratic import NoisyQuadratic

__all__ = [
    "PROBLEMS",
    "CauchyRegression",
    "GLMFiniteSum",
    "LeastSquares",
    "Logistic",
    "NoisyQuadratic",
    "Problem",
    "Sampler",
    "StepRandom",
    "make_problem",
    "make_sampler",
    "problem_parameters",
]

#: name → class, in the order shown to users.
PROBLEMS = {cls.name: cls for cls in (NoisyQuadratic, LeastSquares, Logistic, CauchyRegression)}


def problem_parameters(name: str) -> dict:
    """The keyword parameters of problem ``name`` and their defaults.

    >>> problem_parameters("least_squares")["n"]
    1000
    """
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "seed")}


def _lookup(name):
    if name not in PROBLEMS:
        fail("name", "make_problem", "one of " + ", ".join(repr(k) for k in PROBLEMS), name)
    return PROBLEMS[name]


def make_problem(name: str, params: dict | None = None, *, seed: int = 0, **kwargs) -> Problem:
    """Build problem ``name`` from its parameters and seed (``params`` dict and/or keywords)."""
    cls = _lookup(name)
    params = {**(params or {}), **kwargs}
    known = problem_parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        fail("params", f"make_problem({name!r})", "keywords among " + ", ".join(known), unknown)
    return cls(**params, seed=seed)
