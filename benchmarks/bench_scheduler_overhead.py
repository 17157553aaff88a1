"""Overhead of StageScheduler + ResizableLoader against a plain torch loop over the same batches.

Claim: switching an ordinary loop to the scheduler and the resizable loader costs ≤ 2% wall time
(target ratio ≤ 1.02) — the stage rule runs once per step in Python, the loader re-reads b per batch.

Setup: an MLP (784 → width → width → 10, ReLU, cross-entropy) on generated data, plain SGD,
one batch size b for the whole run, num_workers=0 by default. Both loops visit exactly the same
batches (the plain DataLoader gets the permutation π_e of :func:`sfotorch.sampler.epoch_permutation`)
and start from the same weights, so they also end with the same weights (checked). Epochs of the
two loops alternate (ABBA...); the median and the best epoch time of each are reported, with the
ratios, in wall time and in process CPU time.

Epoch times on a shared 2-core machine drift by several percent between epochs, more than the 2%
under test, so the estimate the function returns comes from a second, *step-paired* run: both
loops advance one step at a time, alternately (the order flips every step), each step timed on
its own (fetch the batch, zero_grad, forward, backward, optimizer.step, and for the scheduler loop
scheduler.step). A slow spell of the machine then hits both steps of a pair alike and cancels in
their difference d_t = sfo_t − plain_t; the ratio is 1 + mean(d)/mean(plain), reported with a 95%
interval from the standard error of mean(d) over the pairs.
Monitor cost is not part of this benchmark (τ is larger than the run, so no check happens).

Run: python benchmarks/bench_scheduler_overhead.py [--n 8192] [--batch-size 128] [--width 512]
     [--epochs 8] [--workers 0] [--policy adaptive_exponential|constant]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from sfotorch.sampler import ResizableLoader, epoch_permutation
from sfotorch.scheduler import MeasuredNorm, StageScheduler


class FixedOrder(torch.utils.data.Sampler):
    """Yields π_e of the current epoch: the plain loop's way of visiting the same samples."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __iter__(self):
        yield from epoch_permutation(self.n, self.seed, self.epoch).tolist()

    def __len__(self):
        return self.n


class NeverBelow:
    """A monitor that never triggers (the overhead of a check itself is not measured here)."""

    name = "never"

    def measure(self):
        return MeasuredNorm(norm=1e9, cost=0)


def make_model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def train_step(model, opt, batch, loss_fn, scheduler=None) -> None:
    """One ordinary step; with a scheduler, ``scheduler.step(loss=…)`` after ``opt.step()``."""
    xb, yb = batch
    opt.zero_grad()
    loss = loss_fn(model(xb), yb)
    loss.backward()
    opt.step()
    if scheduler is not None:
        scheduler.step(loss=loss)


def train_epoch(model, opt, loader, loss_fn, scheduler=None) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in loader:
        train_step(model, opt, batch, loss_fn, scheduler)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8192, help="training samples")
    p.add_argument("--batch-size", type=int, default=128, help="b (samples per step)")
    p.add_argument("--width", type=int, default=512, help="MLP hidden width")
    p.add_argument("--epochs", type=int, default=8, help="epochs per loop")
    p.add_argument("--workers", type=int, default=0, help="num_workers of both loaders")
    p.add_argument("--policy", default="adaptive_exponential", choices=["adaptive_exponential", "constant"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier timings)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(args.seed)
    data = torch.utils.data.TensorDataset(torch.randn(args.n, 784, generator=g),
                                          torch.randint(0, 10, (args.n,), generator=g))
    loss_fn = nn.CrossEntropyLoss()
    b, lr = args.batch_size, 0.05
    steps_per_epoch = -(-args.n // b)

    plain_model = make_model(args.width)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=lr)
    order = FixedOrder(args.n, args.seed)
    plain_loader = torch.utils.data.DataLoader(data, batch_size=b, sampler=order, num_workers=args.workers)

    sfo_model = make_model(args.width)
    sfo_opt = torch.optim.SGD(sfo_model.parameters(), lr=lr)
    sfo_loader = ResizableLoader(data, batch_size=b, seed=args.seed, num_workers=args.workers)
    if args.policy == "constant":
        sched = StageScheduler(sfo_opt, "constant", b0=b, eta0=lr, loader=sfo_loader)
    else:
        sched = StageScheduler(sfo_opt, "adaptive_exponential", b0=b, eta0=lr, eps0=0.5, delta=2, gamma=1.4,
                               tau=steps_per_epoch * (2 * args.epochs + 1) + 1, b_max=args.n, loader=sfo_loader,
                               monitor=NeverBelow())

    # warm-up epoch (not timed) for both, then alternate the order every epoch
    times = {"plain": ([], []), "sfo": ([], [])}      # (wall, cpu) seconds per epoch
    for epoch in range(args.epochs + 1):
        order.epoch = epoch
        runs = [("plain", plain_model, plain_opt, plain_loader, None), ("sfo", sfo_model, sfo_opt, sfo_loader, sched)]
        if epoch % 2:
            runs.reverse()
        for name, model, opt, loader, s in runs:
            wall, cpu = train_epoch(model, opt, loader, loss_fn, s)
            if epoch:
                times[name][0].append(wall)
                times[name][1].append(cpu)

    same = all(torch.equal(a, c) for a, c in zip(plain_model.parameters(), sfo_model.parameters()))
    print(f"setup: n={args.n} b={b} MLP width={args.width} workers={args.workers} policy={args.policy} "
          f"epochs={args.epochs} ({steps_per_epoch} steps each), torch threads={torch.get_num_threads()}")
    print(f"same batches, same final weights: {same}")
    ratios = {}
    for k, clock in enumerate(("wall", "cpu")):
        plain, sfo = times["plain"][k], times["sfo"][k]
        pm, sm = statistics.median(plain), statistics.median(sfo)
        ratios[clock] = (sm / pm, min(sfo) / min(plain))
        print(f"[{clock:4s}] plain torch loop         : {pm * 1e3:8.1f} ms/epoch median, {min(plain) * 1e3:8.1f} best")
        print(f"[{clock:4s}] StageScheduler+Resizable : {sm * 1e3:8.1f} ms/epoch median, {min(sfo) * 1e3:8.1f} best")
        print(f"[{clock:4s}] ratio sfo/plain          : {ratios[clock][0]:.4f} median, {ratios[clock][1]:.4f} best-of "
              f"(target <= 1.02; {1e6 * (sm - pm) / steps_per_epoch:+.1f} us/step)")

    # step-paired: both loops one step at a time, alternately, every step timed (see the module doc)
    plain_t, sfo_t = [], []
    for epoch in range(args.epochs + 1, 2 * args.epochs + 1):
        order.epoch = epoch
        plain_it, sfo_it = iter(plain_loader), iter(sfo_loader)
        for t in range(steps_per_epoch):
            pair = [("plain", plain_model, plain_opt, plain_it, None), ("sfo", sfo_model, sfo_opt, sfo_it, sched)]
            if t % 2:
                pair.reverse()
            for name, model, opt, it, s_ in pair:
                t0 = time.perf_counter()
                train_step(model, opt, next(it), loss_fn, s_)
                (plain_t if name == "plain" else sfo_t).append(time.perf_counter() - t0)
        for it in (plain_it, sfo_it):          # end both epochs (the resizable loader's epoch counter)
            for _ in it:
                pass
    diffs = [a - b_ for a, b_ in zip(sfo_t, plain_t)]
    mean_plain, mean_d = statistics.fmean(plain_t), statistics.fmean(diffs)
    se_d = statistics.stdev(diffs) / math.sqrt(len(diffs))
    ratio = 1.0 + mean_d / mean_plain
    print(f"[step-paired] {len(diffs)} pairs: plain {1e6 * mean_plain:.1f} us/step, sfo − plain "
          f"{1e6 * mean_d:+.1f} ± {1e6 * 1.96 * se_d:.1f} us/step (95%): ratio {ratio:.4f} "
          f"[{1 + (mean_d - 1.96 * se_d) / mean_plain:.4f}, {1 + (mean_d + 1.96 * se_d) / mean_plain:.4f}] "
          f"(target <= 1.02)")

    # the parts, without the model: iterating each loader, and scheduler.step() alone
    def best_us(fn, reps=5):
        best = math.inf
        for _ in range(reps):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        return 1e6 * best / steps_per_epoch

    plain_iter = best_us(lambda: [None for _ in plain_loader])
    sfo_iter = best_us(lambda: [None for _ in sfo_loader])
    step_alone = best_us(lambda: [sched.step() for _ in range(steps_per_epoch)])
    print(f"parts (cpu, best of 5): DataLoader {plain_iter:.1f} us/batch, ResizableLoader {sfo_iter:.1f} us/batch, "
          f"StageScheduler.step {step_alone:.1f} us/step")
    if not same:
        raise SystemExit("the two loops did not train identically: the comparison is not over the same batches")
    return ratio


if __name__ == "__main__":
    main()
