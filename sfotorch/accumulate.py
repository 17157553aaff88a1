r"""Gradient accumulation under a memory cap: a logical batch of b samples as ⌈b/c⌉ micro-batches.

Algorithm 2 grows the batch from b₀ = 8 to b_max = 4096; the memory a training step needs grows
with the largest batch that runs through the model at once, not with b. With a cap c (the
largest micro-batch the device holds), a batch B of b samples is split into k = ⌈b/c⌉
micro-batches G_1, …, G_k of *balanced* sizes

.. math::

    m_j = \lfloor b/k \rfloor + [\,j < b \bmod k\,] \le c, \qquad \sum_j m_j = b,

in batch order (G_1 holds the first m_1 samples), and one optimizer step sees the gradient

.. math::

    g_B = \frac{1}{D} \sum_{j=1}^{k} S_j, \qquad
    S_j = \nabla \sum_{i \in G_j} f_i(\theta) = \nabla L_j(\theta),

with D = b for one process, or the *global* batch size when the batch is sharded over ranks
(:mod:`sfotorch.distributed`). Legend: f_i the loss of sample i, L_j the micro-batch's *summed*
loss, S_j its gradient, D the denominator.

Conventions (stated once, here)
-------------------------------
* **Exact mean.** g_B is the gradient of (1/D) Σ_j L_j: each micro-batch's *summed* loss scaled
  by 1/D (never the mean of micro-batch means, which weights a short micro-batch wrongly). The
  loss reduction of ``loss_fn`` (``"mean"`` or ``"sum"``) is read as in
  :mod:`sfotorch.monitors.base`; a mean-reduced L_j is multiplied back by m_j. Each S_j is
  computed by :func:`torch.autograd.grad` in the model's dtype and added to a **float64**
  accumulator; 1/D is applied once, in float64, and the result is *added* to ``.grad`` in the
  parameter's dtype — what one big ``loss_fn(model(x), y).backward()`` adds, up to float rounding
  (tested against it in float64 to 1e-12).
* **BatchNorm** (train mode). Each micro-batch is normalised with its *own* batch statistics and
  the running buffers are updated once per micro-batch forward (k momentum updates per step;
  ``num_batches_tracked`` grows by k), exactly as plain gradient accumulation does. So with
  BatchNorm in train mode g_B equals the big-batch gradient only when k = 1 (b ≤ c). For the
  memory benchmark and for DDP this is the honest choice: statistics of at most c samples is
  what fits in memory. A model whose BatchNorm must see the whole batch needs SyncBatchNorm-style
  two-pass statistics, which this module does not do.
* **Memory cap.** ``max_micro_batch`` = c ≥ 1 is given by the user, or found once on CUDA by
  :func:`find_max_micro_batch`: doubling 1, 2, 4, … until ``torch.OutOfMemoryError`` (or a limit)
  and keeping the last size that fitted (a power of two, within 2× of the largest that fits). On
  CPU there is no reliable out-of-memory signal (the OS kills the process, or swaps), so the cap
  must be given there; :func:`find_max_micro_batch` refuses a CPU device with a message saying so.
* **One micro-batch** (b ≤ c, one process): nothing is summed, so
  :meth:`GradientAccumulator.backward_single` runs one ordinary backward into ``.grad`` instead
  (what the training loop does then; the float64 path is the same gradient up to rounding).
* **Inputs** may be moved to ``device`` and passed through ``transform`` one micro-batch at a time
  (e.g. uint8 images → normalised float on the GPU), so only c samples are ever expanded.
* **Moments.** Along the way :class:`AccumulatedGradient` keeps Σ_j ‖S_j‖²/m_j and k, from which
  tr Σ̂ of the micro-batch gradients follows (:mod:`sfotorch.monitors.moments`); summed over ranks
  they give the same estimator over all ranks' micro-batches (the debiased monitor's input).

>>> import torch
>>> micro_batch_sizes(10, 4)
[4, 3, 3]
>>> micro_batch_sizes(8, 8)
[8]
>>> model = torch.nn.Linear(3, 1)
>>> acc = GradientAccumulator(model, torch.nn.MSELoss(), max_micro_batch=4)
>>> x, y = torch.randn(10, 3), torch.randn(10, 1)
>>> loss = acc.backward(x, y)                        # replaces loss_fn(model(x), y).backward()
>>> ref = [g.clone() for g in torch.autograd.grad(torch.nn.MSELoss()(model(x), y), model.parameters())]
>>> all(torch.allclose(p.grad, r, atol=1e-6) for p, r in zip(model.parameters(), ref))
True
>>> GradientAccumulator(model, torch.nn.MSELoss(), max_micro_batch=0)
Traceback (most recent call last):
...
sfotheory.validation.ParameterError: The 'max_micro_batch' parameter of GradientAccumulator must be >= 1 (the largest micro-batch holds at least one sample). Got max_micro_batch=0 instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from sfotheory.validation import ParameterTypeError, check_integer, fail

from .monitors.base import leave_no_trace, resolve_reduction, total_norm, trainable_parameters

__all__ = [
    "AccumulatedGradient",
    "GradientAccumulator",
    "find_max_micro_batch",
    "micro_batch_sizes",
    "search_max_micro_batch",
    "summed_gradient",
]


def _check_cap(max_micro_batch, where: str) -> int:
    return check_integer(max_micro_batch, "max_micro_batch", where, minimum=1,
                         reason="the largest micro-batch holds at least one sample")


def micro_batch_sizes(batch_size: int, max_micro_batch: int, min_count: int = 1) -> list[int]:
    """The balanced sizes m_j of the k = max(⌈b/c⌉, min(min_count, b)) micro-batches of a batch of b.

    ``min_count`` forces a split even when b ≤ c (the debiased monitor needs k ≥ 2 for tr Σ̂).
    b = 0 gives ``[]``.

    >>> micro_batch_sizes(4096, 64) == [64] * 64
    True
    >>> micro_batch_sizes(5, 2)
    [2, 2, 1]
    >>> micro_batch_sizes(5, 8, min_count=2)
    [3, 2]
    """
    b = check_integer(batch_size, "batch_size", "micro_batch_sizes", minimum=0)
    c = _check_cap(max_micro_batch, "micro_batch_sizes")
    min_count = check_integer(min_count, "min_count", "micro_batch_sizes", minimum=1)
    if b == 0:
        return []
    k = _micro_batch_count(b, c, min_count)
    return [b // k + (j < b % k) for j in range(k)]


def _micro_batch_count(b: int, c: int, min_count: int) -> int:
    """k = max(⌈b/c⌉, min(min_count, b)) for b ≥ 1 (arguments already checked)."""
    return max(-(-b // c), min(min_count, b))


def summed_gradient(model: nn.Module, params, loss_fn, reduction: str, inputs, targets):
    """S = Σ_{i∈G} ∇f_i (tensors in the parameters' dtype) and Σ_{i∈G} f_i (detached), one forward/backward.

    Uses :func:`torch.autograd.grad`, so ``.grad`` is not written; a mean-reduced loss is
    multiplied by m = |G|; parameters the loss does not reach get zeros.
    """
    m = int(inputs.shape[0])
    loss = loss_fn(model(inputs), targets)
    if reduction == "mean" and m != 1:
        loss = loss * float(m)          # scale the scalar, not every gradient tensor
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    out = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return out, loss.detach()


@dataclass
class AccumulatedGradient:
    r"""Sums over the samples one process has seen in a step, all in float64.

    ``sums`` = Σ_j S_j (tensors shaped like the trainable parameters), ``loss_sum`` = Σ_i f_i,
    ``samples`` = Σ_j m_j, ``weighted_sq`` = Σ_j ‖S_j‖²/m_j, ``micro_batches`` = k. Every field is
    a sum, so the fields of several ranks add up to those of the union of their micro-batches
    (:func:`sfotorch.distributed.all_reduce_accumulated`).
    """

    flat: torch.Tensor
    shapes: list = field(default_factory=list)
    loss_sum: float = 0.0
    samples: int = 0
    weighted_sq: float = 0.0
    micro_batches: int = 0
    micro_sizes: list[int] = field(default_factory=list)

    @classmethod
    def zeros(cls, params) -> AccumulatedGradient:
        """An empty record: one flat float64 vector for all of ``params`` (their shapes kept)."""
        shapes = [p.shape for p in params]
        device = params[0].device if params else torch.device("cpu")
        return cls(flat=torch.zeros(sum(p.numel() for p in params), dtype=torch.float64, device=device),
                   shapes=shapes)

    @property
    def sums(self) -> list[torch.Tensor]:
        """Σ_j S_j per parameter: views of :attr:`flat` shaped like the parameters."""
        out, start = [], 0
        for shape in self.shapes:
            n = math.prod(shape)
            out.append(self.flat[start:start + n].view(shape))
            start += n
        return out

    def add(self, group_sum, size: int, loss_sum: float = 0.0) -> None:
        """Add one micro-batch: S_j = ``group_sum`` (tensors like the parameters), m_j = ``size``."""
        if group_sum:   # one flat float64 copy, one add, one dot: a handful of kernels whatever the model
            g64 = torch.cat([g.detach().reshape(-1) for g in group_sum]).to(torch.float64)
            self.flat.add_(g64)
            self.weighted_sq += float(g64 @ g64) / size
        self.samples += int(size)
        self.micro_batches += 1
        self.micro_sizes.append(int(size))
        self.loss_sum += float(loss_sum)

    def mean(self, denominator: int | None = None) -> list[torch.Tensor]:
        """g = Σ S_j / D (float64), D = ``denominator`` or ``samples``."""
        d = self._denominator(denominator)
        return [s / d for s in self.sums]

    def sq_norm(self, denominator: int | None = None) -> float:
        """‖g‖² = ‖Σ S_j / D‖² (float64 arithmetic; NaN/inf if a gradient was)."""
        d = self._denominator(denominator)
        if not self.shapes:
            return 0.0
        return float(self.flat @ self.flat) / float(d) ** 2

    def trace_cov(self) -> float:
        r"""tr Σ̂ = (Σ_j ‖S_j‖²/m_j − b‖ḡ‖²)/(k − 1) over the micro-batches (NaN if k < 2), clamped at 0."""
        if self.micro_batches < 2:
            return math.nan
        spread = self.weighted_sq - self.samples * self.sq_norm(self.samples)
        return max(spread, 0.0) / (self.micro_batches - 1)

    def loss_mean(self, denominator: int | None = None) -> float:
        """Σ f_i / D: the mean loss of the batch."""
        return self.loss_sum / self._denominator(denominator)

    def is_finite(self) -> bool:
        """Whether the loss sum and every gradient entry are finite."""
        return math.isfinite(self.loss_sum) and math.isfinite(self.sq_norm(max(self.samples, 1)))

    def write_grad(self, params, denominator: int | None = None) -> None:
        """Add Σ S_j / D to each parameter's ``.grad`` (creating it if None), in the parameter's dtype."""
        d = self._denominator(denominator)
        with torch.no_grad():
            params = list(params)
            same = all(p.dtype == params[0].dtype and p.device == params[0].device for p in params)
            flat = (self.flat / d).to(dtype=params[0].dtype, device=params[0].device) if same and params else None
            start = 0
            for p in params:
                n = p.numel()
                if flat is not None:   # a view of one converted buffer: no per-parameter conversion
                    g = flat[start:start + n].view_as(p)
                else:
                    g = (self.flat[start:start + n].view_as(p) / d).to(dtype=p.dtype, device=p.device)
                start += n
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)

    def _denominator(self, denominator) -> int:
        d = self.samples if denominator is None else denominator
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            fail("denominator", "AccumulatedGradient", "an integer >= 1 (the number of samples averaged)", d,
                 reason=f"this step holds {self.samples} samples")
        return d


class GradientAccumulator:
    """Computes a batch's gradient as micro-batches of at most ``max_micro_batch`` samples.

    Parameters
    ----------
    model : the ``nn.Module``; gradients w.r.t. its trainable parameters.
    loss_fn : ``loss_fn(outputs, targets)`` reducing by ``"mean"`` or ``"sum"`` (see the module docstring).
    max_micro_batch : c ≥ 1, the largest micro-batch (the memory cap).
    reduction : overrides ``loss_fn.reduction``.
    device : where each micro-batch is moved before the forward (default: the model's device).
    transform : a deterministic function applied to each micro-batch's inputs after moving them.
    min_micro_batches : split every batch into at least this many micro-batches (when b allows).
    """

    def __init__(self, model: nn.Module, loss_fn, *, max_micro_batch: int, reduction: str | None = None,
                 device=None, transform=None, min_micro_batches: int = 1):
        where = "GradientAccumulator"
        self.max_micro_batch = _check_cap(max_micro_batch, where)
        self.min_micro_batches = check_integer(min_micro_batches, "min_micro_batches", where, minimum=1)
        self.params = trainable_parameters(model, where)
        self.model = model
        self.loss_fn = loss_fn
        self.reduction = resolve_reduction(loss_fn, reduction, where)
        if transform is not None and not callable(transform):
            fail("transform", where, "None or a callable on a micro-batch of inputs", transform,
                 cls=ParameterTypeError)
        self.transform = transform
        self.device = torch.device(device) if device is not None else self.params[0].device

    def accumulate(self, inputs, targets, *, on_micro_batch=None) -> AccumulatedGradient:
        """Forward/backward every micro-batch of ``(inputs, targets)``; return the float64 sums.

        Nothing is written to ``.grad``. ``inputs`` may be ``None`` or hold 0 rows (an empty
        shard of a short final batch under DDP): the sums are then zero. ``on_micro_batch(j, k)``
        is called after micro-batch j (0-based) of k is done.
        """
        where = "GradientAccumulator.accumulate"
        acc = AccumulatedGradient.zeros(self.params)
        b = 0 if inputs is None else int(inputs.shape[0])
        if inputs is not None and (targets is None or int(targets.shape[0]) != b):
            fail("targets", where, f"as many rows as inputs (b = {b})",
                 None if targets is None else f"{int(targets.shape[0])} rows")
        sizes = micro_batch_sizes(b, self.max_micro_batch, self.min_micro_batches)
        start = 0
        with torch.enable_grad():
            for j, m in enumerate(sizes):
                x = inputs[start:start + m].to(self.device)
                y = targets[start:start + m].to(self.device)
                start += m
                if self.transform is not None:
                    x = self.transform(x)
                grads, part = summed_gradient(self.model, self.params, self.loss_fn, self.reduction, x, y)
                acc.add(grads, m, float(part.to(torch.float64)))
                del grads, part, x, y
                if on_micro_batch is not None:
                    on_micro_batch(j, len(sizes))
        return acc

    def is_single(self, batch_size: int) -> bool:
        """Whether a batch of ``batch_size`` rows runs as one micro-batch (b ≤ c, no forced split):
        k = 1 in :func:`micro_batch_sizes`, without its checks or the list (this runs once per step)."""
        return batch_size >= 1 and _micro_batch_count(batch_size, self.max_micro_batch, self.min_micro_batches) == 1

    def backward_single(self, inputs, targets, *, backward=None) -> tuple[float, float]:
        r"""The k = 1, D = b case of :meth:`accumulate` + ``write_grad``: one ordinary backward.

        ``loss_fn(model(x), y)`` (divided by b if sum-reduced) ``.backward()`` adds g_B = S/b to
        ``.grad`` — there is nothing to sum across micro-batches, so the float64 buffer would only
        copy the gradient there and back (its cost: ``benchmarks/bench_train_throughput.py``). Returns (Σ f_i / b, ‖g_B‖²); ‖g_B‖ comes from one fused norm over ``.grad``
        (:func:`~sfotorch.monitors.base.total_norm`) in the parameters' dtype, over ``.grad`` as it is
        after the add — call it with ``.grad`` zeroed or None, as the training loop does. Only for b
        rows that :meth:`is_single` accepts and a denominator equal to b (not under DDP).

        ``backward(x, y)``, if given, replaces ``loss_fn(model(x), y).backward()`` (after the move
        and ``transform``) and returns that loss — e.g.
        :meth:`~sfotorch.monitors.debiased.DebiasedMonitor.backward`, which records tr Σ̂ of the
        batch on its statistics steps while adding the same gradient to ``.grad``.
        """
        b = int(inputs.shape[0])
        if not self.is_single(b):
            fail("inputs", "GradientAccumulator.backward_single",
                 f"at most max_micro_batch = {self.max_micro_batch} rows and min_micro_batches = 1 "
                 f"(min_micro_batches = {self.min_micro_batches})", f"{b} rows")
        x, y = inputs.to(self.device), targets.to(self.device)
        if self.transform is not None:
            x = self.transform(x)
        sum_reduced = self.reduction == "sum" and b != 1
        with torch.enable_grad():
            if backward is not None:
                loss = backward(x, y)
            else:
                loss = self.loss_fn(self.model(x), y)
                if sum_reduced:
                    loss = loss / float(b)
                loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = total_norm(grads)
        if backward is not None and sum_reduced:    # that backward added S = b g_B, as a sum-reduced loss does
            with torch.no_grad():
                for g in grads:
                    g.div_(b)
            norm, loss = norm / b, loss / b
        return float(loss.detach() if isinstance(loss, torch.Tensor) else torch.as_tensor(loss)), norm * norm

    def backward(self, inputs, targets, *, denominator: int | None = None) -> torch.Tensor:
        """Replace ``loss_fn(model(inputs), targets).backward()``: add Σ S_j / D to ``.grad``.

        D = ``denominator`` (default b, the rows of ``inputs``). Returns the mean loss Σ f_i / D
        as a 0-d float64 tensor. (With ``reduction="sum"`` a plain backward adds Σ S_j; pass
        ``denominator=1`` for that.)
        """
        acc = self.accumulate(inputs, targets)
        acc.write_grad(self.params, denominator)
        return torch.tensor(acc.loss_mean(denominator), dtype=torch.float64)


# -- finding the cap --------------------------------------------------------------------------------

def search_max_micro_batch(fits, *, start: int = 1, limit: int = 1 << 16) -> int:
    """The largest of ``start``, 2·start, 4·start, … ≤ ``limit`` for which ``fits(size)`` returns.

    ``fits(size)`` runs a trial step and raises :class:`torch.OutOfMemoryError` when the size does
    not fit (any other exception propagates). Raises if ``start`` itself does not fit.

    >>> search_max_micro_batch(lambda s: None if s <= 100 else (_ for _ in ()).throw(torch.OutOfMemoryError()))
    64
    """
    where = "search_max_micro_batch"
    start = check_integer(start, "start", where, minimum=1)
    limit = check_integer(limit, "limit", where, minimum=start)
    best = None
    size = start
    while size <= limit:
        try:
            fits(size)
        except torch.OutOfMemoryError:
            break
        best = size
        size *= 2
    if best is None:
        fail("start", where, "a micro-batch size that fits in memory", start,
             reason="the trial step ran out of memory at the smallest size tried")
    return best


def find_max_micro_batch(model: nn.Module, loss_fn, example_inputs, example_targets, *, device=None,
                         start: int = 1, limit: int = 4096, reduction: str | None = None, transform=None) -> int:
    """Find the cap c once on CUDA: double the micro-batch until ``torch.OutOfMemoryError``.

    A trial is one forward/backward (train mode, :func:`torch.autograd.grad`) on ``size`` rows made
    by repeating ``example_inputs``; it leaves no trace (modes, BatchNorm buffers, ``.grad`` and the
    RNG are restored). The CUDA cache is emptied after each trial. On a CPU device this raises:
    give ``max_micro_batch`` yourself there (see the module docstring).
    """
    where = "find_max_micro_batch"
    params = trainable_parameters(model, where)
    device = torch.device(device) if device is not None else params[0].device
    if device.type != "cuda":
        fail("device", where, "a CUDA device (on CPU pass max_micro_batch explicitly)", str(device),
             reason="only CUDA reports running out of memory as an exception the search can catch")
    red = resolve_reduction(loss_fn, reduction, where)
    n0 = int(example_inputs.shape[0])
    if n0 < 1:
        fail("example_inputs", where, "at least one example row", f"{n0} rows")

    def fits(size: int) -> None:
        reps = -(-size // n0)
        x = example_inputs.repeat(reps, *([1] * (example_inputs.dim() - 1)))[:size].to(device)
        y = example_targets.repeat(reps, *([1] * (example_targets.dim() - 1)))[:size].to(device)
        try:
            with leave_no_trace(model, eval_mode=False):
                if transform is not None:
                    x = transform(x)
                grads, _ = summed_gradient(model, params, loss_fn, red, x, y)
                del grads
            torch.cuda.synchronize(device)
        finally:
            del x, y
            torch.cuda.empty_cache()

    return search_max_micro_batch(fits, start=start, limit=limit)
