r"""The sequential monitor: is ‖∇f(θ)‖ ≤ ε_m? — measured on as few samples as the answer needs.

At a check, a subset of the n training samples is drawn without replacement and grown by doubling,
s_0, 2s_0, 4s_0, … (then n), each look *extending* the same subset: the gradients already summed
are kept, no sample is evaluated twice. At each look the subset gives an unbiased estimate of
‖∇f‖² and its standard error; the check stops as soon as a one-sided confidence bound puts
‖∇f‖ on one side of ε_m, or when the subset is the whole set (then it is ‖∇f‖ itself).

**The estimate** (notation of :mod:`sfotorch.monitors.subsampled`). The samples of the subset S
(|S| = s) are dealt in order into k blocks B_1, …, B_k (sizes m_j, Σ m_j = s; the subset is a
random permutation, so this is a random partition), with block sums A_j = Σ_{i∈B_j} ∇f_i and
their Gram matrix G_{jl} = A_jᵀA_l. Then

.. math::

    g_S = \frac{1}{s}\sum_j A_j, \quad \lVert g_S\rVert^2 = \frac{1}{s^2}\sum_{j,l} G_{jl}, \quad
    \widehat{\operatorname{tr}\Sigma} = \frac{1}{k-1}\Bigl(\sum_j \frac{G_{jj}}{m_j} - s\lVert g_S\rVert^2\Bigr),
    \qquad
    U = \lVert g_S\rVert^2 - \Bigl(1 - \frac{s}{n}\Bigr)\frac{\widehat{\operatorname{tr}\Sigma}}{s}.

*Finite-population correction.* With S² = (1/(n−1)) Σ_i (∇f_i − ∇f)(∇f_i − ∇f)ᵀ, a subset drawn
without replacement has E g_S = ∇f and Cov g_S = (1 − s/n) S²/s (the variance of a sample mean in
survey sampling), so E‖g_S‖² = ‖∇f‖² + (1 − s/n) tr S²/s. tr Σ̂ is unbiased for tr S²
(:mod:`sfotorch.monitors.moments`: the block-mean spread of a random partition of a random subset),
hence **E U = ‖∇f‖²** exactly, for every s. At s = n the correction vanishes and U = ‖∇f‖²
itself, with no error.

**The decision is taken on the norm scale.** The check compares ‖∇f‖ with ε_m through
T = √max(U, 0). On the squared scale the leading variance term of U, 4 ∇fᵀΣ∇f/s, is proportional
to ‖∇f‖², so an estimate that falls low comes with a standard error that falls with it and the lower
tail of (U − ‖∇f‖²)/se is heavy: "below" would be decided too often when ‖∇f‖ is just above ε_m.
By the delta method T ≈ ‖∇f‖ + uᵀ(g_S − ∇f) with u = ∇f/‖∇f‖, whose variance (1 − s/n) uᵀS²u/s
does not depend on ‖∇f‖ (the square root stabilises the variance), so the pivot (T − ‖∇f‖)/se is
close to symmetric where the decision is made.

**Its standard error: the delete-a-block jackknife.** T_{(−j)} is T recomputed without block j
(U from G with its row, column and m_j removed: k − 1 blocks, s − m_j samples) as the signed root
sgn(U_{(−j)})·√|U_{(−j)}| — a leave-one-out U below 0 keeps its distance from 0 instead of being
clamped onto it, so that when U is small against its noise the leave-one-out values spread and se
stays large (clamped, they could all be 0 and give se = 0) — and

.. math::

    \widehat{\operatorname{se}}^2 = \Bigl(1 - \frac{s}{n}\Bigr)\frac{k-1}{k}\sum_j
        \bigl(T_{(-j)} - \bar T_{(\cdot)}\bigr)^2 .

Why this one: U is a quadratic function of the samples whose variance has two parts,
4 ∇fᵀΣ∇f/s (dominant when ‖∇f‖² ≫ tr Σ/s) and ≈ 2 tr(Σ²)/s² (dominant near ∇f = 0, where the
stage rule puts ε_m at small b). A delta method on the projections ∇f_iᵀg_S sees only the first;
the jackknife estimates both, from the same block sums the estimate uses (no per-sample gradients
are kept), and by the Efron–Stein inequality it is biased *upward* for any symmetric statistic of
independent units (here the blocks): it errs on the safe side. The factor 1 − s/n is the
finite-population correction of a jackknife under sampling without replacement (Rao & Wu 1985).
It has k − 1 degrees of freedom: the bounds use Student t quantiles.

**The decision and its error control.** Let s_0 < s_1 < … < s_{J−1} < n be the J looks before the
whole set (s_ℓ = 2^ℓ s_0) and α = 1 − ``confidence``. At look ℓ, with q = t_{k−1, 1−α/J}:

- ``"below"`` if U > 0 and T + q·se < ε_m  (the one-sided upper bound on ‖∇f‖ is below ε_m; an
  estimate U ≤ 0, clamped to T = 0, says only that ‖∇f‖² is small against the subset's noise, and
  a check never decides "below" on it);
- ``"above"`` if T − q·se > ε_m  (the one-sided lower bound is above);
- else the subset is doubled; at s = n the decision is ``"exact"``.

A wrong decision — "below" while ‖∇f‖ > ε_m, or "above" while ‖∇f‖ < ε_m — needs the bound on the
side of the truth to fail at one of the J looks; only one tail can do that (for ‖∇f‖ > ε_m, the
event T + q·se < ε_m implies T − ‖∇f‖ < −q·se), each look's tail has probability ≤ α/J, and by
Bonferroni's union bound P(wrong decision) ≤ α — whatever the number of looks the check actually
takes, and although the looks are dependent (they share samples).

**An indifference zone (opt-in, ``tolerance`` = ρ > 0).** Close to ε_m the test above must grow the
subset until q·se < |‖∇f‖ − ε_m|, up to the whole set however small the difference. With ρ > 0 a
look also stops once its half-width q·se ≤ ρ·ε_m (and U > 0), and then decides by the point estimate: ``"below"`` if T ≤ ε_m,
else ``"above"`` (U > 0 as for "below"; ``extra["decision"]`` says ``"below (zone)"`` / ``"above (zone)"``). The guarantee
becomes the classical indifference-zone one: P(below) ≤ α when ‖∇f‖ ≥ (1 + ρ)ε_m and P(above) ≤ α
when ‖∇f‖ ≤ (1 − ρ)ε_m — for ‖∇f‖ ≥ (1 + ρ)ε_m, "below" at a zone stop means
T ≤ ε_m ≤ ‖∇f‖ − ρε_m ≤ ‖∇f‖ − q·se, the same tail event as before — while inside the zone
either decision may be taken. Since se ∝ √((1 − s/n)/s), the zone caps the subset a check needs at
roughly n/(1 + n(ρε_m/(qσ_u))²), σ_u² the per-sample variance along ∇f (up to a doubling's overshoot). The per-look levels are
approximate (the normal limit of T and a t pivot with k − 1 degrees of freedom); the jackknife's
upward bias and the union bound make the test conservative (``tests/torch/
test_sequential_monitor.py`` counts wrong decisions over many seeded checks).

The measurement's ``norm`` is T of the last look, so the stage rule's test ``norm ≤ ε_m`` takes the
monitor's decision. ``lower``/``upper`` are T ∓ q·se of that look (the lower one at least 0),
``confidence`` is 1 − α (for the decision), ``extra`` holds the decision, the looks and ε_m.

**Subsets.** The subset of call c is the prefix of ``numpy.random.default_rng([seed, c]).permutation(n)``:
randomness is a function of (seed, check index), so a resumed run (``state_dict`` holds the call
count) measures on the same subsets.

**Cost** = the samples touched, s of the last look (each evaluated once); at most n, an exact pass,
when ‖∇f‖ is within noise of ε_m all the way. Memory: k block sums of the trainable parameters in
float64 (k × 8 bytes per parameter). The gradients are computed in eval mode on the un-augmented
dataset, leaving no trace, as the exact monitor does (:func:`~sfotorch.monitors.base.leave_no_trace`);
one forward/backward per block and look (chunks of at most ``batch_size``). On one process (under
DDP every rank would compute the same subsets in full).

The scheduler passes ε_m (``uses_eps_m``); called directly, :meth:`SequentialMonitor.measure`
needs it as ``eps_m``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import t as student_t
from torch import nn

from sfotheory.validation import check_in_range, check_positive, fail

from .base import DatasetMonitor, Measurement, check_count, leave_no_trace
from .moments import group_gradient, loss_scale

__all__ = ["SequentialMonitor", "block_estimate", "look_decision"]


def look_decision(u: float, se: float, q: float, eps: float, *, whole: bool, tolerance: float = 0.0) -> str | None:
    """The decision of one look (module doc), or None to extend the subset.

    ``u``, ``se``: U and the standard error of T = √max(U, 0) at this look; ``q``: the per-look quantile;
    ``eps``: ε_m; ``whole``: the subset is the whole set; ``tolerance``: ρ of the indifference zone.
    Returns ``"nonfinite"``, ``"exact"``, ``"above"``, ``"below"``, ``"below (zone)"``, ``"above (zone)"``.

    >>> look_decision(0.25, 0.05, 2.0, 0.3, whole=False)     # T = 0.5, lower bound 0.4 > 0.3
    'above'
    >>> look_decision(-0.01, 0.01, 2.0, 0.3, whole=False)    # clamped: never "below", extend
    >>> look_decision(0.09, 0.02, 2.0, 0.3, whole=False, tolerance=0.2)   # q·se = 0.04 ≤ 0.06: T = 0.3 ≤ ε_m
    'below (zone)'
    """
    if not (math.isfinite(u) and math.isfinite(se)):
        return "nonfinite"
    if whole:
        return "exact"
    norm = math.sqrt(max(u, 0.0))
    if norm - q * se > eps:
        return "above"
    if u <= 0.0:                    # clamped: no information on the side of ε_m, never "below"
        return None
    if norm + q * se < eps:
        return "below"
    if tolerance > 0.0 and q * se <= tolerance * eps:     # in the zone: the point estimate
        return "below (zone)" if norm <= eps else "above (zone)"
    return None


def block_estimate(gram, sizes, n: int) -> tuple[float, float, float]:
    r"""U, the jackknife standard error of T (from the signed roots sgn(U₍₋ⱼ₎)√|U₍₋ⱼ₎|) and tr Σ̂, from the
    Gram matrix of k block sums (module doc).

    ``gram``: the (k, k) matrix G_{jl} = A_jᵀA_l; ``sizes``: the m_j; ``n``: the population size.
    Needs k ≥ 3 non-empty blocks (the jackknife's leave-one-out tr Σ̂ needs two blocks).

    Four samples ∇f_i = 2, 0, 1, 3 (d = 1) in blocks of one, the whole population (s = n = 4):
    U = ‖ḡ‖² = 1.5² and se = 0 (the finite-population factor 1 − s/n is 0).

    >>> a = np.array([2.0, 0.0, 1.0, 3.0])
    >>> block_estimate(np.outer(a, a), [1, 1, 1, 1], 4)
    (2.25, 0.0, 1.6666666666666667)
    >>> u, se, tr = block_estimate(np.outer(a, a), [1, 1, 1, 1], 40)   # the same 4 of n = 40
    >>> round(u, 4), round(tr, 4)         # 2.25 − (1 − 4/40)·(5/3)/4
    (1.875, 1.6667)
    """
    gram = np.asarray(gram, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    keep = sizes > 0
    gram, sizes = gram[np.ix_(keep, keep)], sizes[keep]
    k = sizes.size
    s = float(sizes.sum())
    total = float(gram.sum())                      # ‖Σ A_j‖²
    diag = np.diag(gram) / sizes                   # G_jj / m_j

    def estimate(total, diag_sum, s, k):
        mean_sq = total / (s * s)
        trace = max(diag_sum - s * mean_sq, 0.0) / (k - 1)
        return mean_sq - (1.0 - s / n) * trace / s, trace

    u, trace = estimate(total, float(diag.sum()), s, k)
    if s >= n:
        return u, 0.0, trace
    rows = gram.sum(axis=1)
    left_out = np.array([estimate(total - 2.0 * rows[j] + gram[j, j], float(diag.sum() - diag[j]), s - sizes[j],
                                  k - 1)[0] for j in range(k)])
    norms = np.sign(left_out) * np.sqrt(np.abs(left_out))       # signed roots: no collapse onto 0
    var = (1.0 - s / n) * (k - 1) / k * float(((norms - norms.mean()) ** 2).sum())
    return u, math.sqrt(var), trace


class SequentialMonitor(DatasetMonitor):
    """Decides ‖∇f(θ)‖ ≤ ε_m on a subset grown by doubling until the decision is sound (module doc).

    Parameters (beyond those of :class:`~sfotorch.monitors.exact.ExactMonitor`)
    ---------------------------------------------------------------------------
    initial_size : s_0, the first look (at least ``blocks``; capped at n).
    blocks : k ≥ 3, the blocks of the subset the standard error is estimated from (k − 1 degrees of
        freedom; memory k × the parameters in float64).
    confidence : 1 − α, the probability of a right decision (α split over the looks, module doc).
    tolerance : ρ in [0, 1), the relative half-width of the indifference zone around ε_m (module doc);
        0 (the default): no zone, a check may grow to the exact norm.
    seed : subsets are a function of (seed, call index).
    """

    uses_eps_m = True

    def __init__(self, model: nn.Module, dataset, loss_fn, *, initial_size: int = 256, blocks: int = 16,
                 confidence: float = 0.95, tolerance: float = 0.0, seed: int = 0, batch_size: int = 256, reduction: str | None = None,
                 device=None, transform=None, num_workers: int = 0, name: str = "sequential"):
        where = "SequentialMonitor"
        super().__init__(model, dataset, loss_fn, where=where, batch_size=batch_size, reduction=reduction,
                         device=device, transform=transform, num_workers=num_workers)
        self.blocks = check_count(blocks, "blocks", where, low=3,
                                  reason="the jackknife leaves one block out of at least two others")
        initial_size = check_count(initial_size, "initial_size", where, low=1)
        self.initial_size = min(initial_size, self.n)
        if self.initial_size < self.n and self.initial_size < self.blocks:
            fail("initial_size", where, f">= blocks = {self.blocks} (every block holds a sample at the first look)",
                 initial_size)
        self.confidence = check_in_range(confidence, 0.0, 1.0, "confidence", where, low_strict=True)
        self.tolerance = check_in_range(tolerance, 0.0, 1.0, "tolerance", where,
                                        reason="the relative half-width ρ of the indifference zone around ε_m")
        self.seed = check_count(seed, "seed", where, low=0)
        self.name = name
        self.calls = 0

    # -- looks and subsets ----------------------------------------------------------------------------

    def look_sizes(self) -> list[int]:
        """s_0, 2s_0, …, then n: the subset sizes of the looks (the last one is the whole set)."""
        sizes, s = [], self.initial_size
        while s < self.n:
            sizes.append(s)
            s *= 2
        return sizes + [self.n]

    def quantile(self) -> float:
        """q = t_{k−1, 1−α/J}: the one-sided quantile of each look before the whole set."""
        looks = len(self.look_sizes()) - 1
        return float(student_t.ppf(1.0 - (1.0 - self.confidence) / max(looks, 1), self.blocks - 1))

    def order(self, call: int | None = None) -> torch.Tensor:
        """The order in which call number ``call`` (default: the next) draws the samples."""
        call = self.calls if call is None else call
        return torch.from_numpy(np.random.default_rng([self.seed, call]).permutation(self.n).astype(np.int64))

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"calls"}:
            fail("state", "SequentialMonitor.load_state_dict", "a dict with the single key 'calls'", state)
        self.calls = check_count(state["calls"], "calls", "SequentialMonitor.load_state_dict", low=0)

    # -- measurement ----------------------------------------------------------------------------------

    def _add(self, sums, piece, j: int) -> None:
        """A_j += Σ_{i ∈ piece} ∇f_i, in chunks of at most batch_size."""
        for inputs, targets in self.chunks(piece):
            grads, _ = group_gradient(self.model, self.params, self.loss_fn, inputs, targets)
            scale = loss_scale(self.reduction, inputs.shape[0])
            for acc, g in zip(sums, grads):
                acc[j].add_(g.detach().to(acc.dtype), alpha=scale)

    def measure(self, eps_m: float | None = None) -> Measurement:
        """Decide ‖∇f‖ ≤ ε_m (``eps_m``) on the next subset; ``cost`` = the samples touched."""
        where = "SequentialMonitor.measure"
        if eps_m is None:
            fail("eps_m", where, "given: ε_m, the norm the check decides against (StageScheduler passes it)",
                 eps_m)
        eps = check_positive(eps_m, "eps_m", where)
        order = self.order()
        call = self.calls
        self.calls += 1
        k = self.blocks if self.initial_size < self.n else 1
        q = self.quantile()
        sums = [torch.zeros((k, *p.shape), dtype=torch.float64, device=p.device) for p in self.params]
        sizes = np.zeros(k, dtype=np.int64)
        looks, start = [], 0
        with leave_no_trace(self.model):
            for s in self.look_sizes():
                for j, piece in enumerate(torch.tensor_split(order[start:s], k)):
                    if piece.numel():
                        self._add(sums, piece, j)
                        sizes[j] += piece.numel()
                start = s
                gram = sum(a.reshape(k, -1) @ a.reshape(k, -1).T for a in sums).cpu().numpy()
                if k >= 3:
                    u, se, trace = block_estimate(gram, sizes, self.n)
                else:                           # s_0 = n: one block, the exact norm
                    u, se, trace = float(gram.sum()) / (s * s), 0.0, math.nan
                norm = math.sqrt(max(u, 0.0))
                looks.append({"samples": s, "sq_norm": u, "norm_se": se})
                decision = look_decision(u, se, q, eps, whole=s == self.n, tolerance=self.tolerance)
                if decision is not None:
                    break
        raw = math.sqrt(float(gram.sum())) / s
        if decision == "nonfinite":
            nan = math.nan
            return Measurement(norm=nan, cost=s, monitor=self.name, sq_norm=nan, raw_norm=nan, samples_used=s,
                               extra={"call": call, "decision": decision, "looks": looks, "eps_m": eps})
        radius = q * se
        return Measurement(
            norm=norm, cost=s, monitor=self.name, sq_norm=u, raw_norm=raw, trace_cov=trace,
            lower=max(norm - radius, 0.0), upper=norm + radius, margin=radius,
            confidence=self.confidence if s < self.n else 1.0, samples_used=s, clamped=u < 0.0,
            extra={"call": call, "decision": decision, "looks": looks, "eps_m": eps, "norm_se": se,
                   "quantile": q, "blocks": k, "tolerance": self.tolerance})
