"""The per-rank body of the 2-process gloo tests (tests/torch/test_distributed.py).

``worker(rank, world_size, port, outdir)`` joins a gloo group on 127.0.0.1:port and writes
``outdir/rank{r}.pt`` with what the test compares: the shards the rank drew, the moments it
reduced, and a short adaptive-schedule training run (final parameters, transitions, rule state),
after checking inside the group that all ranks agree. ``setup()`` builds the same run for any
world size, so the test can run the 1-process reference with accumulation.
"""

import datetime
import os

import torch
import torch.distributed as dist
from torch import nn

from sfotorch.accumulate import GradientAccumulator, micro_batch_sizes
from sfotorch.distributed import (
    DistributedContext,
    DistributedExactMonitor,
    ShardedLoader,
    all_reduce_accumulated,
    broadcast_parameters,
    check_ranks_agree,
    shard_of,
)
from sfotorch.loop import DivergedError, TrainingLoop
from sfotorch.sampler import ResizableLoader
from sfotorch.scheduler import StageScheduler

N, D, CLASSES = 96, 5, 3
SCHEDULE = {"b0": 5, "eta0": 0.2, "eps0": 0.25, "delta": 2, "gamma": 1.2, "tau": 2, "b_max": 40}
MAX_MICRO_BATCH = 3
STEPS = 40
RESUME_STEPS = 6
# (global batch size to set before the step, or None): shards across a size change and an epoch end
SHARD_SIZES = [5, 5, None, 3, 7, None, None, 4, 1, 6, 6, 6, 2]
SHARD_N = 11


def data():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = (x[:, 0] - x[:, 1] > 0).long() + (x[:, 2] > 1.0).long()
    return x, y


def setup(context: DistributedContext, workdir=None):
    torch.manual_seed(0)
    x, y = data()
    model = nn.Sequential(nn.Linear(D, 12), nn.Tanh(), nn.Linear(12, CLASSES)).double()
    broadcast_parameters(model, context)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    base = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=SCHEDULE["b0"], seed=11)
    loader = ShardedLoader(base, context) if context.is_distributed else base
    loss_fn = nn.CrossEntropyLoss()
    monitor = DistributedExactMonitor(model, (x, y), loss_fn, context=context, batch_size=32)
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=monitor, **SCHEDULE)
    loop = TrainingLoop(model, opt, sched, loader, loss_fn, max_micro_batch=MAX_MICRO_BATCH, context=context,
                        checkpoint_path=None if workdir is None else os.path.join(workdir, "ddp_ckpt.pt"))
    return model, sched, loop


def shards(context):
    """Local indices and global lengths of each step of SHARD_SIZES over a dataset of SHARD_N."""
    ds = torch.utils.data.TensorDataset(torch.arange(SHARD_N))
    view = ShardedLoader(ResizableLoader(ds, batch_size=5, seed=2), context)
    it = iter(view)
    out = []
    for b in SHARD_SIZES:
        if b is not None:
            view.batch_size = b
        try:
            batch = next(it)
        except StopIteration:
            it = iter(view)
            batch = next(it)
        local = [] if batch is None else batch[0].tolist()
        out.append({"local": local, "global_len": view.last_batch_len, "epoch": view.epoch,
                    "position": view.position})
    return out


def moments(context):
    """Reduce one step's micro-batch sums over ranks; rank 0 also recomputes them over all ranks' groups."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(D, 4), nn.Tanh(), nn.Linear(4, CLASSES)).double()
    x, y = data()
    x, y = x[:13], y[:13]
    acc = GradientAccumulator(model, nn.CrossEntropyLoss(), max_micro_batch=3)
    idx = torch.arange(13)
    local = shard_of(idx, context.rank, context.world_size)
    reduced = all_reduce_accumulated(acc.accumulate(x[local], y[local]), context)
    out = {"samples": reduced.samples, "micro_batches": reduced.micro_batches, "weighted_sq": reduced.weighted_sq,
           "trace_cov": reduced.trace_cov(), "sq_norm": reduced.sq_norm(), "loss_sum": reduced.loss_sum}
    if context.rank == 0:   # the same groups, computed in one process
        sums, weighted, k = 0.0, 0.0, 0
        for r in range(context.world_size):
            part = shard_of(idx, r, context.world_size)
            start = 0
            for m in micro_batch_sizes(len(part), 3):
                sel = part[start:start + m]
                start += m
                g = torch.autograd.grad(nn.CrossEntropyLoss(reduction="sum")(model(x[sel]), y[sel]),
                                        list(model.parameters()))
                flat = torch.cat([t.reshape(-1) for t in g])
                sums = sums + flat
                weighted += float(flat @ flat) / m
                k += 1
        mean = sums / 13
        out["reference"] = {"micro_batches": k, "weighted_sq": weighted, "sq_norm": float(mean @ mean),
                            "trace_cov": (weighted - 13 * float(mean @ mean)) / (k - 1)}
    return out


def worker(rank, world_size, port, outdir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        ctx = DistributedContext.current()
        result = {"shards": shards(ctx), "moments": moments(ctx)}
        model, sched, loop = setup(ctx, outdir)
        norms = []
        for _ in range(STEPS):
            loop.step()
            norms.append(sched.last_norm)
            # every rank holds the same rule state after every step (a gathered comparison)
            check_ranks_agree(ctx, sched.state_dict()["state"], f"the rule state after step {loop.steps}")
        loop.save()                                      # a checkpoint written by 2 ranks
        states = ctx.all_gather_object({"state": sched.state.to_dict(), "transitions": sched.transitions,
                                        "params": [p.detach().clone() for p in model.parameters()],
                                        "norms": norms})
        result.update({"model": {k: v.clone() for k, v in model.state_dict().items()},
                       "transitions": list(sched.transitions), "norms": norms,
                       "state": sched.state.to_dict(), "sfo": sched.account.totals(), "gathered": states})
        # resume under DDP: a fresh run loaded from the 2-rank checkpoint continues bit-identically
        for _ in range(RESUME_STEPS):
            loop.step()
        fresh_model, fresh_sched, fresh = setup(ctx, outdir)
        result["resumed"] = fresh.resume() and fresh.steps == STEPS
        for _ in range(RESUME_STEPS):
            fresh.step()
        result["resume_equal"] = all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh_model.parameters())) \
            and sched.state == fresh_sched.state
        # a NaN on rank 1's shard only: the all-reduced sums carry it, so every rank stops at the same step
        plain_loss = fresh.accumulator.loss_fn
        fresh.accumulator.loss_fn = (lambda out, y: plain_loss(out, y) * float("nan")) if rank == 1 else plain_loss
        try:
            fresh.step()
            stopped = None
        except DivergedError as err:
            stopped = str(err).split(":")[0]
        result["nan_stop"] = ctx.all_gather_object(stopped)
        torch.save(result, os.path.join(outdir, f"rank{rank}.pt"))
        dist.barrier()        # no rank tears its connections down while the other is still in a collective
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: about 1 run in 10, a gloo thread aborted the process
    # there ("terminate called without an active exception", no Python frame on the stack) after
    # every result had been written and the group destroyed. Only reached when everything above passed.
    os._exit(0)
