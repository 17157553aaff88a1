r"""What every gradient-norm monitor shares: the :class:`Measurement` record, the
:class:`GradientNormMonitor` protocol, the loss convention and the "leave no trace" guard.

Algorithm 2 compares G = ‖∇f(θ_t)‖ with ε_m every τ steps, where

.. math::

    f(\theta) = \frac{1}{n} \sum_{i=1}^{n} f_i(\theta), \qquad
    f_i(\theta) = \ell\bigl(\text{model}_\theta(x_i), y_i\bigr).

Legend: n training-set size, f_i the loss of sample i (``loss_fn`` evaluated on that one
sample), θ the *trainable* parameters (``requires_grad=True``), ∇f the full gradient.

**Loss convention (stated once, here).** ``loss_fn(outputs, targets)`` must reduce a batch B
either as a mean, ``loss_fn = (1/|B|) Σ_{i∈B} f_i`` (``reduction="mean"``, the torch default),
or as a sum, ``loss_fn = Σ_{i∈B} f_i`` (``reduction="sum"``). The reduction is read from
``loss_fn.reduction`` (every ``torch.nn`` loss has it) or given explicitly; anything else
(``"none"``, ``"batchmean"``, a weighted ``CrossEntropyLoss`` whose mean divides by the sum
of the class weights) is refused or must be passed with ``reduction="sum"``. Monitors
always report the gradient of the *mean* f, whatever the reduction.

**Protocol.** A monitor has a ``name`` and ``measure() -> Measurement``; ``cost`` in the
measurement is the number of gradient evaluations (samples whose gradient was computed)
that this measurement spent beyond training, so that the scheduler can count the SFO of
the checks apart from the SFO of the updates (Known weakness 1 of the reference code).

>>> m = Measurement(norm=0.5, cost=100, monitor="exact")
>>> m.sq_norm
0.25
>>> m.decides_below(0.6), m.decides_below(0.4)
(True, False)
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from sfotheory.validation import ParameterTypeError, check_choice, fail

__all__ = [
    "DatasetMonitor",
    "GradientNormMonitor",
    "Measurement",
    "REDUCTIONS",
    "as_dataset",
    "check_count",
    "iterate_batches",
    "leave_no_trace",
    "resolve_reduction",
    "trainable_parameters",
]

REDUCTIONS = ("mean", "sum")


@dataclass(frozen=True)
class Measurement:
    """One estimate of the full-gradient norm ‖∇f(θ)‖.

    Fields:

    - ``norm`` — the point estimate of ‖∇f(θ)‖ the stage rule compares with ε_m (never negative).
    - ``cost`` — gradient evaluations spent by *this* measurement beyond training.
    - ``monitor`` — the name of the monitor that made it.
    - ``sq_norm`` — the estimate of ‖∇f(θ)‖² before clamping (may be negative for the
      debiased estimators; then ``norm`` = 0 and ``clamped`` is True). Defaults to ``norm``².
    - ``raw_norm`` — the norm of the gradient actually computed (‖g_S‖, ‖g_B‖ averaged), which
      overestimates ‖∇f‖ by the sampling noise; equal to ``norm`` for the exact monitor.
    - ``trace_cov`` — tr Σ̂, the estimated trace of the per-sample gradient covariance (NaN if
      not estimated); ``tr Σ̂ / ‖∇f‖²`` is McCandlish et al.'s noise scale B_simple.
    - ``lower``, ``upper``, ``margin``, ``confidence`` — a confidence interval for ‖∇f(θ)‖ at
      level ``confidence`` and its half-width (0 and level 1 for the exact monitor; NaN where
      the monitor has none).
    - ``samples_used`` — the samples whose gradients went into the estimate (for the debiased
      monitor, training samples already paid for).
    - ``clamped`` — a negative squared-norm estimate was clamped to 0.
    - ``undecided`` — the measurement holds no information on which side of ε_m ‖∇f‖ lies (e.g. a
      clamped debiased estimate): the stage rule must not advance on it, whatever ``norm`` is.
    - ``extra`` — monitor-specific details (a dict, not compared).

    A monitor that needs ε_m to measure (to decide how much to measure, or whether it can decide at
    all) sets the class attribute ``uses_eps_m = True`` and takes ``measure(eps_m=ε_m)``;
    :class:`~sfotorch.scheduler.StageScheduler` passes the current ε_m to it.
    """

    norm: float
    cost: int
    monitor: str
    sq_norm: float = math.nan
    raw_norm: float = math.nan
    trace_cov: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    margin: float = math.nan
    confidence: float = math.nan
    samples_used: int = 0
    clamped: bool = False
    undecided: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if math.isnan(self.sq_norm):
            object.__setattr__(self, "sq_norm", float(self.norm) ** 2)
        if math.isnan(self.raw_norm):
            object.__setattr__(self, "raw_norm", float(self.norm))

    def decides_below(self, eps_m: float) -> bool:
        """The stage rule's test ‖∇f‖ ≤ ε_m on the point estimate (False for a NaN norm or an undecided
        measurement)."""
        return bool(self.norm <= eps_m) and not self.undecided

    def to_dict(self) -> dict:
        """JSON-friendly fields (``extra`` included as it is)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class GradientNormMonitor:
    """Base class of the monitors: a ``name`` and :meth:`measure`.

    Subclasses implement :meth:`measure`; :meth:`state_dict` / :meth:`load_state_dict`
    carry whatever a resumed run needs to reproduce the same measurements.
    """

    name: str = "monitor"
    uses_eps_m: bool = False

    def measure(self) -> Measurement:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        """State needed to resume (empty for a stateless monitor)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        if state:
            fail("state", f"{type(self).__name__}.load_state_dict", "an empty dict (this monitor has no state)",
                 state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class DatasetMonitor(GradientNormMonitor):
    """A monitor that computes gradients on the (un-augmented) training set it is given: the options
    of that pass, validated once, and :meth:`chunks` over any subset of it.

    Parameters: ``model``, ``dataset``, ``loss_fn``, ``batch_size``, ``reduction``, ``device``,
    ``transform``, ``num_workers`` as for :class:`~sfotorch.monitors.exact.ExactMonitor`; ``where``
    names the subclass in error messages.
    """

    def __init__(self, model: nn.Module, dataset, loss_fn, *, where: str, batch_size: int, reduction: str | None,
                 device, transform, num_workers: int):
        self.params = trainable_parameters(model, where)
        self.model = model
        self.dataset = as_dataset(dataset, where)
        self.n = len(self.dataset)
        self.loss_fn = loss_fn
        self.reduction = resolve_reduction(loss_fn, reduction, where)
        self.batch_size = check_count(batch_size, "batch_size", where, low=1)
        self.num_workers = check_count(num_workers, "num_workers", where, low=0)
        self.device = torch.device(device) if device is not None else self.params[0].device
        if transform is not None and not callable(transform):
            fail("transform", where, "None or a deterministic callable on a batch of inputs", transform,
                 cls=ParameterTypeError)
        self.transform = transform

    def chunks(self, indices):
        """``(inputs, targets)`` of ``dataset[indices]`` (``None``: all of it), at most ``batch_size`` at a time,
        on the device and transformed."""
        for inputs, targets in iterate_batches(self.dataset, indices, self.batch_size, num_workers=self.num_workers):
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            if self.transform is not None:
                inputs = self.transform(inputs)
            yield inputs, targets


# -- loss convention ---------------------------------------------------------------------------------

def resolve_reduction(loss_fn, reduction: str | None, where: str) -> str:
    """The reduction of ``loss_fn``: ``reduction`` if given, else ``loss_fn.reduction``.

    >>> resolve_reduction(torch.nn.MSELoss(reduction="sum"), None, "ExactMonitor")
    'sum'
    >>> resolve_reduction(torch.nn.MSELoss(reduction="none"), None, "ExactMonitor")
    Traceback (most recent call last):
    ...
    sfotheory.validation.ParameterError: The 'reduction' parameter of ExactMonitor must be one of 'mean', 'sum'. Got reduction='none' instead.
    """
    if not callable(loss_fn):
        fail("loss_fn", where, "a callable loss_fn(outputs, targets)", loss_fn)
    if reduction is None:
        reduction = getattr(loss_fn, "reduction", None)
        if reduction is None:
            fail("reduction", where, "given ('mean' or 'sum') when loss_fn has no .reduction attribute", None,
                 reason="the monitors must know whether loss_fn averages or sums over the batch")
    return check_choice(reduction, REDUCTIONS, "reduction", where)


def trainable_parameters(model: nn.Module, where: str) -> list[torch.Tensor]:
    """The parameters with ``requires_grad=True``: θ in ∇f(θ)."""
    if not isinstance(model, nn.Module):
        fail("model", where, "a torch.nn.Module", model, cls=ParameterTypeError)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        fail("model", where, "a module with at least one parameter that requires grad", type(model).__name__)
    return params


# -- data ---------------------------------------------------------------------------------------------

def as_dataset(data, where: str):
    """A map-style dataset of ``(input, target)`` pairs; a ``(inputs, targets)`` tuple of
    tensors becomes a :class:`~torch.utils.data.TensorDataset`. Refuses an empty dataset."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        if data[0].shape[0] != data[1].shape[0]:
            fail("dataset", where, "a pair (inputs, targets) with as many targets as inputs",
                 f"inputs of {data[0].shape[0]} rows and targets of {data[1].shape[0]} rows")
        data = torch.utils.data.TensorDataset(*data)
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        fail("dataset", where, "a map-style dataset (with __len__ and __getitem__) or a pair of tensors",
             type(data).__name__, cls=ParameterTypeError)
    if len(data) < 1:
        fail("dataset", where, "non-empty (f is the mean over n >= 1 samples)", f"a dataset of length {len(data)}")
    return data


def iterate_batches(dataset, indices, batch_size: int, *, num_workers: int = 0):
    """Yield ``(inputs, targets)`` over ``dataset[indices]`` in order, ``batch_size`` at a time.

    A :class:`~torch.utils.data.TensorDataset` is sliced directly (no collation cost);
    anything else goes through a :class:`~torch.utils.data.DataLoader` over a ``Subset``.
    ``indices`` is a 1-D ``torch.long`` tensor or ``None`` for the whole dataset.
    """
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:
        xs, ys = dataset.tensors
        total = xs.shape[0] if indices is None else indices.numel()
        for start in range(0, total, batch_size):
            if indices is None:
                yield xs[start:start + batch_size], ys[start:start + batch_size]
            else:
                idx = indices[start:start + batch_size]
                yield xs[idx], ys[idx]
        return
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, indices.tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            fail("dataset", "iterate_batches", "a dataset whose items are (input, target) pairs",
                 f"items collated to {type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}")
        yield batch[0], batch[1]


def total_norm(tensors) -> float:
    """‖(g_1, …, g_k)‖₂ of a list of tensors (0.0 for none), in their dtype.

    For tensors of one device and dtype: one fused per-tensor norm and one norm of those — what
    :func:`torch.nn.utils.get_total_norm` computes, without its per-call grouping of the tensors
    by device and dtype (a fixed cost per step, timed by ``benchmarks/bench_train_throughput.py``);
    other lists go to it.
    """
    if not isinstance(tensors, list):
        tensors = list(tensors)
    if not tensors:
        return 0.0
    dtype, device = tensors[0].dtype, tensors[0].device
    if any(t.dtype != dtype or t.device != device for t in tensors):
        return float(torch.nn.utils.get_total_norm(tensors))
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))))


def check_count(value, name: str, where: str, *, low: int, high: int | None = None, reason: str | None = None) -> int:
    """An integer ``low <= value <= high`` (``high`` optional), in the project's message format."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, where, "an integer", value, cls=ParameterTypeError)
    value = int(value)
    if value < low or (high is not None and value > high):
        rule = f">= {low}" if high is None else f"between {low} and {high}"
        fail(name, where, rule, value, reason=reason)
    return value


# -- leave no trace -----------------------------------------------------------------------------------

@contextlib.contextmanager
def leave_no_trace(model: nn.Module, *, eval_mode: bool = True):
    """Run a measurement on ``model`` and restore everything training could observe.

    Inside: the model is in eval mode (``eval_mode=True``), gradients are enabled, and the
    global torch RNG is forked. On exit: every module's ``training`` flag and every buffer
    (BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``) are restored exactly;
    every parameter's ``.grad`` is the same tensor object as before (or ``None``), with its
    values restored if anything wrote to it. The monitors compute gradients with
    :func:`torch.autograd.grad`, which never writes ``.grad``; the guard is a second line of
    defence against hooks or user code. The optimizer is never touched.
    """
    modes = [(mod, mod.training) for mod in model.modules()]
    buffers = [(buf, buf.detach().clone()) for buf in model.buffers()]
    grads = [(p, p.grad, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    try:
        cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            if eval_mode:
                model.eval()
            yield
    finally:
        with torch.no_grad():
            for mod, was_training in modes:
                mod.training = was_training
            for buf, saved in buffers:
                if buf.shape != saved.shape or not torch.equal(buf, saved):
                    buf.copy_(saved)
            for p, g, saved in grads:
                if p.grad is not g:
                    p.grad = g
                if g is not None and not torch.equal(g, saved):
                    g.copy_(saved)
