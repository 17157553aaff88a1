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

**Cheaper statistics.** Splitting a small batch into k micro-batches costs up to k× a plain
backward when the step is dispatch-bound (see ``benchmarks/bench_monitors.py``). With
``stats_every = r`` only one step in r is split (or run per-sample); the other steps run one plain
batch gradient and contribute their free ‖g_B‖² to mean(‖g_B‖²), while mean(tr Σ̂) comes from the
split steps. tr Σ is a population quantity that drifts slowly, so ū stays unbiased up to that
drift; its noise grows as fewer steps estimate tr Σ̂. Keep r well below τ (a window without a
split step returns NaN). The estimate refers to
the average of ‖∇f(θ_t)‖² over the window, not to the last θ_t: it lags by about half a window.
``sq_norm`` is the weighted mean ū; ``norm`` = √max(ū, 0); a negative ū is clamped to 0 and
reported (``clamped``, and :attr:`DebiasedMonitor.clamped_count`). ``lower``/``upper`` are a
normal-approximation interval ū ± z·se (se from the spread of the u_t of the split steps and
their effective number W²/Σw²; neighbouring steps are treated as independent), mapped through √·.

**Training loop.** Replace ``loss.backward()`` by ``monitor.backward(inputs, targets)``: it runs
the batch as k micro-batches (exactly what gradient accumulation does), adds to ``.grad`` the
gradient one big ``loss_fn(model(inputs), targets).backward()`` would have added (the mean
gradient for ``reduction="mean"``, the sum for ``"sum"``; accumulated in float64, equal to the
big backward to float rounding), records the statistics and returns the batch loss. With
BatchNorm in train mode each micro-batch is normalised with its own statistics and the running
buffers are updated k times, as with gradient accumulation; ``.grad`` then differs from the
big-batch one. ``cost`` = 0: no gradient is computed that training did not need.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from torch import nn

from sfotheory.validation import check_choice, check_in_range, fail

from .base import GradientNormMonitor, Measurement, check_count, resolve_reduction, trainable_parameters
from .moments import GradientMoments, group_gradient, loss_scale, per_sample_gradients, refuse_batch_coupled

__all__ = ["DebiasedMonitor"]

VARIANCE_SOURCES = ("micro_batches", "per_sample")
_STATS = ("w", "w2", "g2", "cb", "ws", "ws2", "tr", "u", "u2", "samples", "steps")
_DECAYED = ("w", "g2", "cb", "ws", "tr", "u", "u2")


class DebiasedMonitor(GradientNormMonitor):
    """‖∇f‖² ≈ smoothed (‖g_B‖² − c_b tr Σ̂ / b) from the training batches; cost 0.

    Parameters
    ----------
    model, loss_fn, reduction : as for :class:`~sfotorch.monitors.exact.ExactMonitor`.
    micro_batches : default k for :meth:`backward` (2 ≤ k ≤ b).
    variance_source : ``"micro_batches"`` or ``"per_sample"`` (torch.func vmap over grad; no
        BatchNorm in train mode).
    beta : None for the window mean since the last measurement, or the EMA decay in (0, 1).
    population : n when batches are drawn without replacement from n samples (c_b = 1 − b/n);
        None for i.i.d. batches (c_b = 1).
    confidence : level of the interval in ``lower``/``upper``.
    stats_every : r; tr Σ̂ is estimated (micro-batches or per-sample) on one step in r only; the other
        steps run one plain batch gradient and contribute ‖g_B‖² alone (see the module doc).
    """

    def __init__(self, model: nn.Module, loss_fn, *, micro_batches: int = 4, variance_source: str = "micro_batches",
                 beta: float | None = None, population: int | None = None, confidence: float = 0.95,
                 stats_every: int = 1, reduction: str | None = None, name: str = "debiased"):
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
                                       reason="micro-batch statistics on one step in stats_every")
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
        with_stats = self.steps_seen % self.stats_every == 0
        self.steps_seen += 1
        if not with_stats and all(p.grad is None for p in self.params):
            # fast path: exactly the user's backward, plus one fused norm of the fresh .grad
            with torch.enable_grad():
                loss = self.loss_fn(self.model(inputs), targets)
                loss.backward()
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
            norm = float(torch.nn.utils.get_total_norm(grads)) / (1.0 if self.reduction == "mean" else b)
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
                if micro_batches is not None:
                    fail("micro_batches", where, "None with variance_source='per_sample' (k = b)", micro_batches)
                if b < 2:
                    fail("inputs", where, "a batch of at least 2 samples (tr Σ̂ needs two)", f"a batch of {b}")
                refuse_batch_coupled(self.model, where)
                grads, loss_sum = per_sample_gradients(self.model, self.params, self.loss_fn, inputs, targets)
                mom.add_per_sample(grads)
            else:
                k = self.micro_batches if micro_batches is None else micro_batches
                if b < 2:
                    fail("inputs", where, "a batch of at least 2 samples (tr Σ̂ needs two micro-batches)",
                         f"a batch of {b}")
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

    def update(self, batch_sq_norm: float, trace_cov: float | None, batch_size: int) -> None:
        """Record one step's ‖g_B‖², tr Σ̂ (None on a step without statistics) and b.

        Public so that statistics gathered elsewhere (e.g. reduced across ranks) can be fed in.
        """
        b = check_count(batch_size, "batch_size", "DebiasedMonitor.update", low=1)
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
            st["w2"] *= self.beta ** 2
            st["ws2"] *= self.beta ** 2
            w = 1.0 - self.beta
        else:
            w = 1.0
        st["w"] += w
        st["w2"] += w * w
        st["g2"] += w * batch_sq_norm
        st["cb"] += w * c / b
        if trace_cov is not None:
            u = batch_sq_norm - c * trace_cov / b
            st["ws"] += w
            st["ws2"] += w * w
            st["tr"] += w * trace_cov
            st["u"] += w * u
            st["u2"] += w * u * u
        st["samples"] += b
        st["steps"] += 1

    # -- the check ------------------------------------------------------------------------------------

    def measure(self) -> Measurement:
        """The smoothed estimate; ``cost`` = 0. NaN if no finite step was recorded since the last
        measurement (window mode) or if a step since then had a non-finite gradient."""
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
        mean_u = g2 - trace * st["cb"] / st["w"]
        # standard error from the spread of the u_t of the steps with statistics
        n_eff = st["ws"] ** 2 / st["ws2"]
        var_u = max(st["u2"] / st["ws"] - (st["u"] / st["ws"]) ** 2, 0.0)
        se = math.sqrt(var_u / (n_eff - 1.0)) if n_eff > 1.0 else math.inf
        z = NormalDist().inv_cdf(0.5 + self.confidence / 2.0)
        lo_sq, hi_sq = mean_u - z * se, mean_u + z * se
        lower = math.sqrt(max(lo_sq, 0.0))
        upper = math.sqrt(max(hi_sq, 0.0)) if math.isfinite(hi_sq) else math.inf
        clamped = mean_u < 0.0
        self.clamped_count += int(clamped)
        return Measurement(
            norm=math.sqrt(max(mean_u, 0.0)), cost=0, monitor=self.name, sq_norm=mean_u, raw_norm=math.sqrt(g2),
            trace_cov=trace, lower=lower, upper=upper, margin=(upper - lower) / 2.0, confidence=self.confidence,
            samples_used=int(st["samples"]), clamped=clamped,
            extra={"steps": int(st["steps"]), "effective_steps": n_eff, "sq_norm_se": se,
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
