"""Is the data loader ever the bottleneck of ``sfo train``? Loader samples/s against step samples/s, per b.

Claim: the batch path ``sfo train`` uses — :class:`~sfotorch.sampler.ResizableLoader` over the
engine's :class:`~sfotorch.device.BatchView`, i.e. ``ImageDataset.get_batch`` (one gather, crop/flip when the config
augments, normalisation), the copy to the device when the images are not kept there, and the
channels_last transform — delivers samples far faster than the training step consumes them, at
every batch size Algorithm 2 visits, so a step spends only a small share of its time waiting for
its batch.

Setup: for each b of ``--batch-sizes`` (default 8, 32, 128, 512, 4096: b₀ = 8 growing stage after
stage; each capped at the training-set size n) the config (default
configs/fashion_mnist_adaptive_cpu.toml: the small CNN on 5 000 real Fashion-MNIST images) is built
by :func:`sfotorch.components.build_components` exactly as ``sfo train`` builds it — device, bf16,
channels_last and on-device data from :func:`sfotorch.device.resolve_device`, and the thread count
sfo train sets — with b₀ = b (b_max raised to b where it is below) and no stage change during the
timing (τ, and the period of a periodic schedule, beyond the run; no stall limit). Two timings on
the same batches (the loader is rewound between them, so both take π₀'s batches from the same
position, including the short batch at the end of the epoch when b does not divide n):

(a) loader only: the next batch of the loader, moved to the device and transformed as the step
    does it, ``--steps`` batches after one warm-up batch; the median of ``--loader-repeats`` passes;
(b) training step: ``TrainingLoop.step()`` — fetch, forward, backward, non-finite checks,
    ``optimizer.step()``, stage rule — ``--steps`` steps after one warm-up step. The time the step
    spends in ``next()`` of the loader is clocked on the way: the share of the step spent waiting
    for its batch.

At large b fewer steps are timed: at most ``--max-samples`` samples per block, and at least 2 steps.
Printed per b: samples/s of (a) and (b), step time / loader time on the same samples (how many
times faster the loader is than the step; ≫ 1 means the loader is never the bottleneck) and the
share of the step's time spent waiting for the batch. Everything runs in one thread of control
(no workers, no prefetching), so that share adds to the step's time rather than overlapping it.

The same script runs on a GPU (device auto): it then measures the path sfo train takes there —
uint8 images kept on the GPU and gathered, augmented and normalised there, bf16 autocast,
channels_last (``--set data.on_device="off"``: pinned host batches copied with non_blocking=True) —
and synchronises the device before and after every timed block. There the wait is the host's time
in ``next()``: the gather is queued on the same stream as the step's kernels.

Run: python benchmarks/bench_loader_throughput.py [--config FILE] [--batch-sizes 8,32,128,512,4096]
     [--steps 20] [--max-samples 8192] [--loader-repeats 5] [--set table.key=value ...]
     e.g. --set data.augment=true (crop/flip on every batch) or --set run.threads=2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from sfotheory.validation import ParameterError, fail
from sfotorch.components import build_components
from sfotorch.config import apply_overrides, load_config
from sfotorch.datasets import load_dataset
from sfotorch.device import resolve_device

HERE = os.path.dirname(os.path.abspath(__file__))
WHERE = "bench_loader_throughput"
DEFAULT_BATCH_SIZES = "8,32,128,512,4096"
NO_CHANGE = 10**9      # steps: τ (and a periodic schedule's period) beyond any timed block


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_batch_sizes(text: str) -> list[int]:
    """``"8,32,128"`` → ``[8, 32, 128]`` (each an integer >= 1)."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        fail("--batch-sizes", WHERE, "a comma-separated list of integers >= 1, e.g. 8,32,128", text)
    return sizes


def training_set_size(cfg: dict) -> int:
    """n: the size of the config's training set, loaded as :func:`build_components` loads it."""
    data = cfg["data"]
    return len(load_dataset(data["dataset"], root=data["root"] or None, train=True, augment=False,
                            subset=data["subset"] or None, seed=0, subset_mode=data["subset_mode"]))


def fixed_batch_overrides(cfg: dict, b: int) -> list[str]:
    """``--set`` overrides that start the config's schedule at b and keep it there during the timing."""
    sched = cfg["schedule"]
    overrides = [f"schedule.b0={b}", f"schedule.tau={NO_CHANGE}"]
    if sched.get("b_max") is not None and sched["b_max"] < b:
        overrides.append(f"schedule.b_max={b}")
    if sched.get("period") is not None:
        overrides.append(f"schedule.period={NO_CHANGE}")
    if sched.get("stall_limit"):
        overrides.append("schedule.stall_limit=0")
    return overrides


def select_epoch(comp) -> None:
    """What sfo train does before each step: the augmentation stream of the epoch the next batch is from."""
    loader = comp.loader
    comp.train_data.set_epoch(loader.epoch + (1 if loader.position >= loader.n else 0))


def batches_of(loader):
    """The loader's batches across epoch ends, as TrainingLoop takes them."""
    while True:
        yield from loader


class FetchClock:
    """Stands in for the loader that TrainingLoop iterates: the same batches, plus the seconds spent in ``next()``."""

    def __init__(self, loader):
        self.loader = loader
        self.seconds = 0.0

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            t = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - t
            yield batch

    def __getattr__(self, name):          # last_batch_len, batch_size, … of the wrapped loader
        return getattr(self.loader, name)


def time_loader(comp, steps: int, device: torch.device) -> tuple[float, int]:
    """(seconds, samples) of ``steps`` batches of the loader alone, moved to ``device`` and transformed
    as the step does it, after one warm-up batch; the loader is rewound to where it started."""
    start = comp.loader.state_dict()
    source = batches_of(comp.loader)

    def take() -> int:
        select_epoch(comp)
        x, y = next(source)
        x, y = x.to(device), y.to(device)           # what GradientAccumulator does with a batch
        if comp.transform is not None:
            x = comp.transform(x)
        return comp.loader.last_batch_len

    try:
        take()
        _sync(device)
        t = time.perf_counter()
        samples = sum(take() for _ in range(steps))
        _sync(device)
        return time.perf_counter() - t, samples
    finally:
        comp.loader.load_state_dict(start)


def time_steps(comp, steps: int, device: torch.device) -> tuple[float, int, float]:
    """(seconds, samples, seconds waiting in ``next()``) of ``steps`` TrainingLoop steps after one warm-up step."""
    clock = FetchClock(comp.loader)
    comp.loop.loader = clock
    select_epoch(comp)
    comp.loop.step()
    clock.seconds = 0.0
    _sync(device)
    t = time.perf_counter()
    samples = 0
    for _ in range(steps):
        select_epoch(comp)
        samples += comp.loop.step().samples
    _sync(device)
    return time.perf_counter() - t, samples, clock.seconds


def measure(cfg: dict, env: dict, b: int, steps: int, loader_repeats: int) -> dict:
    """Loader-only and training-step timings at batch size ``b`` (see the module docstring)."""
    cfg_b = apply_overrides(cfg, fixed_batch_overrides(cfg, b))
    comp = build_components(cfg_b, seed=0, env=env)
    device = env["device"]
    passes = [time_loader(comp, steps, device) for _ in range(loader_repeats)]
    loader_s = statistics.median(s for s, _ in passes)
    loader_samples = passes[0][1]
    step_s, step_samples, wait_s = time_steps(comp, steps, device)
    if comp.scheduler.stage != 0 or comp.loader.batch_size != b:
        raise RuntimeError(f"{WHERE}: the schedule left b = {b} during the timing (now stage {comp.scheduler.stage}, "
                           f"b = {comp.loader.batch_size}); drop the --set overrides that re-enable stage changes")
    if step_samples != loader_samples:
        raise RuntimeError(f"{WHERE}: at b = {b} the loader pass took {loader_samples} samples and the steps "
                           f"{step_samples}; they must time the same batches")
    return {"b": b, "steps": steps, "samples": step_samples, "loader_s": loader_s, "step_s": step_s,
            "wait_s": wait_s, "loader_rate": step_samples / loader_s, "step_rate": step_samples / step_s,
            "step_over_loader": step_s / loader_s, "wait_share": wait_s / step_s}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(HERE, "..", "configs", "fashion_mnist_adaptive_cpu.toml"))
    ap.add_argument("--batch-sizes", default=DEFAULT_BATCH_SIZES, help="comma-separated, each capped at n")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (and loader batches) per batch size")
    ap.add_argument("--max-samples", type=int, default=8192,
                    help="at most this many samples per timed block (fewer steps at large b, at least 2)")
    ap.add_argument("--loader-repeats", type=int, default=5, help="loader-only passes per batch size (median)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE")
    args = ap.parse_args(argv)
    requested = parse_batch_sizes(args.batch_sizes)
    for name, value in (("--steps", args.steps), ("--max-samples", args.max_samples),
                        ("--loader-repeats", args.loader_repeats)):
        if value < 1:
            fail(name, WHERE, ">= 1", value)
    cfg = load_config(args.config, args.overrides)
    env = resolve_device(cfg)
    torch.set_num_threads(env["threads"])
    n = training_set_size(cfg)
    sizes = sorted({min(b, n) for b in requested})
    capped = sorted(b for b in requested if b > n)
    data = cfg["data"]
    print(f"{cfg['model']['name']} on {data['dataset']} (n = {n}, augment {data['augment']}), device "
          f"{env['device']}, threads {env['threads']}, amp {env['amp']}, channels_last {env['channels_last']}, "
          f"data on device {env['on_device']}, compile {cfg['run']['compile']}")
    print(f"schedule {cfg['schedule']['policy']} started at b0 = b, no stage change during the timing; "
          f"loader: median of {args.loader_repeats} passes over the steps' batches"
          + (f"; batch sizes {capped} capped at n = {n}" if capped else ""))
    print(f"{'b':>6}{'steps':>7}{'samples':>9}{'loader samples/s':>19}{'step samples/s':>17}"
          f"{'step/loader':>13}{'waiting for batch':>19}")
    rows = []
    for b in sizes:
        steps = max(2, min(args.steps, args.max_samples // b))
        row = measure(cfg, env, b, steps, args.loader_repeats)
        rows.append(row)
        print(f"{b:>6}{steps:>7}{row['samples']:>9}{row['loader_rate']:>19.0f}{row['step_rate']:>17.0f}"
              f"{row['step_over_loader']:>12.0f}×{100 * row['wait_share']:>18.2f}%", flush=True)
    slowest = min(rows, key=lambda r: r["step_over_loader"])
    most_wait = max(rows, key=lambda r: r["wait_share"])
    print(f"the loader is at least {slowest['step_over_loader']:.0f}× faster than the step (b = {slowest['b']}); "
          f"a step waits at most {100 * most_wait['wait_share']:.2f}% of its time for its batch (b = {most_wait['b']})")
    return {"device": str(env["device"]), "threads": env["threads"], "amp": env["amp"],
            "channels_last": env["channels_last"], "data_on_device": env["on_device"], "n": n, "rows": rows}


if __name__ == "__main__":
    try:
        main()
    except ParameterError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
