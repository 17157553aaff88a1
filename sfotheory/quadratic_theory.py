r"""Exact moments of SGD on the noisy quadratic, stage by stage.

In A's eigenbasis each coordinate is a scalar linear recursion with Gaussian noise,
x_{i,t+1} = (1 − ηλ_i) x_{i,t} − η ξ_{i,t}, ξ_{i,t} ~ N(0, φ(b) s_i²/b). Its mean
μ_{i,t} and variance v_{i,t} are exact; within a stage of constant (b, η), k steps
after the stage starts at t₀,

.. math::

    \mu_{i,t_0+k} = a_i^k \mu_{i,t_0}, \qquad
    v_{i,t_0+k} = a_i^{2k} v_{i,t_0} + c_i\,(1 - a_i^{2k}), \qquad
    a_i = 1 - \eta\lambda_i, \quad c_i = \frac{\eta\, s_i^2\, \varphi(b)}{b\,\lambda_i\,(2 - \eta\lambda_i)},

and stages compose (the end of one is the start of the next). From t₀ = 0 with
v = 0 this is the closed form
E[(λ_i x_{i,t})²] = λ_i² a_i^{2t} x_{i,0}² + λ_i² c_i (1 − a_i^{2t}). Since x_t is
Gaussian,

.. math::

    \mathbb E\|\nabla f(\theta_t)\|^2 = \sum_i \lambda_i^2(\mu_i^2 + v_i), \qquad
    \operatorname{Var}\|\nabla f(\theta_t)\|^2 = \sum_i \lambda_i^4 (2v_i^2 + 4\mu_i^2 v_i), \qquad
    \mathbb E f(\theta_t) = \tfrac12 \sum_i \lambda_i (\mu_i^2 + v_i).

Legend: λ_i eigenvalues, s_i² noise variance along direction i (Σ s_i² = σ²),
φ(b) = 1 with replacement, (n − b)/(n − 1) without, b batch size, η learning rate.

The variance makes the check of measurement against theory a z-test: the mean
of R independent replicates has standard error √(Var/R).

Why the measured critical batch size is about C₂/ε², not 2C₂/ε². On a
well-conditioned quadratic (λ_i ≈ L, isotropic noise) c_i λ_i² summed is C₂/b
exactly, so E‖∇f_t‖² ≈ C₂/b + (G₀² − C₂/b) ρ^t with ρ = (1 − ηL)²: the bias decays
*geometrically*, while Proposition 1 (a bound for nonconvex f) lets it decay only
as C₁/K. The steps to reach ε² are then K(b) ≈ log((G₀² − C₂/b)/(ε² − C₂/b)) / log(1/ρ),
and N(b) = bK(b) is minimised where log(G₀²/(ε² − C₂/b)) = u/(1 − u), u = C₂/(bε²):
for G₀² ≫ ε² this puts u close to 1, i.e. b̂* = C₂/(uε²) slightly above the noise
floor C₂/ε² — about half of b* = 2C₂/ε². The bound's hyperbolic K(b) = C₁b/(ε²b − C₂)
has the same pole but a much slower approach to it, which moves its minimiser to 2C₂/ε².
With κ > 1 and isotropic noise the floor Σ c_i λ_i² lies below C₂/b (λ_i < L), so b̂*
moves further down.

>>> from sfotheory.problems import NoisyQuadratic
>>> q = NoisyQuadratic(dim=3, kappa=1.0, sigma2=0.3, seed=0)
>>> m = quadratic_moments(q, batch_sizes=[4] * 50, lrs=[0.5] * 50)
>>> round(float(m.mean_sq_norm[-1]), 6)      # the floor C₂/b = Lσ²η/((2 − Lη) b) = 0.3·0.5/(1.5·4)
0.025
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import VarianceModel, WithReplacement
from .problems import NoisyQuadratic
from .validation import check_integer, check_positive, fail

__all__ = ["QuadraticMoments", "expected_critical_batch_size", "expected_steps_to_eps", "quadratic_moments"]


@dataclass(frozen=True)
class QuadraticMoments:
    """E‖∇f(θ_t)‖², Var‖∇f(θ_t)‖² and E f(θ_t) for t = 0, …, T (arrays of length T + 1)."""

    mean_sq_norm: np.ndarray
    var_sq_norm: np.ndarray
    mean_loss: np.ndarray


def _check(problem, where):
    if not isinstance(problem, NoisyQuadratic):
        fail("problem", where, "a NoisyQuadratic (make_problem('quadratic', ...))", problem, cls=TypeError)


def quadratic_moments(problem: NoisyQuadratic, batch_sizes, lrs, *, variance: VarianceModel | None = None,
                      theta0=None, block: int = 2048) -> QuadraticMoments:
    """Exact moments along a per-step schedule (b_t, η_t), t = 0..T−1, composed stage by stage.

    ``batch_sizes`` and ``lrs`` are sequences of length T (e.g. from
    :func:`sfotheory.simulate.schedule_sequence`); runs of equal (b, η) are one stage.
    """
    where = "quadratic_moments"
    _check(problem, where)
    b = np.asarray(batch_sizes, dtype=float).ravel()
    lr = np.asarray(lrs, dtype=float).ravel()
    if b.size == 0 or b.shape != lr.shape:
        fail("lrs", where, f"a sequence as long as batch_sizes ({b.size})", lr.size)
    check_positive(b, "batch_sizes", where, allow_array=True)
    lam = problem.eigenvalues
    if np.any(lr[:, None] * lam[None, :].max() >= 2.0) or np.any(lr <= 0):
        fail("lrs", where, f"in (0, 2/L = {2 / problem.L:.6g})", lr)
    variance = WithReplacement() if variance is None else variance
    phi = np.asarray(variance.factor(b), dtype=float) * np.ones_like(b)
    mu = np.array(problem.theta0 if theta0 is None else theta0, dtype=float)
    v = np.zeros_like(mu)
    T = b.size
    change = np.flatnonzero((np.diff(b) != 0) | (np.diff(lr) != 0)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [T]])
    lam2 = lam * lam
    mean_sq = np.empty(T + 1)
    var_sq = np.empty(T + 1)
    mean_f = np.empty(T + 1)
    mean_sq[0] = lam2 @ (mu**2 + v)
    var_sq[0] = (lam2 * lam2) @ (2 * v**2 + 4 * mu**2 * v)
    mean_f[0] = 0.5 * lam @ (mu**2 + v)
    for s0, s1 in zip(starts, stops):
        eta = lr[s0]
        a = 1.0 - eta * lam
        c = eta * problem.noise_var * phi[s0] / (b[s0] * lam * (2.0 - eta * lam))
        for k0 in range(1, s1 - s0 + 1, block):
            k = np.arange(k0, min(k0 + block, s1 - s0 + 1))[:, None]
            ak = a**k
            m_k = ak * mu
            a2k = ak * ak
            v_k = a2k * v + c * (1.0 - a2k)
            idx = s0 + k[:, 0]
            second = m_k**2 + v_k
            mean_sq[idx] = second @ lam2
            var_sq[idx] = (2 * v_k**2 + 4 * m_k**2 * v_k) @ (lam2 * lam2)
            mean_f[idx] = 0.5 * second @ lam
        kk = s1 - s0
        mu, v = a**kk * mu, a ** (2 * kk) * v + c * (1.0 - a ** (2 * kk))
    return QuadraticMoments(mean_sq, var_sq, mean_f)


def expected_steps_to_eps(problem: NoisyQuadratic, b, eta: float, eps: float, *, max_steps: int = 100_000,
                          variance: VarianceModel | None = None, block: int = 512):
    """First t with E‖∇f(θ_t)‖² ≤ ε² at constant (b, η), exactly (``inf`` if not within ``max_steps``).

    Vectorised over an array ``b``.

    >>> from sfotheory.problems import NoisyQuadratic
    >>> q = NoisyQuadratic(dim=5, kappa=1.0, sigma2=0.0, gap=0.5, seed=0)   # E‖∇f_t‖² = (1 − η)^{2t}
    >>> float(expected_steps_to_eps(q, 1, eta=0.5, eps=0.25))
    2.0
    """
    where = "expected_steps_to_eps"
    _check(problem, where)
    eps = check_positive(eps, "eps", where)
    max_steps = check_integer(max_steps, "max_steps", where, minimum=1)
    b_arr = np.atleast_1d(np.asarray(b, dtype=float))
    variance = WithReplacement() if variance is None else variance
    lam = problem.eigenvalues
    if not 0 < eta < 2.0 / problem.L:
        fail("eta", where, f"in (0, 2/L = {2 / problem.L:.6g})", eta)
    # E‖∇f_t‖² = P(t) + Q(t)·φ(b)/b with P, Q independent of b: one pass over t for all b.
    a2 = (1.0 - eta * lam) ** 2
    x2 = problem.theta0**2
    lam2 = lam * lam
    c1 = eta * problem.noise_var / (lam * (2.0 - eta * lam))       # c_i = c1_i φ(b)/b
    scale = np.asarray(variance.factor(b_arr), dtype=float) * np.ones_like(b_arr) / b_arr
    floor = (lam2 @ c1) * scale
    out = np.full(b_arr.shape, np.inf)
    open_ = np.ones(b_arr.shape, dtype=bool)
    e2 = eps**2
    for t0 in range(0, max_steps + 1, block):
        t = np.arange(t0, min(t0 + block, max_steps + 1))[:, None]
        a2t = a2**t
        P = (a2t * x2) @ lam2
        Q = (1.0 - a2t) @ (lam2 * c1)
        E = P[:, None] + Q[:, None] * scale[None, open_]
        below = E <= e2
        any_hit = below.any(axis=0)
        idx = np.flatnonzero(open_)
        out[idx[any_hit]] = t0 + np.argmax(below[:, any_hit], axis=0)
        open_[idx[any_hit]] = False
        # Rows whose floor is above ε² can only cross while some term still rises; the rising
        # terms λ_i²(x_i² − c_i)a_i^{2t} < 0 shrink in size with t, so this lower bound grows.
        last = a2t[-1]
        for j in np.flatnonzero(open_ & (floor > e2)):
            w = lam2 * (x2 - c1 * scale[j])
            if floor[j] + np.minimum(w, 0.0) @ last > e2:
                open_[j] = False
        if not open_.any():
            break
    return out if np.ndim(b) else float(out[0])


def expected_critical_batch_size(problem: NoisyQuadratic, eta: float, eps: float, b_grid, *,
                                 max_steps: int = 100_000, variance: VarianceModel | None = None):
    """(b̂*, K(b), N(b)) of the *exact expectation*: argmin over ``b_grid`` of N(b) = b·K_E(b).

    K_E(b) is :func:`expected_steps_to_eps`. This is what the measured b̂* estimates
    (up to the difference between E‖∇f‖² ≤ ε² and a replicate's first ‖∇f‖ ≤ ε).
    """
    b_grid = np.asarray(b_grid, dtype=float)
    K = expected_steps_to_eps(problem, b_grid, eta, eps, max_steps=max_steps, variance=variance)
    N = K * b_grid
    if not np.any(np.isfinite(N)):
        return np.nan, K, N
    return float(b_grid[np.nanargmin(np.where(np.isfinite(N), N, np.nan))]), K, N
