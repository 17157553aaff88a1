r"""Data-parallel training on ``torch.distributed``, explicit: shards, exact global sums, one decision.

W processes (ranks r = 0, …, W − 1) train one model on one *global* batch B of b samples per step.
Nothing here wraps the model in ``DistributedDataParallel``: the gradient is summed by hand so
that the combination is exact and visible.

Conventions (stated once, here)
-------------------------------
* **Shards.** The global batch is the loader's next b positions of the epoch order π_e,
  B = π_e[p : p + b] (:class:`~sfotorch.sampler.ResizableLoader`: the state is global and the
  same on every rank). Rank r takes the positions p + r, p + r + W, p + r + 2W, … of it, i.e.
  ``B[r::W]``, which holds

  .. math::  b_r = \lfloor b/W \rfloor + [\,r < b \bmod W\,]

  samples (Σ_r b_r = b; a short final batch with b < W leaves some ranks empty for that step).
  The shards of one batch are disjoint and cover it, so within an epoch no sample is repeated or
  dropped, also across a batch-size change: b is read when the batch is drawn
  (:class:`ShardedLoader`). Each rank splits its shard into micro-batches of at most c samples
  (:mod:`sfotorch.accumulate`).
* **Exact global mean.** Every rank computes the float64 sums of its micro-batches
  (Σ_j S_j, Σ f_i, the sample count, Σ_j ‖S_j‖²/m_j, the micro-batch count) and they are
  all-reduced with SUM (:func:`all_reduce_accumulated`); the update uses
  g_B = (Σ_r Σ_{j∈r} S_j) / b — each micro-batch's summed loss over the *global* b. Plain DDP
  instead *averages* per-rank mean gradients, (1/W) Σ_r g_r, which weights the samples of a
  smaller shard more when W does not divide b; that is avoided here.
* **Monitors.** The exact norm comes from all-reduced *gradient vectors*
  (:class:`DistributedExactMonitor`: rank r sums the dataset indices r, r + W, …; the float64
  sums are all-reduced; ‖∇f‖ = ‖Σ/n‖); the debiased estimate from all-reduced *sums of
  squares* Σ_j ‖S_j‖²/m_j over every rank's micro-batches (``AccumulatedGradient.trace_cov`` of
  the reduced record). The norm used by the rule is broadcast from rank 0, so every rank feeds
  the identical value to its own :class:`~sfotorch.scheduler.StageScheduler` and every rank
  takes the same stage decision (:func:`check_ranks_agree` verifies it).
* **SFO is global.** :attr:`ShardedLoader.last_batch_len` is the global batch size, which is what
  the scheduler counts; the exact monitor reports n, not n/W.

Launch with ``torchrun`` (NCCL on GPUs)
---------------------------------------
One process per GPU; ``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
and ``MASTER_PORT``::

    torchrun --standalone --nproc_per_node=8 train.py                  # one node, 8 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \
             --rdzv_endpoint=HOST:29500 train.py                        # two nodes

and in ``train.py``::

    dist.init_process_group("nccl")                  # "gloo" on CPU
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    ctx = DistributedContext.current()
    model = Net().cuda(); broadcast_parameters(model, ctx)     # same θ₀ on every rank
    loader = ShardedLoader(ResizableLoader(train_set, batch_size=8, seed=0), ctx)
    monitor = DistributedExactMonitor(model, train_set, loss_fn, context=ctx)
    scheduler = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=monitor, ...)
    loop = TrainingLoop(model, opt, scheduler, loader, loss_fn, max_micro_batch=256, context=ctx, ...)

All tensors that are all-reduced live on the parameters' device, so the same code runs with gloo
on CPU (the tests: two processes, ``torch.multiprocessing`` spawn) and with NCCL on GPUs.
Every rank runs its own scheduler (same inputs, same decisions); give a scheduler ``log`` on rank 0
only. Checkpoints are written by rank 0 and read by every rank, so their folder must be one all
ranks see (a shared file system) for a multi-node resume.

>>> sharded_sizes(10, 4)
[3, 3, 2, 2]
>>> sharded_sizes(1, 2)          # a short final batch of one sample: rank 1 is idle for that step
[1, 0]
"""

from __future__ import annotations

import hashlib
import math
import pickle
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sfotheory.validation import check_integer, fail

from .accumulate import AccumulatedGradient, summed_gradient
from .monitors.base import (
    GradientNormMonitor,
    Measurement,
    as_dataset,
    check_count,
    iterate_batches,
    leave_no_trace,
    resolve_reduction,
    trainable_parameters,
)

__all__ = [
    "DistributedContext",
    "DistributedExactMonitor",
    "ShardedLoader",
    "all_reduce_accumulated",
    "broadcast_parameters",
    "check_ranks_agree",
    "shard_of",
    "sharded_sizes",
]


@dataclass(frozen=True)
class DistributedContext:
    """Rank r, world size W and process group of this process (W = 1: no collective is called)."""

    rank: int = 0
    world_size: int = 1
    group: object = None

    def __post_init__(self):
        where = "DistributedContext"
        w = check_integer(self.world_size, "world_size", where, minimum=1)
        r = check_integer(self.rank, "rank", where, minimum=0)
        if r >= w:
            fail("rank", where, f"< world_size = {w}", r)
        if w > 1 and not (dist.is_available() and dist.is_initialized()):
            fail("world_size", where, "1 unless torch.distributed.init_process_group() was called", w)

    @classmethod
    def current(cls, group=None) -> DistributedContext:
        """The context of the initialised default (or given) process group; (0, 1) without one."""
        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(group), world_size=dist.get_world_size(group), group=group)
        return cls()

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Σ over ranks, in place."""
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s tensor on every rank, in place."""
        if self.is_distributed:
            dist.broadcast(tensor, src=src, group=self.group)
        return tensor

    def all_gather_object(self, obj) -> list:
        """``[obj of rank 0, …, obj of rank W − 1]`` (picklable objects)."""
        if not self.is_distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier(group=self.group)


def _context(context) -> DistributedContext:
    if context is None:
        return DistributedContext.current()
    if not isinstance(context, DistributedContext):
        fail("context", "sfotorch.distributed", "a DistributedContext or None", type(context).__name__)
    return context


def sharded_sizes(batch_size: int, world_size: int) -> list[int]:
    """b_r = ⌊b/W⌋ + [r < b mod W] for r = 0, …, W − 1."""
    b = check_integer(batch_size, "batch_size", "sharded_sizes", minimum=0)
    w = check_integer(world_size, "world_size", "sharded_sizes", minimum=1)
    return [b // w + (r < b % w) for r in range(w)]


def shard_of(indices, rank: int, world_size: int):
    """Rank r's part of a global batch: ``indices[r::W]`` (a slice of a tensor or a sequence)."""
    return indices[rank::world_size]


# -- data --------------------------------------------------------------------------------------------

class ShardedLoader:
    r"""Rank r's view of a :class:`~sfotorch.sampler.ResizableLoader`: shards of each global batch.

    The wrapped loader keeps the global state (seed, epoch, position in samples, b) and is the
    same on every rank; this view reads the next global batch π_e[p : p + b], yields the
    collated samples of ``B[r::W]`` (``None`` when the shard is empty) and moves the wrapped
    loader on by the *global* batch length through its ``load_state_dict``. Epoch ends and
    ``drop_last`` behave as in the wrapped loader. The scheduler is given this view: it sets
    :attr:`batch_size` (the global b) and counts :attr:`last_batch_len` (the global length).

    Samples are fetched in the calling process (the wrapped loader's ``num_workers`` are not
    used by the view); ``state_dict()`` is the wrapped loader's, so a checkpoint written with W
    ranks holds a global position that any W can resume from.
    """

    def __init__(self, loader, context: DistributedContext | None = None):
        where = "ShardedLoader"
        for name in ("epoch_order", "state_dict", "load_state_dict", "batch_size", "n", "dataset"):
            if not hasattr(loader, name):
                fail("loader", where, "a ResizableLoader (with epoch_order, state_dict, batch_size, n)",
                     type(loader).__name__, reason=f"it has no {name!r}")
        self.loader = loader
        self.context = _context(context)
        self.rank = self.context.rank
        self.world_size = self.context.world_size
        self.last_batch_len = 0
        self.last_local_len = 0
        self.last_indices: list[int] = []
        self._generation = 0

    # the global state, read through ----------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.loader.n

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    @property
    def position(self) -> int:
        return self.loader.position

    @property
    def batch_size(self) -> int:
        """The global b of the next batch (set by the scheduler; takes effect at the next batch)."""
        return self.loader.batch_size

    @batch_size.setter
    def batch_size(self, b: int) -> None:
        self.loader.batch_size = b

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)
        self.last_batch_len = self.last_local_len = 0
        self._generation += 1

    def __len__(self) -> int:
        return len(self.loader)

    # iteration ---------------------------------------------------------------------------------------
    def _move(self, **changes) -> None:
        self.loader.load_state_dict({**self.loader.state_dict(), **changes})

    def __iter__(self):
        self._generation += 1
        if self.loader.position >= self.loader.n:
            self._move(epoch=self.loader.epoch + 1, position=0)
        return self._iterate(self._generation)

    def _iterate(self, generation: int):
        ld = self.loader
        order = ld.epoch_order(ld.epoch)
        epoch = ld.epoch
        while True:
            if generation != self._generation or ld.epoch != epoch:
                raise RuntimeError("this ShardedLoader iterator was superseded by a newer iter() or by "
                                   "load_state_dict(); take a new iterator with iter(loader)")
            p, n, b = ld.position, ld.n, ld.batch_size
            left = n - p
            if left <= 0:
                break
            take = min(b, left)
            if take < b and getattr(ld, "drop_last", False):
                self._move(position=n, dropped=ld.state_dict().get("dropped", 0) + left)
                break
            local = shard_of(order[p:p + take], self.rank, self.world_size).tolist()
            batch = self._fetch(local) if local else None
            st = ld.state_dict()
            self._move(position=p + take, samples_delivered=st.get("samples_delivered", 0) + take)
            self.last_batch_len = take
            self.last_local_len = len(local)
            self.last_indices = local
            yield batch
        if generation == self._generation:
            self._move(epoch=epoch + 1, position=0)

    def _fetch(self, indices: list):
        dataset = self.loader.dataset
        getitems = getattr(dataset, "__getitems__", None)
        data = getitems(indices) if callable(getitems) else [dataset[i] for i in indices]
        collate = getattr(self.loader, "collate_fn", None) or torch.utils.data.default_collate
        return collate(data)


# -- gradients -----------------------------------------------------------------------------------------

def all_reduce_accumulated(acc: AccumulatedGradient, context: DistributedContext | None = None
                           ) -> AccumulatedGradient:
    """The SUM over ranks of every field of ``acc`` (one flat float64 all-reduce); W = 1: ``acc``.

    ``micro_sizes`` stays this rank's own list.
    """
    ctx = _context(context)
    if not ctx.is_distributed:
        return acc
    flat = torch.cat([acc.flat, torch.tensor([acc.loss_sum, acc.samples, acc.weighted_sq, acc.micro_batches],
                                             dtype=torch.float64, device=acc.flat.device)])
    ctx.all_reduce_sum_(flat)
    size = acc.flat.numel()
    loss_sum, samples, weighted_sq, micro = flat[size:].tolist()
    return AccumulatedGradient(flat=flat[:size].clone(), shapes=list(acc.shapes), loss_sum=loss_sum,
                               samples=int(samples), weighted_sq=weighted_sq, micro_batches=int(micro),
                               micro_sizes=list(acc.micro_sizes))


def broadcast_parameters(model: torch.nn.Module, context: DistributedContext | None = None, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (the same θ₀ everywhere)."""
    ctx = _context(context)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            ctx.broadcast_(t.data, src=src)


def _digest(obj) -> str:
    return hashlib.sha256(pickle.dumps(obj, protocol=4)).hexdigest()


def check_ranks_agree(context: DistributedContext | None, obj, what: str) -> None:
    """Raise if ``obj`` (picklable: a state dict, a list of floats, …) differs between ranks.

    Compares SHA-256 digests of the pickled object gathered from all ranks; the message names
    ``what`` and the ranks that differ from rank 0. Collective: every rank must call it.
    """
    ctx = _context(context)
    digests = ctx.all_gather_object(_digest(obj))
    bad = [r for r, d in enumerate(digests) if d != digests[0]]
    if bad:
        raise RuntimeError(f"ranks diverged: {what} on ranks {bad} differs from rank 0 "
                           f"(digests {[d[:12] for d in digests]})")


# -- the exact monitor over W ranks ------------------------------------------------------------------

class DistributedExactMonitor(GradientNormMonitor):
    r"""‖∇f(θ)‖ over the whole dataset, the n gradient evaluations split over W ranks.

    Rank r sums S_r = Σ_{i ≡ r (mod W)} ∇f_i in float64 (eval mode, leaving no trace, as
    :class:`~sfotorch.monitors.ExactMonitor`); the S_r are all-reduced and
    ‖∇f‖ = ‖Σ_r S_r / n‖ is broadcast from rank 0, so every rank returns the identical number.
    Cost: n (global). With W = 1 it equals :class:`~sfotorch.monitors.ExactMonitor`.
    Collective: every rank must call :meth:`measure` on the same step.
    """

    def __init__(self, model, dataset, loss_fn, *, context: DistributedContext | None = None,
                 batch_size: int = 256, reduction: str | None = None, device=None, transform=None,
                 name: str = "exact"):
        where = "DistributedExactMonitor"
        self.params = trainable_parameters(model, where)
        self.model = model
        self.dataset = as_dataset(dataset, where)
        self.loss_fn = loss_fn
        self.reduction = resolve_reduction(loss_fn, reduction, where)
        self.batch_size = check_count(batch_size, "batch_size", where, low=1)
        self.context = _context(context)
        self.device = torch.device(device) if device is not None else self.params[0].device
        self.transform = transform
        self.name = name
        self.n = len(self.dataset)

    def measure(self) -> Measurement:
        ctx = self.context
        acc = AccumulatedGradient.zeros(self.params)
        indices = torch.arange(ctx.rank, self.n, ctx.world_size)
        with leave_no_trace(self.model):
            if indices.numel():
                for x, y in iterate_batches(self.dataset, indices, self.batch_size):
                    x, y = x.to(self.device), y.to(self.device)
                    if self.transform is not None:
                        x = self.transform(x)
                    grads, _ = summed_gradient(self.model, self.params, self.loss_fn, self.reduction, x, y)
                    acc.add(grads, x.shape[0])
        acc = all_reduce_accumulated(acc, ctx)
        sq = acc.sq_norm(self.n)
        value = torch.tensor([sq], dtype=torch.float64, device=self.device)
        sq = float(ctx.broadcast_(value)[0])
        norm = math.sqrt(sq) if sq >= 0 else math.nan
        return Measurement(norm=norm, cost=self.n, monitor=self.name, sq_norm=sq, raw_norm=norm, lower=norm,
                           upper=norm, margin=0.0, confidence=1.0, samples_used=self.n,
                           extra={"world_size": ctx.world_size})
