r"""A nonconvex smooth finite sum: robust regression with the Cauchy loss.

.. math::

    \rho_c(r) = \frac{c^2}{2}\log\Bigl(1 + \frac{r^2}{c^2}\Bigr), \quad
    \rho_c'(r) = \frac{r}{1 + r^2/c^2}, \quad
    \rho_c''(r) = \frac{1 - r^2/c^2}{(1 + r^2/c^2)^2} \in [-\tfrac18, 1]

f(θ) = (1/n) Σ ρ_c(x_iᵀθ − y_i) + (λ/2)‖θ‖². ρ_c'' < 0 for |r| > c, so f is
nonconvex. Certified constants: L = λ_max(XᵀX/n) + λ (from |ρ''| ≤ 1),
σ² ≤ (c²/4)·mean‖x_i‖² on all of R^d (from |ρ'| ≤ c/2), f_* ≥ 0 (ρ ≥ 0; the
certified lower bound used in Δ). ``f_star_estimate`` is the value reached by
2000 steps of full-batch gradient descent from θ_true (an estimate, not a bound).

Data (from the seed): X rows N(0, D²), θ_true ~ N(0, I/d), y = Xθ_true + noise
drawn from a Student-t with 2 degrees of freedom times ``noise`` (heavy tails,
where the Cauchy loss is worth its nonconvexity); θ₀ = 0.

>>> p = CauchyRegression(n=200, dim=3, seed=2)
>>> p.f_star, bool(0.0 <= p.f_star_estimate < float(p.loss(p.theta0)))
(0.0, True)
"""

from __future__ import annotations

import numpy as np

from ..validation import check_greater, check_positive
from .base import seed_of
from .finite_sum import GLMFiniteSum, check_data_shape, make_features

__all__ = ["CauchyRegression"]


class CauchyRegression(GLMFiniteSum):
    """Cauchy-loss regression: nonconvex, L and σ² certified globally, f_* ≥ 0."""

    name = "cauchy"

    def __init__(self, *, n: int = 1000, dim: int = 20, kappa: float = 10.0, scale: float = 1.0,
                 noise: float = 0.5, ridge: float = 0.0, seed: int = 0):
        where = "make_problem('cauchy')"
        n, dim, kappa = check_data_shape(n, dim, kappa, where)
        scale = check_positive(scale, "scale", where, reason="the Cauchy scale c > 0")
        noise = check_greater(noise, 0.0, "noise", where, strict=False)
        self.seed = seed_of(seed, where)
        self.params = {"n": n, "dim": dim, "kappa": kappa, "scale": scale, "noise": noise, "ridge": float(ridge)}
        rng = np.random.default_rng([self.seed, 4])
        X = make_features(n, dim, kappa, rng)
        self.theta_true = rng.standard_normal(dim) / np.sqrt(dim)
        y = X @ self.theta_true + noise * rng.standard_t(2.0, size=n)
        self.c = scale
        self._setup(X, y, ridge, where)
        self.L = self.gram_max + self.ridge
        self.theta0 = np.zeros(dim)
        self.f_star = 0.0
        self.f_star_exact = False
        theta = self.theta_true.copy()
        for _ in range(2000):
            theta -= self.grad(theta) / self.L
        self.f_star_estimate = float(self.loss(theta))
        self.sigma2 = float(self.c**2 / 4.0 * self.row_norm2.mean())
        self.sigma2_exact = False
        self.sigma2_region = "all of R^d (|rho'| <= c/2)"

    def link(self, z, y):
        r, q = self._residual(z, y)
        return 0.5 * self.c**2 * np.log(q), r / q

    def link_derivative(self, z, y):
        r, q = self._residual(z, y)
        return r / q

    def _residual(self, z, y):
        """(r, 1 + r²/c²) with r = z − y."""
        r = z - y
        return r, 1.0 + (r / self.c) ** 2
