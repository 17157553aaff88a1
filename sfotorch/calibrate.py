r"""ε₀ from the theory: the constants L and σ² of Proposition 1 estimated on a real model at θ₀.

docs/theory.md, "Stage thresholds": the stage rule makes b_m the critical batch size
(Proposition 2, b* = 2C₂/ε²) of the stage's threshold ε_m, so the stage-0 pair (b₀, ε₀) fixes

.. math::

    \varepsilon_0 = \sqrt{\frac{2C_2}{b_0}}, \qquad C_2 = \frac{L\sigma^2\eta_0}{2 - L\eta_0}
    \quad (L\eta_0 < 2),

the scale ε_ref of the "Stage thresholds" section. Both formulas are :mod:`sfotheory`'s
(``C2_EXPR`` through :func:`sfotheory.complexity.theory_constants`, and
``derive_stage_thresholds().eps_of_batch``); this module only measures L and σ².

Legend: f(θ) = (1/n) Σᵢ fᵢ(θ) the training loss; θ₀ the parameters now (before training);
∇fᵢ the gradient of sample i's loss; ḡ = (1/s) Σ_{i≤s} ∇fᵢ the mean over the first s samples;
H = ∇²f the Hessian; η₀, b₀ the stage-0 learning rate and batch size.

**σ²** (assumption (A2), the variance of one stochastic gradient) is estimated by the trace of
the per-sample gradient covariance over the first s training samples, with the unbiased
s/(s − 1) correction:

.. math::

    \widehat{\sigma^2} = \operatorname{tr}\hat\Sigma
      = \frac{s}{s-1}\Bigl(\frac{1}{s}\sum_{i\le s}\lVert\nabla f_i(\theta_0)\rVert^2
        - \lVert\bar g\rVert^2\Bigr).

The squared norms ‖∇fᵢ‖² come from :class:`~sfotorch.monitors.per_sample_norms.PerSampleNorms`
(hooks inside one ordinary backward per chunk): no (s × d) matrix of per-sample gradients is
ever held, so the cost and memory are those of one gradient pass, and the layers it covers
(Linear, Conv, LayerNorm/GroupNorm, BatchNorm in eval mode) are those of the image models of
:mod:`sfotorch.models`. A model with a layer it refuses (an embedding, a custom layer) falls back to
``torch.func`` (``vmap(grad)``, :func:`~sfotorch.monitors.moments.per_sample_gradients`), which
holds chunk × d numbers per chunk. ``variance_source`` in the result says which one ran.

**L** (assumption (A1)) is estimated by the largest Hessian eigenvalue magnitude at θ₀, on a
fixed batch (the first s_H ≤ s samples), by power iteration on Hessian-vector products:

.. math::

    v_0 \sim \mathcal N(0, I)/\lVert\cdot\rVert, \qquad
    \hat L_k = \lVert H v_{k-1}\rVert, \qquad v_k = H v_{k-1} / \hat L_k,

with Hv = ∇(∇f · v) by double backward (:func:`torch.autograd.grad` with ``create_graph``), which
runs on the model object as it is (hooks, autocast wrappers) where ``torch.func.jvp`` would need a
functional copy and forward-mode formulas for every op. For symmetric H the L̂_k never decrease
and never exceed max|λ(H)|; the iteration stops when L̂_k changed by at most ``tol`` relative, or
after ``iterations`` products. v₀ is drawn from a seeded :class:`torch.Generator`.

**What the estimates are, and are not.** Both are *local*, at θ₀, on the data in eval mode
(un-augmented; BatchNorm with its running statistics, which at θ₀ are their initial values): the
theory's L bounds the curvature everywhere and σ² the noise at every θ, and curvature usually
grows early in training. L̂ is a lower bound on the batch Hessian's spectral norm (power
iteration), and the batch's top eigenvalue is not the full set's. So ε₀ computed here is the
critical-batch scale *at the start*, a measured starting point rather than a guarantee.

Everything runs inside :func:`~sfotorch.monitors.base.leave_no_trace`: module modes, buffers,
``.grad``, parameters and the global RNG are as before. Lη₀ ≥ 2 leaves C₂ undefined:
:func:`estimate_constants` reports it (``stable`` False, C₂ and ε₀ NaN), :func:`calibrate_eps0`
refuses it.

>>> torch.manual_seed(0) is not None
True
>>> x = torch.randn(64, 3) * torch.tensor([2.0, 1.0, 0.5]); y = torch.randn(64)
>>> model = torch.nn.Linear(3, 1, bias=False)
>>> def half_mse(out, target): return 0.5 * (out.squeeze(1) - target).pow(2).mean()
>>> cal = estimate_constants(model, (x, y), half_mse, eta=0.1, b0=8, reduction="mean", samples=64)
>>> abs(cal.L - torch.linalg.eigvalsh(x.T @ x / 64)[-1].item()) < 1e-3 * cal.L, cal.stable
(True, True)
>>> math.isclose(cal.eps0, math.sqrt(2 * cal.C2 / 8))
True
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sfotheory.validation import fail

from .monitors.base import (as_dataset, check_count, iterate_batches, leave_no_trace, resolve_reduction,
                            total_norm, trainable_parameters)
from .monitors.moments import loss_scale, per_sample_gradients
from .monitors.per_sample_norms import PerSampleNorms, unsupported_modules

__all__ = ["Calibration", "calibrate_eps0", "estimate_constants", "gradient_noise_trace",
           "largest_hessian_eigenvalue"]


@dataclass(frozen=True)
class Calibration:
    """The measured constants of Proposition 1 at θ₀ and the ε₀ they give.

    ``L`` max|λ(∇²f)| on the first ``hessian_samples`` samples (``iterations`` Hessian-vector
    products, ``converged`` whether the relative change fell to the tolerance); ``sigma2`` tr Σ̂ on
    the first ``n_samples`` (``variance_source``: ``"per_sample_norms"`` or ``"vmap"``); ``eta`` and
    ``b0`` η₀, b₀; ``stable`` whether Lη₀ < 2; ``C2`` = Lσ²η₀/(2 − Lη₀) and ``eps0`` = √(2C₂/b₀)
    (NaN when not stable); ``seconds`` the wall time of the measurement.
    """

    L: float
    sigma2: float
    C2: float
    eps0: float
    eta: float
    b0: int
    n_samples: int
    hessian_samples: int
    iterations: int
    converged: bool
    stable: bool
    variance_source: str
    seconds: float

    @property
    def l_eta(self) -> float:
        """Lη₀ (Proposition 1 needs it below 2)."""
        return self.L * self.eta

    def to_dict(self) -> dict:
        """Plain fields (JSON-friendly), ``l_eta`` included."""
        return {**asdict(self), "l_eta": self.l_eta}

    def summary(self) -> str:
        """One line: the estimates, ε₀ and what they cost."""
        return (f"eps0 = auto: L = {self.L:.4g} (Hessian power iteration, {self.iterations} products on "
                f"{self.hessian_samples} samples{'' if self.converged else ', not converged'}), "
                f"sigma2 = {self.sigma2:.4g} (tr Sigma on {self.n_samples} samples), L*eta0 = {self.l_eta:.3g}, "
                f"C2 = {self.C2:.4g}, eps0 = sqrt(2 C2/b0) = {self.eps0:.4g} ({self.seconds:.1f} s)")


# -- σ² ------------------------------------------------------------------------------------------

def gradient_noise_trace(model: nn.Module, dataset, loss_fn, *, samples: int, batch_size: int = 256,
                         reduction: str | None = None, device=None, transform=None) -> tuple[float, str]:
    r"""tr Σ̂ = (s/(s − 1)) ((1/s) Σ_{i≤s} ‖∇fᵢ(θ)‖² − ‖ḡ‖²) on the first ``samples`` = s samples.

    Returns ``(trace, source)`` with ``source`` ``"per_sample_norms"`` (hooks in one backward per
    chunk of ``batch_size``) or ``"vmap"`` (``torch.func``, for a model with a layer the hooks do not
    cover). Eval mode; leaves no trace (:func:`~sfotorch.monitors.base.leave_no_trace`).
    """
    where = "gradient_noise_trace"
    params, data, reduction, device = _setup(model, dataset, loss_fn, reduction, device, transform, where)
    s = check_count(samples, "samples", where, low=2, high=len(data),
                    reason="a variance needs two samples; at most the samples of the dataset")
    batch_size = check_count(batch_size, "batch_size", where, low=1)
    total = [torch.zeros(p.shape, dtype=torch.float64, device=p.device) for p in params]
    sum_sq = 0.0                                             # Σᵢ ‖∇fᵢ‖²
    with leave_no_trace(model):
        source = "vmap" if unsupported_modules(model, params) else "per_sample_norms"
        norms = PerSampleNorms(model, params, where=where) if source == "per_sample_norms" else None
        for inputs, targets in _chunks(data, s, batch_size, device, transform):
            m = inputs.shape[0]
            if norms is not None:
                with norms.recording():
                    loss = loss_fn(model(inputs), targets) * loss_scale(reduction, m)     # Σ_{i∈chunk} fᵢ
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                sq = norms.sq_norms
                sum_sq += float(sq.sum(dtype=torch.float64))
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
                for acc, g in zip(total, grads):
                    acc.add_(g.detach().to(torch.float64))
            else:
                per_sample, _ = per_sample_gradients(model, params, loss_fn, inputs, targets)
                for acc, g in zip(total, per_sample):
                    acc.add_(g.detach().sum(0).to(torch.float64))
                    sum_sq += float(g.detach().reshape(m, -1).pow(2).sum(dtype=torch.float64))
    mean_sq = (total_norm(total) / s) ** 2                    # ‖ḡ‖²
    return max(sum_sq / s - mean_sq, 0.0) * s / (s - 1), source


# -- L -------------------------------------------------------------------------------------------

def largest_hessian_eigenvalue(model: nn.Module, dataset, loss_fn, *, samples: int, iterations: int = 20,
                               tol: float = 1e-3, seed: int = 0, batch_size: int = 256,
                               reduction: str | None = None, device=None, transform=None) -> tuple[float, int, bool]:
    r"""max|λ(H)| of H = ∇²f on the first ``samples`` samples, by power iteration.

    Returns ``(L̂, products, converged)``: L̂ = ‖Hv‖ of the last unit vector v (a lower bound on
    max|λ(H)| that never decreases from one product to the next), the Hessian-vector products
    used, and whether the last one changed L̂ by at most ``tol`` relative (else ``iterations`` ran
    out). v₀ is drawn from ``torch.Generator().manual_seed(seed)``; the global RNG is untouched.
    Eval mode; leaves no trace.
    """
    where = "largest_hessian_eigenvalue"
    params, data, reduction, device = _setup(model, dataset, loss_fn, reduction, device, transform, where)
    s = check_count(samples, "samples", where, low=1, high=len(data),
                    reason="at most the samples of the dataset")
    iterations = check_count(iterations, "iterations", where, low=1)
    batch_size = check_count(batch_size, "batch_size", where, low=1)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 <= tol < 1.0:
        fail("tol", where, ">= 0 and < 1 (a relative change of the estimate)", tol)
    gen = torch.Generator().manual_seed(int(seed))
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    v = _normalized(v)
    estimate, converged, used = 0.0, False, 0
    with leave_no_trace(model):
        batches = list(_chunks(data, s, batch_size, device, transform))
        for used in range(1, iterations + 1):
            hv = [torch.zeros_like(p) for p in params]
            for inputs, targets in batches:
                loss = loss_fn(model(inputs), targets) * (loss_scale(reduction, inputs.shape[0]) / s)
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                dot = sum((g * u).sum() for g, u in zip(grads, v) if g is not None)
                if not isinstance(dot, torch.Tensor) or not dot.requires_grad:   # f linear in θ on this chunk
                    continue
                for acc, h in zip(hv, torch.autograd.grad(dot, params, allow_unused=True)):
                    if h is not None:
                        acc.add_(h.detach())
            norm = total_norm(hv)
            if not math.isfinite(norm):
                fail("model", where, "a loss with a finite Hessian-vector product at θ", norm,
                     reason="the Hessian of the loss is not finite here")
            previous, estimate = estimate, norm
            if norm == 0.0:                      # H v = 0: H = 0 here, or v₀ drawn in its null space
                converged = True
                break
            v = [h / norm for h in hv]
            if used > 1 and abs(estimate - previous) <= tol * estimate:
                converged = True
                break
    return float(estimate), used, converged


# -- both, and ε₀ ------------------------------------------------------------------------------------

def estimate_constants(model: nn.Module, dataset, loss_fn, *, eta: float, b0: int, samples: int = 1024,
                       hessian_samples: int = 256, iterations: int = 20, tol: float = 1e-3, seed: int = 0,
                       batch_size: int = 256, reduction: str | None = None, device=None,
                       transform=None) -> Calibration:
    r"""L̂, σ̂², C₂ = L̂σ̂²η₀/(2 − L̂η₀) and ε₀ = √(2C₂/b₀) at θ₀ (``eta`` = η₀, ``b0`` = b₀).

    σ̂² on the first ``samples`` samples (:func:`gradient_noise_trace`), L̂ on the first
    ``hessian_samples`` (:func:`largest_hessian_eigenvalue`); both capped at the dataset's size.
    When L̂η₀ ≥ 2 the record says so (``stable`` False) and C₂, ε₀ are NaN; nothing is refused here
    (:func:`calibrate_eps0` refuses).
    """
    where = "estimate_constants"
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and eta > 0):
        fail("eta", where, "a finite number > 0 (the stage-0 learning rate η₀)", eta)
    b0 = check_count(b0, "b0", where, low=1, reason="a batch holds at least one sample")
    n = len(as_dataset(dataset, where))
    s = min(check_count(samples, "samples", where, low=2, reason="a variance needs two samples"), n)
    s_h = min(check_count(hessian_samples, "hessian_samples", where, low=1), s)
    t0 = time.perf_counter()
    common = dict(batch_size=batch_size, reduction=reduction, device=device, transform=transform)
    sigma2, source = gradient_noise_trace(model, dataset, loss_fn, samples=s, **common)
    L, used, converged = largest_hessian_eigenvalue(model, dataset, loss_fn, samples=s_h, iterations=iterations,
                                                   tol=tol, seed=seed, **common)
    stable = L * eta < 2.0
    c2, eps0 = _theory_values(L, sigma2, float(eta), b0) if stable else (math.nan, math.nan)
    return Calibration(L=L, sigma2=sigma2, C2=c2, eps0=eps0, eta=float(eta), b0=b0, n_samples=s,
                       hessian_samples=s_h, iterations=used, converged=converged, stable=stable,
                       variance_source=source, seconds=time.perf_counter() - t0)


def calibrate_eps0(model: nn.Module, dataset, loss_fn, *, eta: float, b0: int, **kwargs) -> Calibration:
    """:func:`estimate_constants`, refusing a measurement that gives no ε₀: L̂η₀ ≥ 2 (C₂ undefined),
    or ε₀ = 0 (L̂ = 0 or σ̂² = 0: a model whose loss has no curvature or no gradient noise here)."""
    cal = estimate_constants(model, dataset, loss_fn, eta=eta, b0=b0, **kwargs)
    where = "calibrate_eps0"
    if not cal.stable:
        fail("eps0", where, "a number, not 'auto', when the measured L·eta0 >= 2", "auto",
             reason=f"the measured L = {cal.L:.4g} at θ₀ gives L·eta0 = {cal.l_eta:.4g} >= 2, so "
                    f"C2 = L·sigma2·eta0/(2 − L·eta0) is undefined (Proposition 1 needs eta0 < 2/L = "
                    f"{2.0 / cal.L:.4g}); lower eta0 or give eps0 as a number")
    if not cal.eps0 > 0.0:
        fail("eps0", where, "a number, not 'auto', when the measured eps0 = sqrt(2 C2/b0) is 0", "auto",
             reason=f"the measured L = {cal.L:.4g} and sigma2 = {cal.sigma2:.4g} give C2 = 0")
    return cal


# -- helpers -------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _eps_of_batch():
    """ε(C₂, b) = √(2C₂/b), lambdified once from :func:`sfotheory.stages.derive_stage_thresholds`."""
    import sympy as sp

    from sfotheory import symbols as S
    from sfotheory.stages import derive_stage_thresholds

    return sp.lambdify((S.C2, S.b), derive_stage_thresholds().eps_of_batch, modules="math")


def _theory_values(L: float, sigma2: float, eta: float, b0: int) -> tuple[float, float]:
    """(C₂, ε₀) from :mod:`sfotheory` (0, 0 when L or σ² is 0)."""
    if L <= 0.0 or sigma2 <= 0.0:
        return 0.0, 0.0
    from sfotheory.complexity import theory_constants
    from sfotheory.constants import ProblemConstants

    _, c2 = theory_constants(ProblemConstants(L, sigma2, 0.0), eta)
    return float(c2), float(_eps_of_batch()(c2, b0))


def _setup(model, dataset, loss_fn, reduction, device, transform, where):
    params = trainable_parameters(model, where)
    data = as_dataset(dataset, where)
    reduction = resolve_reduction(loss_fn, reduction, where)
    if transform is not None and not callable(transform):
        fail("transform", where, "None or a deterministic callable on a batch of inputs", transform)
    device = torch.device(device) if device is not None else params[0].device
    return params, data, reduction, device


def _chunks(data, s, batch_size, device, transform):
    for inputs, targets in iterate_batches(data, torch.arange(s), batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        yield (inputs if transform is None else transform(inputs)), targets


def _normalized(vectors):
    norm = total_norm(vectors)
    return [t / norm for t in vectors]
