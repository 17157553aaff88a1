r"""The debiased monitor: ‖∇f(θ)‖ from the training batches themselves, at no extra SFO.

For a training batch B of b samples with mean gradient g_B,

.. math::

    \mathbb{E}\,\lVert g_B\rVert^2 = \lVert\nabla f(\theta)\rVert^2 + c_b\,\frac{\operatorname{tr}\Sigma}{b},
    \qquad
    u_t = \lVert g_{B_t}\rVert^2 - c_{b_t}\,\frac{\widehat{\operatorname{tr}\Sigma}_t}{b_t}
    \quad\text{is unbiased for } \lVert\nabla f(\theta_t)\rVert^2,

where tr Σ̂_t comes from the same batch split into k micro-batches (or from per-sample gradients,
k = b; see :mod:`sfotorch.monitors.moments`, where its unbiasedness is shown), and c_b = 1 for
i.i.d. batches (sampling with replacement; Σ the per-sample covariance) or c_b = 1 − b/n for
batches drawn without replacement from n samples within an epoch (pass ``population=n``;
Σ then has denominator n − 1). This is the estimator of AdaScale and of McCandlish et al.'s
gradient noise scale, which also reports B_simple = tr Σ / ‖∇f‖² (in ``extra``).

**Smoothing (stated once, here).** A single u_t is very noisy when tr Σ / b ≫ ‖∇f‖² (small b),
so :meth:`DebiasedMonitor.measure` returns a weighted mean of the u_t of recent steps:

- ``beta=None`` (default): the plain mean over the steps since the previous ``measure()`` —
  with a check every τ steps, a window of the last τ steps; reset at each measurement.
- ``beta`` in (0, 1): a bias-corrected exponential moving average, weight ∝ β^{age} (never reset).

The same weights average ‖g_B‖² (``raw_norm``²) and tr Σ̂ (``trace_cov``); the estimate is
ū = mean(‖g_B‖²) − mean(tr Σ̂) · mean(c_b/b), which equals mean(u_t) while b is constant (always
so in window mode: b changes only at checks).

**Sources of tr Σ̂** (``variance_source``):

- ``"per_sample_norms"`` (recommended where it applies): hooks inside the one ordinary backward
  give s_i = ‖∇f_i‖² for every sample (:mod:`sfotorch.monitors.per_sample_norms`; exact for
  Linear, Embedding, Conv1d/2d, LayerNorm, GroupNorm and BatchNorm in eval mode, also over
  sequences and with tied weights; refused for BatchNorm in train mode and unsupported layers).
  ``.grad`` is the plain backward's, bit for bit. Then
  u_t = (b/(b−1))‖ḡ‖² − Σ s_i/(b(b−1)) = (1/(b(b−1))) Σ_{i≠j} ∇f_iᵀ∇f_j: the diagonal terms
  cancel, so u_t is the U-statistic of the batch, much less noisy than ‖g_B‖² alone.
- ``"micro_batches"``: k forward/backward passes of b/k samples (any model; with BatchNorm in
  train mode each micro-batch is normalised by its own statistics, as gradient accumulation does).
- ``"per_sample"``: ``torch.func`` vmap over grad (no BatchNorm in train mode).

**Cheaper statistics.** The hooks add work to a step, micro-batches up to k× (their cost is
measured by ``benchmarks/bench_monitors.py``). With ``stats_every = r`` only the steps t with
t mod r = ``stats_phase`` compute tr Σ̂ (put the last one of a window just before the check:
``stats_phase = r − 1`` when r divides τ). The other steps:

- ``plain_step_norms=False``: are the user's own backward, with nothing added (zero overhead);
  ū is the mean of the paired u_t of the statistics steps.
- ``plain_step_norms=True`` (the default): also record ‖g_B‖² (one fused norm of the fresh
  ``.grad``); ū = mean(‖g_B‖²) − mean(tr Σ̂)·mean(c_b/b)
  over the window, which mixes unpaired terms.

tr Σ is a population quantity that drifts slowly, so ū stays unbiased up to that drift. Keep r
well below τ (a window without a statistics step returns NaN). The estimate refers to the average
of ‖∇f(θ_t)‖² over the window, not to the last θ_t: it lags by about half a window.
``sq_norm`` is the weighted mean ū; a negative ū is clamped to 0 and reported (``clamped``, and
:attr:`DebiasedMonitor.clamped_count`).

**What one check interval can tell.** The window's standard error is set by the batch noise,
se² ≈ 2 tr(Σ²)/(N_s b(b−1)) for N_s statistics steps, while the schedule puts ε_m² near SGD's noise
floor, where ‖∇f‖² ≪ tr Σ/b. At small b and short τ a window can hold fewer statistics steps than
se ≤ ε_m²/2 needs, and then no statistics rate lets the training batches of one interval reproduce
the exact decision; a longer τ holds proportionally more. ``benchmarks/bench_monitors.py`` measures
se/ε_m², the decisions against the exact monitor's and the wall time on an MLP and a small CNN
(its outputs are in ``docs/results/bench_monitors*.txt``). When the decisions must match at a short
τ and small b, the sequential monitor (:mod:`sfotorch.monitors.sequential`) is the way to decide.

**Uncertainty and the decision.** se is the standard error of ū: from the spread of the u_t of
the statistics steps and their effective number W²/Σw² when ū is their mean; when plain-step norms
are mixed in, se² = var(‖g_B‖²)/(N−1) + mean(c_b/b)² var(tr Σ̂)/(N_s−1) (their positive covariance
ignored: conservative). Neighbouring steps are treated as independent. ``lower``/``upper`` are
the two-sided interval ū ± t_{(1+confidence)/2}·se mapped through √· (Student t quantiles with
N_s − 1 degrees of freedom, N_s the effective number of statistics steps: se itself is estimated
from a handful of steps). ``decision`` sets what
``norm`` — the value the stage rule compares with ε_m — is:

- ``"estimate"``: √max(ū, 0), the point estimate (noise crosses ε_m early about half the time
  that the truth is within a standard error above it);
- ``"upper"``: the one-sided upper confidence bound √max(ū + t_{confidence}·se, 0), so that a
  stage advances only if ‖∇f‖ ≤ ε_m is supported at level ``confidence`` (P(advance | ‖∇f‖ ≥ ε_m)
  ≤ 1 − confidence if the u_t were i.i.d. normal); the point estimate is in ``extra["estimate"]``.
  The price is lateness: the bound reaches ε_m only once ū + t·se ≤ ε_m², and at small b, where
  se ≈ √(2 tr(Σ²)/(N_s b²)) can exceed ε_m² itself, that takes many check intervals (see the
  benchmark).

**No advance on no information.** Whatever ``decision`` is, a check is ``undecided`` — the stage
rule does not advance on it (:class:`~sfotorch.scheduler.StageScheduler` passes ε_m as
``measure(eps_m=ε_m)`` and honours :attr:`~sfotorch.monitors.base.Measurement.undecided`) — when

- ū < 0 (clamped): the noise term c_b tr Σ̂/b exceeded the observed ‖g_B‖², so the window says
  nothing about ‖∇f‖² beyond "small against the noise"; √max(ū, 0) = 0 would advance on that alone;
- se > ``max_relative_se`` · ε_m² (default ½): the window cannot place ‖∇f‖² within [0, ε_m²].
  With se ≤ ε_m²/2 and ū approximately normal, a point estimate below ε_m² arises from a true
  ‖∇f‖² = 2ε_m² with probability ≤ Φ(−2) ≈ 2.3%.

Without ε_m (``measure()`` called directly) only the first rule applies.

**Training loop.** Replace ``loss.backward()`` by ``monitor.backward(inputs, targets)``. With the
hooks, or on a step without statistics, it *is* ``loss_fn(model(inputs), targets).backward()``
(``.grad`` bit for bit). With micro-batches it runs the batch as k micro-batches (exactly what
gradient accumulation does) and adds to ``.grad`` the gradient one big backward would have added
(equal to float rounding), records the statistics and returns the batch loss. With BatchNorm in
train mode each micro-batch is normalised with its own statistics and the running buffers are
updated k times, as with gradient accumulation; ``.grad`` then differs from the big-batch one.
``cost`` = 0: no gradient is computed that training did not need.
:class:`~sfotorch.loop.TrainingLoop` (and so ``sfo train``) does this itself when given the
monitor as ``debiased``: a batch of one micro-batch runs through :meth:`backward`; a batch that
is split into micro-batches anyway (b > c, or several ranks) feeds :meth:`update` the tr Σ̂ of
those micro-batches, on every step, for free.
"""

from __future__ import annotations

import math
import torch
from scipy.stats import t as student_t
from torch import nn

from sfotheory.validation import ParameterTypeError, check_choice, check_in_range, check_positive, fail

from .base import GradientNormMonitor, Measurement, check_count, resolve_reduction, total_norm, trainable_parameters
from .moments import GradientMoments, group_gradient, loss_scale, per_sample_gradients, refuse_batch_coupled
from .per_sample_norms import PerSampleNorms

__all__ = ["DebiasedMonitor"]

VARIANCE_SOURCES = ("micro_batches", "per_sample", "per_sample_norms")
DECISIONS = ("estimate", "upper")
# w, w2: weights (and squared) of the steps with a recorded ‖g_B‖²; g2, g22: Σ w‖g_B‖², Σ w‖g_B‖⁴;
# cb: Σ w c_b/b; ws, ws2: weights of the statistics steps; tr, tr2: Σ w tr Σ̂, Σ w (tr Σ̂)²;
# u, u2: Σ w u_t, Σ w u_t²; samples, steps: every step seen since the last measurement.
_STATS = ("w", "w2", "g2", "g22", "cb", "ws", "ws2", "tr", "tr2", "u", "u2", "samples", "steps")
_DECAYED = ("w", "g2", "g22", "cb", "ws", "tr", "tr2", "u", "u2")
_SQUARE_DECAYED = ("w2", "ws2")


class DebiasedMonitor(GradientNormMonitor):
    """‖∇f‖² ≈ smoothed (‖g_B‖² − c_b tr Σ̂ / b) from the training batches; cost 0.

    Parameters
    ----------
    model, loss_fn, reduction : as for :class:`~sfotorch.monitors.exact.ExactMonitor`.
    micro_batches : default k for :meth:`backward` (k ≥ 2; a shorter batch of b < k samples is split into b;
        micro-batch source only). A batch of one sample gives no tr Σ̂: it counts as a step without statistics.
    variance_source : ``"micro_batches"``, ``"per_sample"`` (torch.func) or ``"per_sample_norms"``
        (hooks in the one backward; see the module doc for the layers it supports).
    beta : None for the window mean since the last measurement, or the EMA decay in (0, 1).
    population : n when batches are drawn without replacement from n samples (c_b = 1 − b/n);
        None for i.i.d. batches (c_b = 1).
    confidence : level of the interval in ``lower``/``upper`` and of the one-sided bound of
        ``decision="upper"``.
    stats_every, stats_phase : r and the phase: tr Σ̂ on the steps t with t mod r = phase only.
    plain_step_norms : record ‖g_B‖² on the steps without statistics too (see the module doc).
    decision : ``"estimate"`` or ``"upper"``: what ``norm`` reports (see the module doc).
    max_relative_se : a check with se > max_relative_se · ε_m² is undecided (None: no such rule).
    """

    uses_eps_m = True

    def __init__(self, model: nn.Module, loss_fn, *, micro_batches: int = 4, variance_source: str = "micro_batches",
                 beta: float | None = None, population: int | None = None, confidence: float = 0.95,
                 stats_every: int = 1, stats_phase: int = 0, plain_step_norms: bool = True,
                 decision: str = "estimate", max_relative_se: float | None = 0.5, reduction: str | None = None,
                 name: str = "debiased"):
        where = "DebiasedMonitor"
        self.params = trainable_parameters(model, where)
        self.model = model
        self.loss_fn = loss_fn
        self.reduction = resolve_reduction(loss_fn, reduction, where)
        self.micro_batches = check_count(micro_batches, "micro_batches", where, low=2,
                                         reason="tr Σ̂ needs at least two micro-batches")
        self.variance_source = check_choice(variance_source, VARIANCE_SOURCES, "variance_source", where)
        if beta is not None:
            beta = check_in_range(beta, 0.0, 1.0, "beta", where, low_strict=True)
        self.beta = beta
        self.population = None if population is None else check_count(population, "population", where, low=1)
        self.confidence = check_in_range(confidence, 0.0, 1.0, "confidence", where, low_strict=True)
        self.stats_every = check_count(stats_every, "stats_every", where, low=1,
                                       reason="statistics on one step in stats_every")
        self.stats_phase = check_count(stats_phase, "stats_phase", where, low=0, high=self.stats_every - 1,
                                       reason=f"a residue modulo stats_every = {self.stats_every}")
        if not isinstance(plain_step_norms, bool):
            fail("plain_step_norms", where, "True or False", plain_step_norms, cls=ParameterTypeError)
        self.plain_step_norms = plain_step_norms
        self.decision = check_choice(decision, DECISIONS, "decision", where)
        if max_relative_se is not None:
            max_relative_se = check_positive(max_relative_se, "max_relative_se", where,
                                             reason="the largest se of ū, in units of ε_m², that may decide")
        self.max_relative_se = max_relative_se
        self._norms = PerSampleNorms(model, self.params, where=where) if variance_source == "per_sample_norms" else None
        self.name = name
        self.steps_seen = 0
        self.clamped_count = 0
        self.nonfinite_count = 0
        self._nonfinite_since_measure = False
        self._stats = dict.fromkeys(_STATS, 0.0)

    # -- the training step ----------------------------------------------------------------------------

    def backward(self, inputs: torch.Tensor, targets: torch.Tensor, *, micro_batches: int | None = None) -> torch.Tensor:
        """Replace ``loss_fn(model(inputs), targets).backward()``; return that loss (detached).

        Adds the batch gradient to each trainable parameter's ``.grad`` (creating it if None)
        and records ‖g_B‖² and tr Σ̂ of this batch (:meth:`update`).
        """
        where = "DebiasedMonitor.backward"
        if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
            fail("inputs", where, "a tensor (and targets a tensor)", type(inputs).__name__)
        b = int(inputs.shape[0])
        if b != int(targets.shape[0]):
            fail("targets", where, f"as many rows as inputs (b = {b})", f"{int(targets.shape[0])} rows")
        # a batch of one sample (e.g. the short last batch of an epoch) has no tr Σ̂: on a statistics
        # step it counts as a step without statistics
        with_stats = self.wants_statistics() and b >= 2
        if with_stats and self.variance_source != "micro_batches" and micro_batches is not None:
            fail("micro_batches", where, f"None with variance_source={self.variance_source!r} (k = b)", micro_batches)
        if not with_stats and not self.plain_step_norms:
            with torch.enable_grad():               # exactly the user's backward, nothing recorded
                loss = self.loss_fn(self.model(inputs), targets)
                loss.backward()
            self.steps_seen += 1
            self._count(b)
            return loss.detach()
        if self._norms is not None and with_stats:
            return self._backward_with_norms(inputs, targets, b)
        if not with_stats and all(p.grad is None for p in self.params):
            # fast path: exactly the user's backward, plus one fused norm of the fresh .grad
            with torch.enable_grad():
                loss = self.loss_fn(self.model(inputs), targets)
                loss.backward()
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
            norm = total_norm(grads) / (1.0 if self.reduction == "mean" else b)
            self.update(norm * norm, None, b)
            return loss.detach()
        mom = GradientMoments(self.params, dtype=None)      # Σ S_j in the parameters' dtype
        with torch.enable_grad():
            if not with_stats:
                grads, loss_sum = group_gradient(self.model, self.params, self.loss_fn, inputs, targets)
                scale = loss_scale(self.reduction, b)
                mom.add(grads, b, scale)
                loss_sum = loss_sum * scale
            elif self.variance_source == "per_sample":
                refuse_batch_coupled(self.model, where)
                grads, loss_sum = per_sample_gradients(self.model, self.params, self.loss_fn, inputs, targets)
                mom.add_per_sample(grads)
            else:
                k = min(self.micro_batches, b) if micro_batches is None else micro_batches   # a short batch: k ≤ b
                k = check_count(k, "micro_batches", where, low=2, high=b,
                                reason=f"k non-empty micro-batches of the batch of b = {b} samples")
                loss_sum = None
                for x, y in zip(torch.tensor_split(inputs, k), torch.tensor_split(targets, k)):
                    grads, part = group_gradient(self.model, self.params, self.loss_fn, x, y)
                    scale = loss_scale(self.reduction, x.shape[0])
                    mom.add(grads, x.shape[0], scale)
                    loss_sum = part * scale if loss_sum is None else loss_sum + part * scale
        scale = 1.0 / b if self.reduction == "mean" else 1.0
        with torch.no_grad():
            missing = [i for i, p in enumerate(self.params) if p.grad is None]
            for i in missing:
                self.params[i].grad = torch.zeros_like(self.params[i])
            torch._foreach_add_([p.grad for p in self.params], mom.total, alpha=scale)
        self.update(mom.mean_sq_norm(), mom.trace_cov() if with_stats else None, b)
        return loss_sum * scale

    def _backward_with_norms(self, inputs, targets, b):
        r"""The plain backward with the per-sample-norm hooks: s_i, ‖ḡ‖², then
        tr Σ̂ = (Σ s_i − b‖ḡ‖²)/(b − 1) (:mod:`~sfotorch.monitors.per_sample_norms`)."""
        before = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        with torch.enable_grad(), self._norms.recording():
            loss = self.loss_fn(self.model(inputs), targets)
            loss.backward()
        with torch.no_grad():
            fresh = [torch.zeros_like(p) if p.grad is None else p.grad if old is None else p.grad - old
                     for p, old in zip(self.params, before)]
            c = 1.0 / b if self.reduction == "mean" else 1.0       # ∂loss/∂θ = c Σ_i ∇f_i
            mean_sq = (total_norm(fresh) / (c * b)) ** 2
            sq = self._norms.sq_norms
            total_sq = 0.0 if sq is None else float(sq.sum(dtype=torch.float64)) / (c * c)
        trace = max(total_sq - b * mean_sq, 0.0) / (b - 1)
        self.update(mean_sq, trace, b)
        return loss.detach()

    def _count(self, b: int) -> None:
        self._stats["samples"] += b
        self._stats["steps"] += 1

    def wants_statistics(self) -> bool:
        """Whether the coming step is one of the statistics steps (t mod stats_every = stats_phase)."""
        return self.steps_seen % self.stats_every == self.stats_phase

    def update(self, batch_sq_norm: float, trace_cov: float | None, batch_size: int) -> None:
        """Record one step's ‖g_B‖², tr Σ̂ (None on a step without statistics) and b.

        Public so that statistics gathered elsewhere (e.g. micro-batches of a split batch, reduced
        across ranks: :class:`~sfotorch.loop.TrainingLoop`) can be fed in; every call is one step
        (it advances the ``stats_every`` phase, as :meth:`backward` does).
        """
        b = check_count(batch_size, "batch_size", "DebiasedMonitor.update", low=1)
        self.steps_seen += 1
        c = 1.0 if self.population is None else max(0.0, 1.0 - b / self.population)
        values = [batch_sq_norm] + ([] if trace_cov is None else [trace_cov])
        if not all(math.isfinite(v) for v in values):
            self.nonfinite_count += 1
            self._nonfinite_since_measure = True
            return
        st = self._stats
        if self.beta is not None:
            for key in _DECAYED:
                st[key] *= self.beta
            for key in _SQUARE_DECAYED:
                st[key] *= self.beta ** 2
            w = 1.0 - self.beta
        else:
            w = 1.0
        st["w"] += w
        st["w2"] += w * w
        st["g2"] += w * batch_sq_norm
        st["g22"] += w * batch_sq_norm * batch_sq_norm
        st["cb"] += w * c / b
        if trace_cov is not None:
            u = batch_sq_norm - c * trace_cov / b
            st["ws"] += w
            st["ws2"] += w * w
            st["tr"] += w * trace_cov
            st["tr2"] += w * trace_cov * trace_cov
            st["u"] += w * u
            st["u2"] += w * u * u
        self._count(b)

    # -- the check ------------------------------------------------------------------------------------

    @staticmethod
    def _mean_var(total, total_sq, weight, weight_sq):
        """Weighted mean and the variance of that mean (inf with one effective observation)."""
        mean = total / weight
        n_eff = weight * weight / weight_sq
        var = max(total_sq / weight - mean * mean, 0.0)
        return mean, (var / (n_eff - 1.0) if n_eff > 1.0 + 1e-9 else math.inf), n_eff

    def measure(self, eps_m: float | None = None) -> Measurement:
        """The smoothed estimate; ``cost`` = 0. NaN if no finite step with statistics was recorded
        since the last measurement (window mode) or if a step since then had a non-finite gradient.
        ``eps_m``: ε_m, for the undecided rule (see the module doc)."""
        if eps_m is not None:
            eps_m = check_positive(eps_m, "eps_m", "DebiasedMonitor.measure")
        st = dict(self._stats)
        nonfinite = self._nonfinite_since_measure
        self._nonfinite_since_measure = False
        if self.beta is None:
            self._stats = dict.fromkeys(_STATS, 0.0)
        else:
            self._stats["samples"] = 0.0
            self._stats["steps"] = 0.0
        if st["ws"] == 0.0 or nonfinite:
            nan = math.nan
            return Measurement(norm=nan, cost=0, monitor=self.name, sq_norm=nan, raw_norm=nan,
                               samples_used=int(st["samples"]),
                               extra={"steps": int(st["steps"]), "nonfinite": nonfinite})
        trace = st["tr"] / st["ws"]
        g2 = st["g2"] / st["w"]
        cb = st["cb"] / st["w"]
        mean_u = g2 - trace * cb
        paired = math.isclose(st["w"], st["ws"], rel_tol=1e-12)     # every recorded step has its tr Σ̂
        if paired:
            _, var_mean, n_eff = self._mean_var(st["u"], st["u2"], st["ws"], st["ws2"])
        else:
            _, var_g2, _ = self._mean_var(st["g2"], st["g22"], st["w"], st["w2"])
            _, var_tr, n_eff = self._mean_var(st["tr"], st["tr2"], st["ws"], st["ws2"])
            var_mean = var_g2 + cb * cb * var_tr
        se = math.sqrt(var_mean)
        dof = max(n_eff - 1.0, 1.0)          # se is estimated from n_eff steps: Student t quantiles
        z = float(student_t.ppf(0.5 + self.confidence / 2.0, dof))
        lo_sq, hi_sq = mean_u - z * se, mean_u + z * se
        lower = math.sqrt(max(lo_sq, 0.0))
        upper = math.sqrt(max(hi_sq, 0.0)) if math.isfinite(hi_sq) else math.inf
        one_sided_sq = mean_u + float(student_t.ppf(self.confidence, dof)) * se
        one_sided = math.sqrt(max(one_sided_sq, 0.0)) if math.isfinite(one_sided_sq) else math.inf
        clamped = mean_u < 0.0
        self.clamped_count += int(clamped)
        imprecise = (eps_m is not None and self.max_relative_se is not None
                     and not se <= self.max_relative_se * eps_m * eps_m)
        estimate = math.sqrt(max(mean_u, 0.0))
        return Measurement(
            norm=one_sided if self.decision == "upper" else estimate, cost=0, monitor=self.name, sq_norm=mean_u,
            raw_norm=math.sqrt(g2), trace_cov=trace, lower=lower, upper=upper, margin=(upper - lower) / 2.0,
            confidence=self.confidence, samples_used=int(st["samples"]), clamped=clamped,
            undecided=clamped or imprecise,
            extra={"eps_m": eps_m, "steps": int(st["steps"]), "stats_steps": n_eff if paired else st["ws"] ** 2 / st["ws2"],
                   "effective_steps": n_eff, "sq_norm_se": se, "estimate": estimate, "one_sided_upper": one_sided,
                   "decision": self.decision, "paired": paired,
                   "noise_scale": trace / mean_u if mean_u > 0 else math.inf})

    # -- resume ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"stats": dict(self._stats), "steps_seen": self.steps_seen, "clamped_count": self.clamped_count,
                "nonfinite_count": self.nonfinite_count, "nonfinite_since_measure": self._nonfinite_since_measure}

    def load_state_dict(self, state: dict) -> None:
        where = "DebiasedMonitor.load_state_dict"
        keys = {"stats", "steps_seen", "clamped_count", "nonfinite_count", "nonfinite_since_measure"}
        if not isinstance(state, dict) or set(state) != keys or set(state["stats"]) != set(_STATS):
            fail("state", where, f"a dict with the keys {sorted(keys)} as written by state_dict()", state)
        self._stats = {k: float(v) for k, v in state["stats"].items()}
        self.steps_seen = int(state["steps_seen"])
        self.clamped_count = int(state["clamped_count"])
        self.nonfinite_count = int(state["nonfinite_count"])
        self._nonfinite_since_measure = bool(state["nonfinite_since_measure"])
