r"""The exact monitor: ‖∇f(θ)‖ over the whole training set, as Algorithm 2 defines it.

.. math::

    \nabla f(\theta) = \frac{1}{n}\sum_{i=1}^{n} \nabla f_i(\theta)
                     = \frac{1}{n}\sum_{c} S_c, \qquad S_c = \sum_{i\in C_c} \nabla f_i(\theta),

summed over consecutive chunks C_c of at most ``batch_size`` samples. Each chunk's gradient is
computed in the model's dtype and added to a float64 accumulator as its *sum* S_c (a mean-reduced
chunk loss is multiplied by its size |C_c|), so a short last chunk is weighted correctly and the
mean is exact up to the float32 rounding of each chunk.

Unlike the reference implementation (``docs/theory.md``, "The reference implementation"), the pass runs in
**eval mode** (BatchNorm uses its running statistics, dropout is off) on the dataset you
give it, which must be the **un-augmented** training set (pass a deterministic ``transform``,
e.g. normalisation, if the training pipeline applies one; never a random augmentation), and it
leaves no trace: module modes, BatchNorm buffers (including ``num_batches_tracked``), the
parameters' ``.grad`` (including ``None``), the optimizer (never touched) and the global RNG are
as before (see :func:`~sfotorch.monitors.base.leave_no_trace`).

Cost: n gradient evaluations per measurement.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import DatasetMonitor, Measurement, leave_no_trace
from .moments import GradientMoments, group_gradient, loss_scale

__all__ = ["ExactMonitor"]


class ExactMonitor(DatasetMonitor):
    """‖∇f(θ)‖ of the empirical loss f = (1/n) Σ fᵢ over the whole (un-augmented) dataset.

    Parameters
    ----------
    model : the trained ``nn.Module``; the gradient is taken w.r.t. its trainable parameters.
    dataset : the un-augmented training set: a map-style dataset of (input, target) pairs or
        a pair of tensors ``(inputs, targets)``.
    loss_fn : ``loss_fn(outputs, targets)`` with reduction ``"mean"`` or ``"sum"`` (see
        :mod:`sfotorch.monitors.base` for the convention).
    batch_size : chunk size of the pass (memory and speed; the result depends on it only through the
        float32 rounding of each chunk). The default is the chunk that `benchmarks/bench_exact_chunk.py`
        found as fast as the authors' plain pass on a CPU; larger chunks were slower there.
    reduction : overrides ``loss_fn.reduction``.
    device : where inputs are moved (default: the device of the model's first parameter).
    transform : deterministic function applied to each chunk of inputs after moving them.
    num_workers : DataLoader workers for datasets that are not ``TensorDataset``.
    name : the monitor's name in measurements and logs.
    """

    def __init__(self, model: nn.Module, dataset, loss_fn, *, batch_size: int = 256, reduction: str | None = None,
                 device=None, transform=None, num_workers: int = 0, name: str = "exact"):
        super().__init__(model, dataset, loss_fn, where="ExactMonitor", batch_size=batch_size, reduction=reduction,
                         device=device, transform=transform, num_workers=num_workers)
        self.name = name

    def gradient(self) -> list[torch.Tensor]:
        """∇f(θ) itself (float64 tensors shaped like the trainable parameters), with no trace."""
        return self._moments().mean()

    def _moments(self) -> GradientMoments:
        mom = GradientMoments(self.params)
        with leave_no_trace(self.model):
            for inputs, targets in self.chunks(None):
                grads, _ = group_gradient(self.model, self.params, self.loss_fn, inputs, targets)
                mom.add(grads, inputs.shape[0], loss_scale(self.reduction, inputs.shape[0]))
        return mom

    def measure(self) -> Measurement:
        """One full pass: ``norm`` = ‖∇f(θ)‖ exactly (``margin`` 0, ``confidence`` 1), ``cost`` = n."""
        mom = self._moments()
        sq = mom.mean_sq_norm()
        norm = math.sqrt(sq)
        return Measurement(norm=norm, cost=self.n, monitor=self.name, sq_norm=sq, raw_norm=norm, lower=norm,
                           upper=norm, margin=0.0, confidence=1.0, samples_used=self.n)
