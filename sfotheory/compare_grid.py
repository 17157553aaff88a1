r"""The tuning grid of ``sfo compare``: Algorithm 2, its baselines and its peers on one small grid.

Every policy family is run at 3 initial learning rates × 3 values of its own main constant c,
from the same initial batch b₀, under the same caps:

.. math::

    \eta_0 \in \{0.1,\ 0.3,\ 1\}/L, \qquad b \le b_{\max}, \qquad \eta \le \eta_{\max} = \max(\eta_0, 1/L)

=================== ===================================================== =========================
family              policy (fixed settings)                                main constant c
=================== ===================================================== =========================
``stage_rule``      Algorithm 2: ‖∇f‖ ≤ ε_m ⇒ b ×2, η ×1.4; check every    ε₀ = c·g₀, c ∈ {1, ½, ¼}
                    τ = 10 steps (the authors' δ, γ)
``constant``        constant b = c·b*(η₀, ε_min), constant η₀              c ∈ {½, 1, 2}
``periodic``        b ×2, η ×1.4 every P = c·T steps                       c ∈ {1/32, 1/16, 1/8}
``cosine``          b = b*(η₀, ε_min), η cosine from η₀ to 0 over          c ∈ {¼, ½, 1}
                    H = c·min(T, N_max/b) steps
``norm_test``       Byrd et al. 2012, tolerance θ = c                      c ∈ {0.25, 0.5, 1}
``inner_product``   Bollapragada et al. 2018, θ = c, ν = 5.84              c ∈ {0.225, 0.45, 0.9}
``noise_scale``     McCandlish et al. 2018, b ← ⌈B̂⌉, η fixed, EMA β = c    c ∈ {0.8, 0.95, 0.99}
``adascale``        Johnson et al. 2020, b = c·b₀, constant base η₀        c ∈ {4, 16, 64}
``increase_batch``  Smith et al. 2018, b ×5 at c·(0.3, 0.6, 0.8)·N_max     c ∈ {¼, ½, 1}
=================== ===================================================== =========================

Legend: L the smoothness constant, g₀ = ‖∇f(θ₀)‖, ε_min the smallest target of the comparison,
b*(η, ε) = 2C₂/ε² the critical batch size of Proposition 2 (C₂ = Lσ²η/(2 − Lη), σ² the problem's
stated σ², a bound on the finite sums) rounded and clipped to [1, b_max], T the step limit and
N_max the training-SFO budget of one run, b_max = n on a finite sum (4096, the authors' cap, on
the quadratic). The peers' grids bracket their authors' defaults (θ = 0.5; θ = 0.9; our β = 0.95;
Smith et al.'s milestones at 60, 120 and 160 of 200 epochs, compressed by c); the inner-product
test's reaches below its default, which keeps b small on these problems. A value that the caps
make equal to another (b*·c clipped at b_max, c·b₀ > b_max) is run once.

>>> from sfotheory.problems import make_problem
>>> ctx = GridContext.from_problem(make_problem("least_squares", n=200, dim=5, seed=0), b0=8, eps_min=0.05,
...                                max_steps=400, budget=20_000)
>>> [c.value for c in candidates("norm_test", ctx)][:3]
[0.25, 0.5, 1.0]
>>> len(candidates("adascale", ctx))        # S = 64 would make b = 512 > n = 200: dropped
6
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .complexity import critical_batch_size
from .constants import ProblemConstants
from .policies import AdaScale, GradientNoiseScale, IncreaseBatch, InnerProductTest, NormTest, Policy, StageRule
from .problems import Problem
from .rule import adaptive_exponential, constant, cosine, periodic
from .validation import check_integer, check_positive, fail

__all__ = ["ETA_FACTORS", "FAMILIES", "Candidate", "Family", "GridContext", "candidates"]

#: η₀ of every family, in units of 1/L.
ETA_FACTORS = (0.1, 0.3, 1.0)
#: Algorithm 2's check interval in steps and its growth factors (the authors' δ and γ).
STAGE_TAU, STAGE_DELTA, STAGE_GAMMA = 10, 2.0, 1.4
#: b_max on a problem without a finite n (the authors' cap).
B_MAX_UNBOUNDED = 4096


@dataclass(frozen=True)
class GridContext:
    """What the grid is scaled by: the problem's constants, the start, the targets and the limits."""

    L: float
    g0: float
    b0: int
    b_max: int
    eps_min: float
    max_steps: int
    budget: int
    constants: ProblemConstants

    @classmethod
    def from_problem(cls, problem: Problem, *, b0: int, eps_min: float, max_steps: int, budget: int) -> GridContext:
        where = "GridContext"
        b_max = int(problem.n) if problem.n is not None else B_MAX_UNBOUNDED
        b0 = check_integer(b0, "b0", where, minimum=2, reason="the peers' per-sample variance needs two samples")
        if b0 > b_max:
            fail("b0", where, f"<= b_max = {b_max}", b0, reason="b_max is n on a finite sum")
        g0 = float(problem.grad_norm(problem.theta0[None])[0])
        return cls(L=float(problem.L), g0=g0, b0=b0, b_max=b_max,
                   eps_min=float(check_positive(eps_min, "eps", where)),
                   max_steps=check_integer(max_steps, "max_steps", where, minimum=1),
                   budget=check_integer(budget, "budget", where, minimum=1), constants=problem.constants())

    def eta_max(self, eta0: float) -> float:
        """The cap on a growing η: 1/L, or η₀ when it starts above."""
        return max(eta0, 1.0 / self.L)

    def b_star(self, eta0: float, factor: float = 1.0) -> int:
        """factor × b*(η₀, ε_min), rounded and clipped to [1, b_max]."""
        b = factor * float(critical_batch_size(self.constants, eta0, self.eps_min))
        return int(min(self.b_max, max(1, round(b)))) if math.isfinite(b) else self.b_max


@dataclass(frozen=True)
class Family:
    """One policy family of the comparison: how to build it at (η₀, c), and what c is."""

    name: str
    label: str                      #: what the family is, for the output
    constant: str                   #: what c sets, in words
    values: tuple                   #: the three values of c
    build: Callable                 #: (ctx, η₀, c) -> Policy


def _stage_rule(ctx, eta0, c):
    return StageRule(adaptive_exponential(b0=ctx.b0, eta0=eta0, eps0=c * ctx.g0, delta=STAGE_DELTA,
                                          gamma=STAGE_GAMMA, tau=STAGE_TAU, b_max=ctx.b_max,
                                          eta_max=ctx.eta_max(eta0)))


def _constant(ctx, eta0, c):
    return StageRule(constant(b0=ctx.b_star(eta0, c), eta0=eta0))


def _periodic(ctx, eta0, c):
    return StageRule(periodic(b0=ctx.b0, eta0=eta0, delta=STAGE_DELTA, gamma=STAGE_GAMMA,
                              period=max(1, round(c * ctx.max_steps)), b_max=ctx.b_max, eta_max=ctx.eta_max(eta0)))


def _cosine(ctx, eta0, c):
    b = ctx.b_star(eta0)
    return StageRule(cosine(b0=b, eta0=eta0, horizon=max(1, round(c * min(ctx.max_steps, ctx.budget // b)))))


def _adascale(ctx, eta0, c):
    scale = int(min(c, ctx.b_max // ctx.b0))
    return AdaScale(base_batch=ctx.b0, scale=scale, eta0=eta0, eta_max=ctx.eta_max(eta0))


def _increase_batch(ctx, eta0, c):
    milestones = tuple(sorted({max(1, round(c * f * ctx.budget)) for f in (0.3, 0.6, 0.8)}))
    return IncreaseBatch(b0=ctx.b0, eta0=eta0, milestones=milestones, factor=5.0, b_max=ctx.b_max)


#: name → family, in the order of the output.
FAMILIES = {f.name: f for f in (
    Family("stage_rule", f"Algorithm 2 (delta = {STAGE_DELTA:g}, gamma = {STAGE_GAMMA:g}, tau = {STAGE_TAU} steps, "
           "exact checks)", "eps0 = c ||grad f(theta0)||", (1.0, 0.5, 0.25), _stage_rule),
    Family("constant", "constant b and eta", "b = c b*(eta0, eps_min)", (0.5, 1.0, 2.0), _constant),
    Family("periodic", f"b x{STAGE_DELTA:g}, eta x{STAGE_GAMMA:g} every P steps", "P = c T", (1 / 32, 1 / 16, 1 / 8),
           _periodic),
    Family("cosine", "b = b*(eta0, eps_min), eta cosine to 0 over H steps", "H = c min(T, N_max / b)",
           (0.25, 0.5, 1.0), _cosine),
    Family("norm_test", "norm test (Byrd et al. 2012)", "theta = c", (0.25, 0.5, 1.0),
           lambda ctx, eta0, c: NormTest(b0=ctx.b0, eta0=eta0, theta=c, b_max=ctx.b_max)),
    Family("inner_product", "augmented inner-product test (Bollapragada et al. 2018), nu = 5.84", "theta = c",
           (0.225, 0.45, 0.9), lambda ctx, eta0, c: InnerProductTest(b0=ctx.b0, eta0=eta0, theta=c, b_max=ctx.b_max)),
    Family("noise_scale", "gradient noise scale (McCandlish et al. 2018), b <- ceil(B_simple), eta fixed",
           "EMA weight beta = c", (0.8, 0.95, 0.99),
           lambda ctx, eta0, c: GradientNoiseScale(b0=ctx.b0, eta0=eta0, b_max=ctx.b_max, smoothing=c)),
    Family("adascale", "AdaScale (Johnson et al. 2020), b = S b0, constant base eta0", "S = c (clipped to b_max/b0)",
           (4, 16, 64), _adascale),
    Family("increase_batch", "increase b instead of decaying eta (Smith et al. 2018), b x5 at milestones",
           "milestones c (0.3, 0.6, 0.8) N_max", (0.25, 0.5, 1.0), _increase_batch),
)}


@dataclass(frozen=True)
class Candidate:
    """One grid point: the family, η₀ = ``eta_factor``/L, the value c of its constant, and the policy."""

    family: str
    eta_factor: float
    value: float
    policy: Policy

    def to_dict(self) -> dict:
        return {"family": self.family, "eta_factor": self.eta_factor, "value": self.value,
                "policy": self.policy.to_dict()}


def candidates(family: str, ctx: GridContext, eta_factors=ETA_FACTORS) -> list[Candidate]:
    """The grid points of ``family``, η₀ outer and c inner; a policy equal to an earlier one is dropped."""
    if family not in FAMILIES:
        fail("family", "candidates", "one of " + ", ".join(repr(k) for k in FAMILIES), family)
    fam = FAMILIES[family]
    out, seen = [], set()
    for f in eta_factors:
        eta0 = f / ctx.L
        for c in fam.values:
            if family == "adascale" and c > ctx.b_max // ctx.b0:
                continue                      # b = c b0 would exceed b_max
            policy = fam.build(ctx, eta0, c)
            key = repr(policy.to_dict())
            if key in seen:
                continue
            seen.add(key)
            out.append(Candidate(family, float(f), float(c), policy))
    return out
