r"""The subsampled monitor: ‖∇f(θ)‖ estimated on s of the n training samples, with a margin.

A subset S (|S| = s), drawn uniformly **without replacement**, gives

.. math::

    g_S = \frac{1}{s}\sum_{i\in S}\nabla f_i(\theta), \qquad
    \mathbb{E}\, g_S = \nabla f(\theta), \qquad
    \mathbb{E}\,\lVert g_S - \nabla f\rVert^2 = \operatorname{tr} C
        = \Bigl(1 - \frac{s}{n}\Bigr)\frac{\operatorname{tr} S^2}{s},

with S² = (1/(n−1)) Σᵢ (∇fᵢ − ∇f)(∇fᵢ − ∇f)ᵀ the per-sample gradient covariance (the Σ of
``docs/theory.md``, "Sampling with and without replacement", up to the factor n/(n−1)). Hence **‖g_S‖² overestimates ‖∇f‖² by tr C**, which is
tr Σ / s for s ≪ n and 0 at s = n.

Estimators (legend: k micro-batches of the subset, tr Σ̂ from
:class:`~sfotorch.monitors.moments.GradientMoments`, unbiased for tr S²):

- ``sq_norm`` = ‖g_S‖² − (1 − s/n) tr Σ̂ / s, unbiased for ‖∇f‖²; ``norm`` = its square root,
  clamped at 0 (``clamped`` is then True). Its square root is biased low (Jensen). With
  ``debias=False`` the point estimate is ‖g_S‖ itself (biased high: it delays stage changes).
- ``margin`` r and the interval [max(0, ‖g_S‖ − r), ‖g_S‖ + r] for ‖∇f‖ (triangle
  inequality, ‖g_S − ∇f‖ ≤ r with probability ≥ ``confidence`` = 1 − α):

  * ``bound="markov"`` (distribution-free): P(‖g_S − ∇f‖² ≥ tr C/α) ≤ α, so r = √(tr Ĉ/α).
  * ``bound="gaussian"`` (CLT, g_S − ∇f ~ N(0, C)): among Gaussians with a given tr C the
    rank-one one has the heaviest tail for α ≤ 0.215 (Székely & Bakirov 2003), so
    r = z_{1−α/2} √(tr Ĉ), a χ²₁ quantile — tighter (1.96 vs 4.47 √tr Ĉ at 95%).

  tr Ĉ = (1 − s/n) tr Σ̂ / s is a plug-in estimate with k − 1 degrees of freedom, so the stated
  coverage is approximate when k is small; ``variance_source="per_sample"`` uses all s − 1.

Subsets: ``fresh=True`` draws a new subset at every call, ``fresh=False`` reuses one; the
subset of call c is ``numpy.random.default_rng([seed, c]).permutation(n)[:s]`` (c = 0 for a
fixed subset), so a resumed run (``state_dict``) measures on the same subsets. The subset's
random order makes its split into micro-batches a random partition.

Cost: s gradient evaluations per measurement, in eval mode, with no trace left (as the exact
monitor; see :func:`~sfotorch.monitors.base.leave_no_trace`).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch
from torch import nn

from sfotheory.validation import ParameterTypeError, check_choice, check_in_range, fail

from .base import DatasetMonitor, Measurement, check_count, leave_no_trace
from .moments import GradientMoments, group_gradient, loss_scale, per_sample_gradients, refuse_batch_coupled

__all__ = ["SubsampledMonitor", "confidence_radius"]

BOUNDS = ("markov", "gaussian")
VARIANCE_SOURCES = ("micro_batches", "per_sample")
GAUSSIAN_MIN_CONFIDENCE = 0.785


def confidence_radius(trace_c: float, confidence: float, bound: str) -> float:
    """r with P(‖g − E g‖ ≥ r) ≤ 1 − ``confidence`` given tr C = ``trace_c`` (see module doc).

    >>> round(confidence_radius(1.0, 0.95, "markov"), 4), round(confidence_radius(1.0, 0.95, "gaussian"), 4)
    (4.4721, 1.96)
    """
    alpha = 1.0 - confidence
    if bound == "markov":
        return math.sqrt(trace_c / alpha)
    return NormalDist().inv_cdf(1.0 - alpha / 2.0) * math.sqrt(trace_c)


class SubsampledMonitor(DatasetMonitor):
    """‖∇f(θ)‖ from a subset of s samples (fixed or fresh), with a confidence margin.

    Parameters (beyond those of :class:`~sfotorch.monitors.exact.ExactMonitor`)
    ---------------------------------------------------------------------------
    sample_size : s, 1 ≤ s ≤ n.
    fresh : a new subset at every call (True) or one fixed subset (False).
    seed : subsets are a function of (seed, call index).
    confidence : level 1 − α of the interval, in (0, 1).
    bound : ``"markov"`` (distribution-free) or ``"gaussian"`` (CLT); see the module doc.
    micro_batches : k, the number of groups tr Σ̂ is estimated from (2 ≤ k ≤ s; default min(8, s)).
    variance_source : ``"micro_batches"`` (any model) or ``"per_sample"`` (torch.func; k = s).
    debias : report √(‖g_S‖² − tr Ĉ) (True) or ‖g_S‖ (False) as ``norm``.
    """

    def __init__(self, model: nn.Module, dataset, loss_fn, *, sample_size: int, fresh: bool = True, seed: int = 0,
                 confidence: float = 0.95, bound: str = "markov", micro_batches: int | None = None,
                 variance_source: str = "micro_batches", debias: bool = True, batch_size: int = 256,
                 reduction: str | None = None, device=None, transform=None, num_workers: int = 0,
                 name: str | None = None):
        where = "SubsampledMonitor"
        super().__init__(model, dataset, loss_fn, where=where, batch_size=batch_size, reduction=reduction,
                         device=device, transform=transform, num_workers=num_workers)
        self.sample_size = check_count(sample_size, "sample_size", where, low=1, high=self.n,
                                       reason=f"a subset of the n = {self.n} training samples")
        if not isinstance(fresh, bool):
            fail("fresh", where, "True or False", fresh, cls=ParameterTypeError)
        self.fresh = fresh
        self.seed = check_count(seed, "seed", where, low=0)
        self.bound = check_choice(bound, BOUNDS, "bound", where)
        self.confidence = check_in_range(confidence, 0.0, 1.0, "confidence", where, low_strict=True)
        if bound == "gaussian" and self.confidence < GAUSSIAN_MIN_CONFIDENCE:
            fail("confidence", where, f">= {GAUSSIAN_MIN_CONFIDENCE} with bound='gaussian'", confidence,
                 reason="the rank-one worst case of the Gaussian bound holds for alpha <= 0.215")
        self.variance_source = check_choice(variance_source, VARIANCE_SOURCES, "variance_source", where)
        if variance_source == "per_sample":
            if micro_batches is not None:
                fail("micro_batches", where, "None with variance_source='per_sample' (k = s)", micro_batches)
            self.micro_batches = self.sample_size
        elif micro_batches is None:
            self.micro_batches = min(8, self.sample_size)
        else:
            low = 2 if self.sample_size >= 2 else 1
            self.micro_batches = check_count(micro_batches, "micro_batches", where, low=low, high=self.sample_size,
                                             reason=f"k groups of the s = {self.sample_size} sampled samples")
        self.debias = bool(debias)
        self.name = name or f"subsampled({'fresh' if fresh else 'fixed'}, s={self.sample_size})"
        self.calls = 0

    # -- subsets ------------------------------------------------------------------------------------

    def subset(self, call: int | None = None) -> torch.Tensor:
        """The indices used by call number ``call`` (default: the next call)."""
        call = self.calls if call is None else call
        rng = np.random.default_rng([self.seed, call if self.fresh else 0])
        return torch.from_numpy(rng.permutation(self.n)[: self.sample_size].astype(np.int64))

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"calls"}:
            fail("state", "SubsampledMonitor.load_state_dict", "a dict with the single key 'calls'", state)
        self.calls = check_count(state["calls"], "calls", "SubsampledMonitor.load_state_dict", low=0)

    # -- measurement ----------------------------------------------------------------------------------

    def _moments(self, indices) -> GradientMoments:
        mom = GradientMoments(self.params)
        with leave_no_trace(self.model):
            if self.variance_source == "per_sample":
                refuse_batch_coupled(self.model, "SubsampledMonitor")
                for inputs, targets in self.chunks(indices):
                    grads, _ = per_sample_gradients(self.model, self.params, self.loss_fn, inputs, targets)
                    mom.add_per_sample(grads)
                return mom
            for group in torch.tensor_split(indices, self.micro_batches):
                total = None        # S_j, summed over the chunks of the group
                for inputs, targets in self.chunks(group):
                    grads, _ = group_gradient(self.model, self.params, self.loss_fn, inputs, targets)
                    scale = loss_scale(self.reduction, inputs.shape[0])
                    grads = [g * scale for g in grads] if scale != 1.0 else list(grads)
                    total = grads if total is None else torch._foreach_add(total, grads)
                mom.add(total, group.numel())
        return mom

    def measure(self) -> Measurement:
        """Estimate ‖∇f(θ)‖ on the next subset; ``cost`` = s."""
        indices = self.subset()
        self.calls += 1
        mom = self._moments(indices)
        s, n = self.sample_size, self.n
        raw_sq = mom.mean_sq_norm()
        raw = math.sqrt(raw_sq)
        fpc = 1.0 - s / n
        if fpc == 0.0:
            trace_c = 0.0
        else:
            trace_c = fpc * mom.trace_cov() / s if mom.groups >= 2 else math.inf
        if self.debias and math.isfinite(trace_c):
            sq = raw_sq - trace_c
        else:
            sq = raw_sq
        clamped = sq < 0.0
        norm = math.sqrt(max(sq, 0.0))
        radius = confidence_radius(trace_c, self.confidence, self.bound) if math.isfinite(trace_c) else math.inf
        return Measurement(
            norm=norm, cost=s, monitor=self.name, sq_norm=sq, raw_norm=raw, trace_cov=mom.trace_cov(),
            lower=max(0.0, raw - radius), upper=raw + radius, margin=radius, confidence=self.confidence,
            samples_used=s, clamped=clamped,
            extra={"call": self.calls - 1, "micro_batches": mom.groups, "trace_c": trace_c, "bound": self.bound})
