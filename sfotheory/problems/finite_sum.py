r"""Finite sums of generalised linear losses, the common core of the three data-set problems.

.. math::

    f(\theta) = \frac1n \sum_{i=1}^n \ell(x_i^\top\theta, y_i) + \frac{\lambda}{2}\|\theta\|^2, \qquad
    \nabla f_i(\theta) = \ell'(x_i^\top\theta, y_i)\, x_i + \lambda\theta,

    \sigma^2(\theta) = \frac1n\sum_i \ell'(z_i, y_i)^2 \|x_i\|^2
                       - \Bigl\|\frac1n \sum_i \ell'(z_i, y_i)\, x_i\Bigr\|^2

Legend: X ∈ R^{n×d} the features (rows x_i), y the targets, z_i = x_iᵀθ, ℓ the
per-sample loss with derivative ℓ' in z, λ ≥ 0 the ℓ₂ weight (``ridge``), σ²(θ)
the exact variance of one uniformly drawn per-sample gradient (the ridge term is
the same in every sample and cancels).

One pass over the data gives f, ∇f and σ²(θ) together (:meth:`observe`). A
mini-batch step for k rows with per-row batch sizes b_r gathers the
Σ_r b_r sampled rows of X into one flat array, multiplies, and sums each row's
contiguous segment with ``np.add.reduceat``: the work is exactly the SFO count,
with no padding to the largest batch and no loop over rows (chunked when the
gathered block would exceed ``chunk_elements`` numbers).
"""

from __future__ import annotations

import numpy as np

from ..validation import check_greater, check_integer, fail
from .base import Problem, Sampler

__all__ = ["GLMFiniteSum", "check_data_shape", "make_features"]


def check_data_shape(n, dim, kappa, where: str) -> tuple[int, int, float]:
    """The (n, dim, kappa) of a generated data set: n ≥ 2 rows, dim ≥ 1 features, condition number κ ≥ 1."""
    return (check_integer(n, "n", where, minimum=2), check_integer(dim, "dim", where, minimum=1),
            check_greater(kappa, 1.0, "kappa", where, strict=False))


def make_features(n: int, d: int, kappa: float, rng: np.random.Generator) -> np.ndarray:
    """n rows of N(0, D²) features with column scales D log-spaced from 1 to 1/√κ (cond(XᵀX) ≈ κ)."""
    scales = kappa ** (-0.5 * np.arange(d) / max(d - 1, 1))
    return rng.standard_normal((n, d)) * scales


class GLMFiniteSum(Problem):
    """Base class of the finite-sum problems; subclasses define :meth:`link` (and :meth:`link_derivative`, which
    the gradients use, when ℓ' alone is cheaper than (ℓ, ℓ'))."""

    chunk_elements = 1 << 22

    def _setup(self, X, y, ridge: float, where: str):
        self.X = np.ascontiguousarray(X, dtype=float)
        self.y = np.asarray(y, dtype=float)
        self.n, self.dim = self.X.shape
        self.ridge = float(check_greater(ridge, 0.0, "ridge", where, strict=False))
        self.row_norm2 = np.einsum("ij,ij->i", self.X, self.X)
        self.gram_max = float(np.linalg.eigvalsh(self.X.T @ self.X / self.n)[-1])

    def link(self, z, y):
        """(ℓ(z, y), ℓ'(z, y)) element-wise."""
        raise NotImplementedError

    def link_derivative(self, z, y):
        """ℓ'(z, y) element-wise, the same numbers as ``link(z, y)[1]``: all that a gradient needs."""
        return self.link(z, y)[1]

    # -- exact quantities ----------------------------------------------------------------------------
    def observe(self, theta):
        theta = self._check_theta(theta, f"{type(self).__name__}.observe")
        z = theta @ self.X.T
        loss_i, dl = self.link(z, self.y)
        g_data = dl @ self.X / self.n
        grad = g_data + self.ridge * theta
        loss = loss_i.mean(axis=-1) + 0.5 * self.ridge * np.einsum("...j,...j->...", theta, theta)
        norm = np.sqrt(np.einsum("...j,...j->...", grad, grad))
        sigma2 = (dl * dl) @ self.row_norm2 / self.n - np.einsum("...j,...j->...", g_data, g_data)
        return loss, norm, np.maximum(sigma2, 0.0)

    def grad(self, theta):
        theta = self._check_theta(theta, f"{type(self).__name__}.grad")
        dl = self.link_derivative(theta @ self.X.T, self.y)
        return dl @ self.X / self.n + self.ridge * theta

    def per_sample_grads(self, theta):
        """∇f_i(θ) for every i, shape (..., n, d) (for tests; memory n·d per row)."""
        theta = self._check_theta(theta, f"{type(self).__name__}.per_sample_grads")
        dl = self.link_derivative(theta @ self.X.T, self.y)
        return dl[..., :, None] * self.X + self.ridge * theta[..., None, :]

    # -- stochastic oracles --------------------------------------------------------------------------
    def data_gradients_from_indices(self, theta, b, idx):
        """ℓ'(x_iᵀθ, y_i) x_i for every entry i of the flat index array ``idx``, shape (Σ b, d): the per-sample
        gradients less the ridge term λθ, which every sample of a row shares (row r owns b[r] entries)."""
        # X.take and np.repeat give the numbers of X[idx] and θ[owner] (owner: each entry's row), faster
        xs = self.X.take(idx, axis=0)
        z = np.einsum("sd,sd->s", xs, np.repeat(theta, b, axis=0))
        xs *= self.link_derivative(z, self.y.take(idx))[:, None]
        return xs

    def batch_grad_from_indices(self, theta, b, idx):
        """Mean of ∇f_i over each row's segment of the flat index array ``idx`` (row r owns b[r] entries)."""
        g = np.add.reduceat(self.data_gradients_from_indices(theta, b, idx), np.cumsum(b) - b, axis=0)
        g /= b[:, None]
        g += self.ridge * theta
        return g

    def minibatch_grad(self, theta, batch_size, rng, *, sampler: Sampler | None = None, rows=None):
        """G_B(θ) per row of ``theta`` (k, d), batch sizes (k,), indices from ``sampler``.

        Without a sampler the batch is drawn with replacement. ``rows`` are the rows'
        global ids for a without-replacement sampler (default 0..k−1).
        """
        where = f"{type(self).__name__}.minibatch_grad"
        theta = self._check_theta(theta, where)
        if theta.ndim != 2:
            fail("theta", where, "a 2-d array (rows, d)", theta.shape)
        b = self._check_batch(theta, batch_size, where)
        rows = np.arange(theta.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        if sampler is not None and sampler.without and np.any(b > self.n):
            fail("batch_size", where, f"<= n = {self.n} without replacement", b,
                 reason="a batch of distinct samples cannot exceed the data set")
        out = np.empty_like(theta)
        # Chunk the rows so that the gathered block of Σ b_r rows of X stays bounded.
        per_row = b * self.dim
        start = 0
        while start < theta.shape[0]:
            stop = start + max(1, int(np.searchsorted(np.cumsum(per_row[start:]), self.chunk_elements, "right")))
            sl = slice(start, stop)
            if sampler is None:
                idx = rng.integers(0, self.n, size=int(b[sl].sum()))
            else:
                idx = sampler.indices(rows[sl], b[sl], rng)
            out[sl] = self.batch_grad_from_indices(theta[sl], b[sl], idx)
            start = stop
        return out

    def subsample_grad(self, theta, size: int, rng):
        """The mean gradient over a fresh uniform subset of ``size`` distinct samples per row."""
        where = f"{type(self).__name__}.subsample_grad"
        size = check_integer(size, "size", where, minimum=1)
        if size > self.n:
            fail("size", where, f"<= n = {self.n}", size)
        k = theta.shape[0]
        idx = np.argpartition(rng.random((k, self.n)), size - 1, axis=1)[:, :size].ravel()
        return self.batch_grad_from_indices(theta, np.full(k, size, dtype=np.int64), idx)
