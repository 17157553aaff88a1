r"""Finite-sum logistic regression: f(θ) = (1/n) Σ [log(1 + e^{x_iᵀθ}) − y_i x_iᵀθ] + (λ/2)‖θ‖².

.. math::

    \ell'(z, y) = s(z) - y \in (-1, 1), \qquad
    L = \frac{\lambda_{\max}(X^\top X)}{4n} + \lambda, \qquad
    \sigma^2 \le \frac1n \sum_i \|x_i\|^2 \ \text{on all of } \mathbb R^d

Legend: s the sigmoid, y_i ∈ {0, 1}, λ ≥ 0 the ℓ₂ weight. L holds because
ℓ'' = s(1 − s) ≤ ¼. σ² is certified globally because |ℓ'| < 1 gives
E‖∇f_i − ∇f‖² ≤ E‖∇f_i − λθ‖² ≤ mean ‖x_i‖².

f_*: Newton's method gives θ̂; with λ > 0, f is λ-strongly convex and
f_* ≥ f(θ̂) − ‖∇f(θ̂)‖²/(2λ), the certified lower bound used here (tight to
rounding once Newton has converged). With λ = 0 the certified bound is 0 and the
Newton value is kept as ``f_star_estimate``.

Data (from the seed): X rows N(0, D²) with column scales from 1 to 1/√κ,
θ_true a random direction of length ``signal``, y_i ~ Bernoulli(s(x_iᵀθ_true)); θ₀ = 0.

>>> p = Logistic(n=300, dim=4, ridge=0.01, seed=1)
>>> bool(abs(p.f_star - p.f_star_estimate) < 1e-12), p.f_star_exact
(True, False)
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ..validation import check_greater
from .base import seed_of
from .finite_sum import GLMFiniteSum, check_data_shape, make_features

__all__ = ["Logistic"]


class Logistic(GLMFiniteSum):
    """Finite-sum logistic regression with L = λ_max(XᵀX)/(4n) + λ and a global σ² bound."""

    name = "logistic"

    def __init__(self, *, n: int = 1000, dim: int = 20, kappa: float = 10.0, signal: float = 2.0,
                 ridge: float = 0.01, seed: int = 0):
        where = "make_problem('logistic')"
        n, dim, kappa = check_data_shape(n, dim, kappa, where)
        signal = check_greater(signal, 0.0, "signal", where, strict=False)
        self.seed = seed_of(seed, where)
        self.params = {"n": n, "dim": dim, "kappa": kappa, "signal": signal, "ridge": float(ridge)}
        rng = np.random.default_rng([self.seed, 3])
        X = make_features(n, dim, kappa, rng)
        direction = rng.standard_normal(dim)
        theta_true = signal * direction / np.linalg.norm(direction)
        y = (rng.random(n) < expit(X @ theta_true)).astype(float)
        self._setup(X, y, ridge, where)
        self.L = self.gram_max / 4.0 + self.ridge
        self.theta0 = np.zeros(dim)
        self.theta_hat = self._newton()
        self.f_star_estimate = float(self.loss(self.theta_hat))
        if self.ridge > 0:
            g = self.grad(self.theta_hat)
            self.f_star = self.f_star_estimate - float(g @ g) / (2 * self.ridge)
        else:
            self.f_star = 0.0
        self.f_star_exact = False
        self.sigma2 = float(self.row_norm2.mean())
        self.sigma2_exact = False
        self.sigma2_region = "all of R^d (|s(z) - y| < 1)"

    def link(self, z, y):
        return np.logaddexp(0.0, z) - y * z, self.link_derivative(z, y)

    def link_derivative(self, z, y):
        return expit(z) - y

    def _newton(self, iters: int = 100) -> np.ndarray:
        theta = self.theta0.copy()
        for _ in range(iters):
            s = expit(self.X @ theta)
            g = self.X.T @ (s - self.y) / self.n + self.ridge * theta
            if np.linalg.norm(g) < 1e-13:
                break
            H = (self.X * (s * (1 - s))[:, None]).T @ self.X / self.n + self.ridge * np.eye(self.dim)
            theta = theta - np.linalg.solve(H + 1e-12 * np.eye(self.dim), g)
        return theta
