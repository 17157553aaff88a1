r"""Gradients of groups of samples and the two moments every estimator needs.

A batch B of b samples is split into k groups (micro-batches) G_1, …, G_k of sizes m_j
(Σ m_j = b). With S_j = Σ_{i∈G_j} ∇f_i the group's *summed* gradient and g_j = S_j / m_j,

.. math::

    \bar g = \frac{1}{b}\sum_j S_j, \qquad
    \widehat{\operatorname{tr}\Sigma} = \frac{1}{k-1}\sum_j m_j \lVert g_j - \bar g\rVert^2
        = \frac{1}{k-1}\Bigl(\sum_j \frac{\lVert S_j\rVert^2}{m_j} - b\,\lVert \bar g\rVert^2\Bigr).

**Unbiasedness.** If the b samples are i.i.d. with covariance Σ, E Σ_j m_j‖g_j − ḡ‖² =
Σ_j m_j tr Σ/m_j − b tr Σ/b = (k − 1) tr Σ. If B is a uniformly random subset drawn
without replacement from n samples and split at random, the same identity holds
conditionally on B for the batch's sample covariance (denominator b − 1), whose mean is the
population covariance with denominator n − 1 (S² of survey sampling). So tr Σ̂ is unbiased
for tr Σ in the first case and for tr S² in the second. k = b (groups of one sample: per-sample
gradients) gives the ordinary sample covariance trace.

Two sources of the S_j:

- :func:`group_gradient` — one forward/backward per micro-batch with
  :func:`torch.autograd.grad` (any model; with BatchNorm in train mode each micro-batch is
  normalised with its own statistics, exactly as gradient accumulation does).
- :func:`per_sample_gradients` — ``torch.func.vmap`` over ``torch.func.grad`` of the
  one-sample loss, in one vectorised pass (models without batch-coupled layers: BatchNorm in
  train mode is refused).

Σ_j S_j is accumulated in float64 (or the parameters' dtype, on request); the scalars in float64.

>>> mom = GradientMoments([torch.zeros(2)])
>>> mom.add([torch.tensor([2.0, 0.0])], 1); mom.add([torch.tensor([0.0, 2.0])], 1)
>>> mom.mean_sq_norm(), mom.trace_cov()      # ḡ = (1, 1); g_i − ḡ = ±(1, −1)
(2.0, 4.0)
"""

from __future__ import annotations

import torch
from torch import nn

from sfotheory.validation import fail

from .base import total_norm

__all__ = ["GradientMoments", "group_gradient", "loss_scale", "per_sample_gradients", "refuse_batch_coupled"]


class GradientMoments:
    """Running Σ_j S_j, Σ_j ‖S_j‖²/m_j, b = Σ m_j and k (the group count).

    ``dtype`` is the accumulator of Σ_j S_j: float64 (default, the exact and subsampled monitors)
    or ``None`` for the parameters' own dtype (the debiased monitor, which adds ḡ to ``.grad``).
    The squared norms are Python floats (float64), each ‖S_j‖ computed by one fused
    :func:`~sfotorch.monitors.base.total_norm`.
    """

    def __init__(self, like, dtype=torch.float64):
        self.total = [torch.zeros(t.shape, dtype=dtype or t.dtype, device=t.device) for t in like]
        self.weighted_sq = 0.0   # Σ_j ‖S_j‖² / m_j
        self.count = 0           # b
        self.groups = 0          # k

    def add(self, group_grads, size: int, scale: float = 1.0) -> None:
        """Add one group of m_j = ``size`` samples with S_j = ``scale`` · ``group_grads``."""
        grads = [g.detach() for g in group_grads]
        if grads[0].dtype != self.total[0].dtype:
            grads = [g.to(self.total[0].dtype) for g in grads]
        torch._foreach_add_(self.total, grads, alpha=scale)
        norm = total_norm(grads)
        self.weighted_sq += (scale * norm) ** 2 / size
        self.count += size
        self.groups += 1

    def add_per_sample(self, per_sample) -> None:
        """Add b groups of one sample each: tensors with a leading per-sample dimension."""
        b = per_sample[0].shape[0]
        sq = torch.zeros(b, dtype=torch.float64, device=per_sample[0].device)
        for acc, g in zip(self.total, per_sample):
            g = g.detach()
            acc.add_(g.sum(0).to(acc.dtype))
            sq += g.reshape(b, -1).pow(2).sum(1, dtype=torch.float64)
        self.weighted_sq += float(sq.sum())
        self.count += b
        self.groups += b

    def mean(self) -> list[torch.Tensor]:
        """ḡ = Σ S_j / b."""
        return [t / self.count for t in self.total]

    def mean_sq_norm(self) -> float:
        """‖ḡ‖²."""
        return (total_norm(self.total) / self.count) ** 2

    def trace_cov(self) -> float:
        """tr Σ̂ (NaN with fewer than two groups). Clamped at 0 against rounding."""
        if self.groups < 2:
            return float("nan")
        spread = self.weighted_sq - self.count * self.mean_sq_norm()
        return max(spread, 0.0) / (self.groups - 1)


def loss_scale(reduction: str, size: int) -> float:
    """S_j = scale · ∇loss_fn(group): loss_fn = (1/m) Σ f_i for "mean", Σ f_i for "sum"."""
    return float(size) if reduction == "mean" else 1.0


def group_gradient(model: nn.Module, params, loss_fn, inputs, targets):
    """∇ loss_fn(model(inputs), targets) and the loss (detached), by one forward/backward.

    Uses :func:`torch.autograd.grad`, so no ``.grad`` is written. Parameters that the loss
    does not reach get a zero gradient. Multiply by :func:`loss_scale` to get S = Σ_{i∈G} ∇f_i.
    """
    loss = loss_fn(model(inputs), targets)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)], loss.detach()


def refuse_batch_coupled(model: nn.Module, where: str) -> None:
    """Per-sample gradients need per-sample losses: refuse BatchNorm in train mode."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
            fail("variance_source", where, "'micro_batches' for a model with BatchNorm in train mode",
                 "per_sample", reason=f"module {name!r} couples the samples of a batch, so per-sample "
                                      "gradients are not defined")


def per_sample_gradients(model: nn.Module, params, loss_fn, inputs, targets):
    """∇f_i for every sample of the batch (tensors with a leading dimension b) and Σ f_i.

    ``torch.func.vmap(torch.func.grad(one_sample_loss))`` with the model evaluated by
    ``torch.func.functional_call`` on the given trainable ``params`` (other parameters and the
    buffers are passed as constants). The one-sample loss is ``loss_fn`` on a batch of one,
    which is f_i for either reduction. Dropout draws different masks per sample.
    """
    from torch.func import functional_call, grad, vmap

    ids = {id(p) for p in params}
    name_of = {id(p): n for n, p in model.named_parameters()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if id(p) not in ids}
    frozen.update(dict(model.named_buffers()))
    detached = {n: p.detach() for n, p in model.named_parameters() if id(p) in ids}

    def one_sample_loss(theta, x, y):
        out = functional_call(model, {**frozen, **theta}, (x.unsqueeze(0),))
        loss = loss_fn(out, y.unsqueeze(0))
        return loss, loss.detach()

    grads, losses = vmap(grad(one_sample_loss, has_aux=True), in_dims=(None, 0, 0), randomness="different")(
        detached, inputs, targets)
    return [grads[name_of[id(p)]] for p in params], losses.sum()
