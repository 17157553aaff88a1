r"""Per-row statistics of a mini-batch from its per-sample gradients: what the peer policies read.

For a batch B of b samples at θ, with per-sample gradients ∇f_i(θ) and g_B their mean,

.. math::

    \texttt{grad\_sq} = \|g_B\|^2, \qquad
    \texttt{trace\_var} = \frac{1}{b-1}\sum_{i\in B}\|\nabla f_i - g_B\|^2, \qquad
    \texttt{inner\_var} = \frac{1}{b-1}\sum_{i\in B}\bigl((\nabla f_i - g_B)^\top g_B\bigr)^2

(NaN at b = 1). tr Σ̂ is unbiased for σ²(θ) = tr Σ with replacement and for
n σ²(θ)/(n − 1) without; ‖g_B‖² − c_b tr Σ̂/b (c_b = 1, or 1 − b/n without replacement) is
unbiased for ‖∇f(θ)‖²; for any direction v chosen independently of B, the sample variance
of the ∇f_iᵀv is unbiased for vᵀΣv, and ``inner_var`` is that estimator at v = g_B, as the
inner-product test defines it (docs/theory.md, "Estimating ‖∇f(θ)‖").

How each problem provides them, at the cost of the batch itself (no extra SFO):

* finite sums (:class:`~sfotheory.problems.GLMFiniteSum`): the per-sample gradients
  ℓ'(x_iᵀθ, y_i) x_i + λθ of the sampled rows, gathered as the mini-batch oracle gathers them
  (the same index draws, so g_B is bit for bit the oracle's);
* the noisy quadratic with isotropic noise Σ = s²I: exactly in distribution without drawing
  the b samples. Given g_B, the scatter matrix W = Σ_i (ξ_i − ξ̄)(ξ_i − ξ̄)ᵀ is independent of
  ξ̄ and Wishart(s²I, b − 1); rotating g_B onto the first axis, tr W = s²(X₁ + X₂) and
  g_Bᵀ W g_B = s²‖g_B‖² X₁ with X₁ ~ χ²_{b−1}, X₂ ~ χ²_{(d−1)(b−1)} independent: two draws
  per row, whatever b;
* the noisy quadratic with any other noise: the b noise vectors are drawn (b·d normals per
  row, chunked).

The quadratic's without-replacement mode scales the covariance of the mean only; it defines
no per-sample gradients, so it is refused here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .problems import GLMFiniteSum, NoisyQuadratic, Problem, Sampler
from .validation import fail

__all__ = ["BatchStatistics", "minibatch_statistics", "statistics_from_indices", "statistics_from_per_sample"]


class BatchStatistics(NamedTuple):
    """The three statistics of :mod:`sfotheory.batch_statistics`, one entry per row."""

    grad_sq: np.ndarray
    trace_var: np.ndarray
    inner_var: np.ndarray


def _reduce(dev, g, starts, b):
    """The statistics from the per-sample deviations ``dev`` = ∇f_i − g_B (row r owns the b[r] from starts[r])."""
    ss = np.add.reduceat(np.einsum("sd,sd->s", dev, dev), starts)
    proj = np.einsum("sd,sd->s", dev, np.repeat(g, b, axis=0))
    ip = np.add.reduceat(proj * proj, starts)
    dof = np.where(b > 1, b - 1, np.nan)
    return BatchStatistics(grad_sq=np.einsum("kd,kd->k", g, g), trace_var=ss / dof, inner_var=ip / dof)


def statistics_from_per_sample(per_sample) -> tuple[np.ndarray, BatchStatistics]:
    """(g_B, statistics) of one batch from its per-sample gradients, shape (b, d): the definitions, directly.

    >>> g, s = statistics_from_per_sample(np.array([[1.0, 0.0], [3.0, 2.0]]))
    >>> g.tolist(), float(s.grad_sq[0]), float(s.trace_var[0]), float(s.inner_var[0])
    ([2.0, 1.0], 5.0, 4.0, 18.0)
    """
    x = np.asarray(per_sample, dtype=float)
    if x.ndim != 2 or x.shape[0] < 1:
        fail("per_sample", "statistics_from_per_sample", "an array of shape (b, d) with b >= 1", np.shape(x))
    b = x.shape[0]
    g = x.mean(axis=0)
    dev = x - g
    dof = b - 1 if b > 1 else np.nan
    stats = BatchStatistics(grad_sq=np.array([g @ g]), trace_var=np.array([np.sum(dev * dev) / dof]),
                            inner_var=np.array([np.sum((dev @ g) ** 2) / dof]))
    return g, stats


def statistics_from_indices(problem: GLMFiniteSum, theta, b, idx) -> tuple[np.ndarray, BatchStatistics]:
    """(g_B, statistics) per row of ``theta`` (k, d) for the batches ``idx`` (row r owns the next b[r] entries).

    g_B is computed as :meth:`GLMFiniteSum.batch_grad_from_indices` computes it (same result).
    """
    theta = np.asarray(theta, dtype=float)
    b = np.asarray(b, dtype=np.int64)
    starts = np.cumsum(b) - b
    dev = problem.data_gradients_from_indices(theta, b, idx)     # ∇f_i less the ridge term λθ, common to all
    g = np.add.reduceat(dev, starts, axis=0)
    g /= b[:, None]
    dev -= np.repeat(g, b, axis=0)                 # ∇f_i − g_B: the ridge term cancels
    g += problem.ridge * theta
    return g, _reduce(dev, g, starts, b)


def _finite_sum(problem: GLMFiniteSum, theta, b, rng, sampler, rows, where):
    if sampler is not None and sampler.without and np.any(b > problem.n):
        fail("batch_size", where, f"<= n = {problem.n} without replacement", b,
             reason="a batch of distinct samples cannot exceed the data set")
    g = np.empty_like(theta)
    parts = []
    per_row = b * problem.dim
    start = 0
    while start < theta.shape[0]:       # the oracle's chunking, so that the index draws are the oracle's
        stop = start + max(1, int(np.searchsorted(np.cumsum(per_row[start:]), problem.chunk_elements, "right")))
        sl = slice(start, stop)
        if sampler is None:
            idx = rng.integers(0, problem.n, size=int(b[sl].sum()))
        else:
            idx = sampler.indices(rows[sl], b[sl], rng)
        g[sl], stats = statistics_from_indices(problem, theta[sl], b[sl], idx)
        parts.append(stats)
        start = stop
    return g, BatchStatistics(*(np.concatenate(col) for col in zip(*parts)))


def _quadratic(problem: NoisyQuadratic, theta, b, rng, sampler, where):
    if sampler is not None and sampler.without:
        fail("variance", where, "WithReplacement() for per-sample statistics of the noisy quadratic", sampler.variance,
             reason="its without-replacement mode scales the covariance of the batch mean and defines no "
                    "per-sample gradients")
    var = problem.noise_var
    if np.all(var == var[0]):
        g = problem.minibatch_grad(theta, b, rng)            # the oracle's own draws: g_B = Aθ + ξ̄
        child = np.random.default_rng(int(rng.integers(0, 2**62)))
        dof = np.where(b > 1, b - 1, 1)
        x1 = child.chisquare(dof)
        x2 = child.chisquare(np.maximum(dof * (problem.dim - 1), 1)) if problem.dim > 1 else np.zeros(b.shape)
        s2 = float(var[0])
        g2 = np.einsum("kd,kd->k", g, g)
        with np.errstate(invalid="ignore"):
            denom = np.where(b > 1, b - 1, np.nan)
            stats = BatchStatistics(grad_sq=g2, trace_var=s2 * (x1 + x2) / denom, inner_var=s2 * g2 * x1 / denom)
        return g, stats
    g = np.empty_like(theta)
    parts = []
    per_row = b * problem.dim
    start = 0
    while start < theta.shape[0]:
        stop = start + max(1, int(np.searchsorted(np.cumsum(per_row[start:]), 1 << 22, "right")))
        sl = slice(start, stop)
        bb = b[sl]
        starts = np.cumsum(bb) - bb
        xi = rng.standard_normal((int(bb.sum()), problem.dim))
        xi *= problem.noise_sd
        mean = np.add.reduceat(xi, starts, axis=0)
        mean /= bb[:, None]
        dev = xi - np.repeat(mean, bb, axis=0)
        g[sl] = theta[sl] * problem.eigenvalues + mean
        parts.append(_reduce(dev, g[sl], starts, bb))
        start = stop
    return g, BatchStatistics(*(np.concatenate(col) for col in zip(*parts)))


def minibatch_statistics(problem: Problem, theta, batch_size, rng, *, sampler: Sampler | None = None,
                         rows=None) -> tuple[np.ndarray, BatchStatistics]:
    """G_B(θ) per row of ``theta`` (k, d) with per-row batch sizes, and its :class:`BatchStatistics`.

    Arguments as in ``problem.minibatch_grad``; ``rng`` a :class:`~sfotheory.problems.StepRandom`
    or a numpy generator.

    >>> from sfotheory.problems import make_problem
    >>> p = make_problem("least_squares", n=50, dim=3, seed=0)
    >>> g, s = minibatch_statistics(p, np.zeros((2, 3)), np.array([1, 4]), np.random.default_rng(0))
    >>> g.shape, bool(np.isnan(s.trace_var[0])), bool(s.trace_var[1] > 0)
    ((2, 3), True, True)
    """
    where = f"minibatch_statistics({getattr(problem, 'name', type(problem).__name__)!r})"
    theta = np.asarray(theta, dtype=float)
    if theta.ndim != 2 or theta.shape[1] != getattr(problem, "dim", -1):
        fail("theta", where, f"a 2-d array (rows, {getattr(problem, 'dim', 'd')})", theta.shape)
    b = np.broadcast_to(np.asarray(batch_size), theta.shape[:1])
    if not np.issubdtype(b.dtype, np.integer) or np.any(b < 1):
        fail("batch_size", where, "integers >= 1", batch_size)
    b = b.astype(np.int64)
    rows = np.arange(theta.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if isinstance(problem, GLMFiniteSum):
        return _finite_sum(problem, theta, b, rng, sampler, rows, where)
    if isinstance(problem, NoisyQuadratic):
        return _quadratic(problem, theta, b, rng, sampler, where)
    fail("problem", "minibatch_statistics", "a finite sum (GLMFiniteSum) or the noisy quadratic, whose per-sample "
         "gradients are known", problem, cls=TypeError)
