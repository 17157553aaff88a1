r"""The interface every synthetic problem implements, and the two samplers of (A3).

A :class:`Problem` is an L-smooth objective f: R^d → R with known constants and
stochastic-gradient oracles. Every method is vectorised over leading axes:
``theta`` has shape ``(..., d)``, one row per replicate/configuration.

.. math::

    f(\theta) = \frac1n \sum_{i=1}^n f_i(\theta), \qquad
    G_B(\theta) = \frac1b \sum_{i \in B} \nabla f_i(\theta), \qquad
    \sigma^2(\theta) = \frac1n \sum_{i=1}^n \|\nabla f_i(\theta) - \nabla f(\theta)\|^2

Legend: n number of samples (``None`` for the noisy quadratic, whose noise is
Gaussian), B a mini-batch of b indices, σ²(θ) the variance of one stochastic
gradient at θ (assumption (A2) asks σ²(θ) ≤ σ² for all θ the run visits),
L the smoothness constant (A1), f_* = inf f.

Convention for σ² (one place): ``sigma2`` is the variance of ONE stochastic
gradient, E‖G_ξ(θ) − ∇f(θ)‖² = trace of its covariance, so a batch of b i.i.d.
draws has variance σ²/b, and b distinct draws out of n have (n − b)/(n − 1) · σ²/b.
``sigma2_exact`` says whether it is exact (constant in θ) or a certified upper
bound on the region stated in ``sigma2_region``.

Samplers. With replacement a batch is b i.i.d. uniform indices; without
replacement each row walks through its own random permutation of the n samples
and takes the next b of them; when fewer than b are left the epoch ends (the
remainder is dropped, as ``drop_last=True`` does) and a new permutation is drawn.
Every batch is then a uniformly random b-subset, so its variance is exactly
(n − b)/(n − 1)·σ²(θ)/b, the ``WithoutReplacement(n)`` model of
:mod:`sfotheory.constants`.
"""

from __future__ import annotations

import numpy as np

from ..constants import ProblemConstants, VarianceModel, WithoutReplacement, WithReplacement
from ..validation import check_integer, fail

__all__ = ["Problem", "Sampler", "make_sampler"]


class Sampler:
    """Draws mini-batch indices for a batch of rows (one row per replicate × configuration).

    ``rows`` are global row ids (so that a row keeps its epoch position when the
    simulator drops finished rows from its working set).
    """

    def __init__(self, variance: VarianceModel, rows: int, n: int | None, seed: int):
        self.variance = variance
        self.n = n
        self.rows = rows
        self.without = isinstance(variance, WithoutReplacement)
        if self.without and n is not None:
            rng = np.random.default_rng([seed, 7_000_001])
            self.perm = rng.permuted(np.broadcast_to(np.arange(n, dtype=np.int64), (rows, n)), axis=1)
            self.pos = np.zeros(rows, dtype=np.int64)
            self.epoch = np.zeros(rows, dtype=np.int64)

    def factor(self, b):
        """φ(b): 1 with replacement, (n − b)/(n − 1) without."""
        return self.variance.factor(np.asarray(b, dtype=float))

    def indices(self, rows: np.ndarray, b: np.ndarray, rng: np.random.Generator):
        """Flat sample indices for ``rows`` with batch sizes ``b`` (rows in order, b[r] each)."""
        total = int(b.sum())
        if not self.without:
            return rng.integers(0, self.n, size=total)
        # Rows whose epoch cannot supply b more samples start a new permutation.
        short = self.pos[rows] + b > self.n
        if np.any(short):
            redo = rows[short]
            self.perm[redo] = rng.permuted(self.perm[redo], axis=1)
            self.pos[redo] = 0
            self.epoch[redo] += 1
        owner = np.repeat(rows, b)
        start = np.repeat(np.cumsum(b) - b, b)
        offset = np.arange(total) - start + self.pos[owner]
        self.pos[rows] += b
        return self.perm[owner, offset]


def make_sampler(problem: "Problem", variance: VarianceModel | None, rows: int, seed: int) -> Sampler:
    """A sampler for ``rows`` rows of ``problem`` under ``variance`` (default: with replacement)."""
    variance = WithReplacement() if variance is None else variance
    if not isinstance(variance, VarianceModel):
        fail("variance", "make_sampler", "WithReplacement() or WithoutReplacement(n)", variance)
    if isinstance(variance, WithoutReplacement) and problem.n is not None and variance.n != problem.n:
        fail("variance", "make_sampler", f"WithoutReplacement(n={problem.n}) for {problem.name!r} "
             f"(the data set has n = {problem.n} samples)", variance)
    return Sampler(variance, rows, problem.n, seed)


class Problem:
    """Base class: constants, oracles and reproducibility of one synthetic problem.

    Subclasses set ``name``, ``params`` (validated keyword parameters), ``seed``,
    ``dim``, ``n``, ``L``, ``f_star`` (with ``f_star_exact``), ``sigma2`` (with
    ``sigma2_exact`` and ``sigma2_region``), ``theta0`` and implement
    :meth:`observe` and :meth:`minibatch_grad`.
    """

    name: str = ""
    n: int | None = None
    L: float
    f_star: float
    f_star_exact: bool
    sigma2: float
    sigma2_exact: bool
    sigma2_region: str
    theta0: np.ndarray
    dim: int

    # -- oracles ------------------------------------------------------------------------------------
    def observe(self, theta):
        """(f(θ), ‖∇f(θ)‖, σ²(θ)) in one pass, each of shape ``theta.shape[:-1]``."""
        raise NotImplementedError

    def loss(self, theta):
        """f(θ), shape ``theta.shape[:-1]``."""
        return self.observe(theta)[0]

    def grad(self, theta):
        """∇f(θ) exactly, shape ``theta.shape``."""
        raise NotImplementedError

    def grad_norm(self, theta):
        """‖∇f(θ)‖ exactly."""
        return self.observe(theta)[1]

    def sigma2_at(self, theta):
        """σ²(θ) = E‖G_ξ(θ) − ∇f(θ)‖², the variance of one stochastic gradient at θ, exactly."""
        return self.observe(theta)[2]

    def minibatch_grad(self, theta, batch_size, rng, *, sampler: Sampler | None = None, rows=None):
        """G_B(θ) for every row of ``theta`` (shape (k, d)) with per-row batch sizes ``batch_size`` (k,)."""
        raise NotImplementedError

    # -- bookkeeping ----------------------------------------------------------------------------------
    @property
    def full_gradient_cost(self) -> int:
        """Gradient evaluations one exact ‖∇f‖ costs: n for a finite sum (see subclasses)."""
        return int(self.n or 0)

    def constants(self, theta0=None) -> ProblemConstants:
        """(L, σ², Δ = f(θ₀) − f_*) as a :class:`ProblemConstants` record (Δ uses the f_* bound)."""
        theta0 = self.theta0 if theta0 is None else np.asarray(theta0, dtype=float)
        gap = max(float(self.loss(theta0)) - self.f_star, 0.0)
        return ProblemConstants(L=float(self.L), sigma2=float(self.sigma2), gap=gap)

    def spec(self) -> dict:
        """(name, parameters, seed): enough to rebuild the problem with :func:`make_problem`."""
        return {"name": self.name, "params": dict(self.params), "seed": int(self.seed)}

    def describe(self) -> dict:
        """The spec and the constants, JSON-friendly."""
        return {**self.spec(), "dim": self.dim, "n": self.n, "L": float(self.L), "f_star": float(self.f_star),
                "f_star_exact": self.f_star_exact, "sigma2": float(self.sigma2), "sigma2_exact": self.sigma2_exact,
                "sigma2_region": self.sigma2_region, "f_theta0": float(self.loss(self.theta0)),
                "full_gradient_cost": self.full_gradient_cost}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({params}, seed={self.seed})"

    def _check_theta(self, theta, where: str):
        theta = np.asarray(theta, dtype=float)
        if theta.ndim < 1 or theta.shape[-1] != self.dim:
            fail("theta", where, f"an array of shape (..., {self.dim})", theta.shape)
        return theta

    def _check_batch(self, theta, batch_size, where: str):
        b = np.asarray(batch_size)
        if b.shape != theta.shape[:-1]:
            b = np.broadcast_to(b, theta.shape[:-1])
        if not np.issubdtype(b.dtype, np.integer) or np.any(b < 1):
            fail("batch_size", where, "integers >= 1", batch_size)
        return b.astype(np.int64)


def seed_of(seed, where: str) -> int:
    """Validate a seed (a non-negative integer)."""
    return check_integer(seed, "seed", where, minimum=0)


class StepRandom:
    """The randomness of one simulation step: a function of (seed, step) only.

    Normal draws of shape (k, ...) are split into ``blocks`` fixed row blocks, block j
    drawn by ``default_rng([seed, step, j])``; the blocks are filled on up to
    ``threads`` threads (numpy's generators release the GIL while filling), so the
    numbers do not depend on the thread count. Other draws (indices, permutations)
    use block 0's generator. Duck-types the few :class:`numpy.random.Generator`
    methods the oracles use.

    >>> a = StepRandom(3, 5, threads=1).standard_normal((4, 2))
    >>> b = StepRandom(3, 5, threads=2).standard_normal((4, 2))
    >>> bool(np.array_equal(a, b))
    True
    """

    _pool = None
    _pool_size = 0

    def __init__(self, seed: int, step: int, *, blocks: int = 2, threads: int = 1):
        self.seed, self.step, self.blocks, self.threads = int(seed), int(step), int(blocks), int(threads)
        self._gens = [None] * self.blocks

    def _gen(self, j: int) -> np.random.Generator:
        """Block j's generator, made on first use (a step that draws only indices never seeds block 1)."""
        g = self._gens[j]
        if g is None:
            g = self._gens[j] = np.random.default_rng([self.seed, self.step, j])
        return g

    @classmethod
    def _executor(cls, threads: int):
        if cls._pool is None or cls._pool_size < threads:
            from concurrent.futures import ThreadPoolExecutor
            cls._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sfotheory-rng")
            cls._pool_size = threads
        return cls._pool

    def standard_normal(self, shape, dtype=np.float64):
        shape = tuple(np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
        out = np.empty(shape, dtype=dtype)
        if out.size == 0:
            return out
        if out.ndim == 1:
            self._gen(0).standard_normal(out=out, dtype=dtype)
            return out
        edges = np.linspace(0, shape[0], self.blocks + 1).astype(int)
        parts = [(self._gen(j), out[lo:hi]) for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])) if hi > lo]
        if self.threads > 1 and out.size >= 65536 and len(parts) > 1:
            list(self._executor(self.threads).map(lambda p: p[0].standard_normal(out=p[1], dtype=dtype), parts))
        else:
            for g, view in parts:
                g.standard_normal(out=view, dtype=dtype)
        return out

    def integers(self, *args, **kwargs):
        return self._gen(0).integers(*args, **kwargs)

    def permuted(self, *args, **kwargs):
        return self._gen(0).permuted(*args, **kwargs)

    def random(self, *args, **kwargs):
        return self._gen(0).random(*args, **kwargs)
