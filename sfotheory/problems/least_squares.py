r"""Finite-sum least squares: f(θ) = (1/2n)‖Xθ − y‖² + (λ/2)‖θ‖².

.. math::

    \ell(z, y) = \tfrac12 (z - y)^2, \qquad
    L = \lambda_{\max}(X^\top X / n) + \lambda \ \text{(exact)}, \qquad
    f_* = f(\theta^\star),\ (X^\top X/n + \lambda I)\theta^\star = X^\top y / n \ \text{(exact)}

σ²(θ) grows with ‖θ − θ*‖, so no bound holds on all of R^d. With u = θ − θ*,
a_i = r_i* x_i − mean_j r_j* x_j (r_i* = x_iᵀθ* − y_i), B_i = x_i x_iᵀ − XᵀX/n:

.. math::

    \sigma^2(\theta) = \sigma^2(\theta^\star) + 2u^\top v + u^\top M u, \quad
    v = \tfrac1n \sum_i B_i a_i, \quad M = \tfrac1n \sum_i B_i^2,

so on the ball ‖u‖ ≤ R, σ²(θ) ≤ σ²(θ*) + 2R‖v‖ + R²λ_max(M): the certified
``sigma2`` here, with R = ``radius_factor``·‖θ₀ − θ*‖ (default 2). The simulator
also reports the exact sup of σ²(θ_t) along each run, which is what (A2) needs.

Data (from the seed): X rows N(0, D²) with column scales from 1 to 1/√κ, θ_true ~
N(0, I/d), y = Xθ_true + ``noise``·N(0, 1); θ₀ = 0.

>>> p = LeastSquares(n=200, dim=5, seed=3)
>>> bool(np.allclose(p.grad(p.theta_star), 0.0, atol=1e-12)), p.f_star_exact
(True, True)
"""

from __future__ import annotations

import numpy as np

from ..validation import check_greater, check_positive
from .base import seed_of
from .finite_sum import GLMFiniteSum, check_data_shape, make_features

__all__ = ["LeastSquares"]


class LeastSquares(GLMFiniteSum):
    """Finite-sum least squares with exact L and f_*, and σ² certified on a ball around θ*."""

    name = "least_squares"

    def __init__(self, *, n: int = 1000, dim: int = 20, kappa: float = 10.0, noise: float = 0.5,
                 ridge: float = 0.0, radius_factor: float = 2.0, seed: int = 0):
        where = "make_problem('least_squares')"
        n, dim, kappa = check_data_shape(n, dim, kappa, where)
        noise = check_greater(noise, 0.0, "noise", where, strict=False)
        radius_factor = check_positive(radius_factor, "radius_factor", where)
        self.seed = seed_of(seed, where)
        self.params = {"n": n, "dim": dim, "kappa": kappa, "noise": noise, "ridge": float(ridge),
                       "radius_factor": radius_factor}
        rng = np.random.default_rng([self.seed, 2])
        X = make_features(n, dim, kappa, rng)
        theta_true = rng.standard_normal(dim) / np.sqrt(dim)
        y = X @ theta_true + noise * rng.standard_normal(n)
        self._setup(X, y, ridge, where)
        H = self.X.T @ self.X / self.n
        self.theta_star = np.linalg.solve(H + self.ridge * np.eye(dim), self.X.T @ self.y / self.n)
        self.L = self.gram_max + self.ridge
        self.f_star = float(self.loss(self.theta_star))
        self.f_star_exact = True
        self.theta0 = np.zeros(dim)
        # Certified sup of sigma^2 on the ball ||theta - theta*|| <= R.
        r = self.X @ self.theta_star - self.y
        a = self.X * r[:, None]
        a -= a.mean(axis=0)
        v = (self.X.T @ np.einsum("ij,ij->i", self.X, a)) / self.n - H @ a.mean(axis=0)
        M = (self.X * self.row_norm2[:, None]).T @ self.X / self.n - H @ H
        self.sigma2_star = float(self.sigma2_at(self.theta_star))
        self.radius = float(radius_factor * np.linalg.norm(self.theta0 - self.theta_star))
        lam_M = max(float(np.linalg.eigvalsh(M)[-1]), 0.0)
        self.sigma2 = self.sigma2_star + 2 * self.radius * float(np.linalg.norm(v)) + self.radius**2 * lam_M
        self.sigma2_exact = False
        self.sigma2_region = f"ball ||theta - theta*|| <= R = {self.radius:.6g} ({radius_factor:g} ||theta0 - theta*||)"

    def link(self, z, y):
        r = self.link_derivative(z, y)
        return 0.5 * r * r, r

    def link_derivative(self, z, y):
        return z - y
