r"""The noisy quadratic: f(θ) = ½ θᵀAθ with a chosen spectrum and Gaussian gradient noise.

.. math::

    f(\theta) = \tfrac12 \sum_{i=1}^d \lambda_i \theta_i^2, \qquad
    G_B(\theta) = A\theta + \xi_B, \quad
    \xi_B \sim \mathcal N\!\bigl(0, \tfrac{\varphi(b)}{b}\,\Sigma\bigr), \quad
    \Sigma = \operatorname{diag}(s_1^2, \dots, s_d^2)

Legend: A = diag(λ₁ ≥ … ≥ λ_d > 0) (we work in A's eigenbasis: a rotation Q changes
nothing in the law of SGD when Σ is diagonal in the same basis), L = λ₁,
κ = λ₁/λ_d the condition number, s_i² the noise variance along eigen-direction i,
σ² = tr Σ = Σ s_i² (exact, the same at every θ), f_* = 0 (exact), φ(b) = 1 with
replacement and (n − b)/(n − 1) without (see below), b the batch size.

The mean of b i.i.d. draws of N(0, Σ) is exactly N(0, Σ/b), so one Gaussian draw
per row and step with covariance Σ/b is the mini-batch oracle, whatever b is:
rows with different batch sizes stay one vectorised computation.

Without replacement there is no data set; ``WithoutReplacement(n)`` scales the
covariance by φ(b) = (n − b)/(n − 1), the exact covariance of the mean of b
distinct draws from a population of n gradients with covariance Σ (the law stays
Gaussian: a model, exact in its first two moments, which is all that the
expectations of :mod:`sfotheory.quadratic_theory` and Proposition 1 use).

Measurement convention: an exact ‖∇f(θ)‖ check costs ``check_cost`` gradient
evaluations (parameter, default 0: the full gradient Aθ is an oracle outside the
SFO model; set it to the n of the data set you imitate to charge a full pass).

Spectrum: λ_i = L κ^{−(i−1)/(d−1)} (``spectrum="log"``) or linearly spaced from L to
L/κ (``"linear"``). Noise: ``"isotropic"`` s_i² = σ²/d, or ``"hessian"`` s_i² ∝ λ_i
(noise aligned with curvature, as the Fisher ≈ Hessian heuristic of neural nets).
θ₀ is a Gaussian direction (from the seed) scaled so that f(θ₀) = ``gap``.

>>> q = NoisyQuadratic(dim=4, kappa=2.0, sigma2=1.0, gap=1.0, seed=0)
>>> q.L, q.f_star, float(q.loss(q.theta0)), float(q.noise_var.sum())
(1.0, 0.0, 1.0, 1.0)
>>> bool(np.allclose(q.grad(q.theta0), q.eigenvalues * q.theta0))
True
"""

from __future__ import annotations

import numpy as np

from ..validation import check_choice, check_greater, check_integer, check_positive, fail
from .base import Problem, Sampler, seed_of

__all__ = ["NoisyQuadratic"]


class NoisyQuadratic(Problem):
    """f(θ) = ½ Σ λ_i θ_i², gradient noise N(0, φ(b)Σ/b); L, σ² and f_* exact."""

    name = "quadratic"
    n = None

    def __init__(self, *, dim: int = 1000, kappa: float = 1.0, L: float = 1.0, sigma2: float = 1.0,
                 gap: float = 1.0, spectrum: str = "log", noise: str = "isotropic", check_cost: int = 0,
                 seed: int = 0):
        where = "make_problem('quadratic')"
        self.dim = check_integer(dim, "dim", where, minimum=1)
        kappa = check_greater(kappa, 1.0, "kappa", where, strict=False, reason="kappa = L / lambda_min >= 1")
        L = check_positive(L, "L", where)
        sigma2 = check_greater(sigma2, 0.0, "sigma2", where, strict=False, reason="a variance cannot be negative")
        gap = check_positive(gap, "gap", where, reason="f(theta_0) - f_* > 0")
        if self.dim == 1 and kappa != 1.0:
            fail("kappa", where, "1 when dim = 1", kappa, reason="one eigenvalue has condition number 1")
        check_choice(spectrum, ("log", "linear"), "spectrum", where)
        check_choice(noise, ("isotropic", "hessian"), "noise", where)
        self.seed = seed_of(seed, where)
        self.params = {"dim": self.dim, "kappa": kappa, "L": L, "sigma2": sigma2, "gap": gap,
                       "spectrum": spectrum, "noise": noise,
                       "check_cost": check_integer(check_cost, "check_cost", where, minimum=0)}
        frac = np.arange(self.dim) / max(self.dim - 1, 1)
        if spectrum == "log":
            lam = L * kappa ** (-frac)
        else:
            lam = L - (L - L / kappa) * frac
        self.eigenvalues = lam
        self._lam2 = lam * lam
        if noise == "isotropic":
            var = np.full(self.dim, sigma2 / self.dim)
        else:
            var = sigma2 * lam / lam.sum()
        self.noise_var = var
        self.noise_sd = np.sqrt(var)
        self.L = float(lam[0])
        self.f_star = 0.0
        self.f_star_exact = True
        self.sigma2 = float(sigma2)
        self.sigma2_exact = True
        self.sigma2_region = "all of R^d (Gaussian noise, independent of theta)"
        direction = np.random.default_rng([self.seed, 1]).standard_normal(self.dim)
        self.theta0 = direction * np.sqrt(2.0 * gap / np.dot(lam, direction**2))

    @property
    def full_gradient_cost(self) -> int:
        return int(self.params["check_cost"])

    def grad(self, theta):
        theta = self._check_theta(theta, "NoisyQuadratic.grad")
        return theta * self.eigenvalues

    def observe(self, theta):
        theta = self._check_theta(theta, "NoisyQuadratic.observe")
        sq = theta * theta
        # einsum, not a BLAS matmul: BLAS threads spinning after a call slow the noise generation down.
        loss = 0.5 * np.einsum("...j,j->...", sq, self.eigenvalues)
        norm = np.sqrt(np.einsum("...j,j->...", sq, self._lam2))
        return loss, norm, np.full(np.shape(loss), self.sigma2)

    def minibatch_grad(self, theta, batch_size, rng, *, sampler: Sampler | None = None, rows=None):
        """Aθ + ξ with ξ ~ N(0, φ(b)Σ/b) per row (φ from ``sampler``, 1 without one).

        >>> q = NoisyQuadratic(dim=3, sigma2=0.0, seed=1)
        >>> g = q.minibatch_grad(np.ones((2, 3)), np.array([1, 4]), np.random.default_rng(0))
        >>> bool(np.allclose(g, q.eigenvalues))
        True
        """
        theta = self._check_theta(theta, "NoisyQuadratic.minibatch_grad")
        b = self._check_batch(theta, batch_size, "NoisyQuadratic.minibatch_grad")
        scale = self.noise_scale(b, sampler)
        noise = rng.standard_normal(theta.shape)
        noise *= scale[..., None]
        noise *= self.noise_sd
        noise += theta * self.eigenvalues
        return noise

    def noise_scale(self, b, sampler: Sampler | None = None):
        """√(φ(b)/b): the per-row factor of the noise standard deviation."""
        b = np.asarray(b, dtype=float)
        phi = sampler.factor(b) if sampler is not None else 1.0
        if sampler is not None and sampler.without and np.any(b > sampler.variance.n):
            fail("batch_size", "NoisyQuadratic.minibatch_grad", f"<= n = {sampler.variance.n} without replacement",
                 b)
        return np.sqrt(phi / b)

    def subsample_grad(self, theta, size: int, rng):
        """A fresh, independent mini-batch gradient of ``size`` draws (the "subsampled" monitor)."""
        theta = self._check_theta(theta, "NoisyQuadratic.subsample_grad")
        return self.minibatch_grad(theta, np.full(theta.shape[:-1], size, dtype=np.int64), rng)
