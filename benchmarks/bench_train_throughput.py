"""Samples per second of ``sfo train``'s training step against a plain torch loop (target ratio ≤ 1.05).

Claim: the machinery ``sfo train`` puts around a step — the resizable loader, the accumulator
(micro-batch cap ≥ b: one plain forward/backward per step, plus ‖g_B‖ for the non-finite policy),
the non-finite checks, the stage rule and its SFO account — costs at most 5% of the samples per second
of an ordinary loop ``zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()``.

Setup: the model, data and batch of a config (default: configs/fashion_mnist_constant_cpu.toml,
the small CNN on real Fashion-MNIST at b = 128), built by :func:`sfotorch.components.build_components`
exactly as ``sfo train`` builds them, with no ‖∇f‖ check during the timing (τ larger than the run:
check cost is the monitor's, reported by sfo train's summary as check_s). The plain loop gets an
identical copy of the model (same θ₀), the same optimizer settings and the same batches: the
permutation π_e of the resizable loader, gathered with the same ``ImageDataset.get_batch``.
Blocks of ``--steps`` steps alternate A/B (``--rounds`` times, after one warm-up block each); the
median and best block of each are reported with their ratio. Then the estimate the function
returns: ``--paired`` steps *step-paired* — the two loops advance one step at a time, alternately
(the order flips every step), each step timed on its own, so that the machine's drift cancels in
the differences d_t = sfo_t − plain_t; ratio = 1 + mean(d)/mean(plain) with a 95% interval from
the standard error of mean(d). The same script runs on a GPU
(device auto; bf16 autocast and channels_last apply to both loops alike there).

Run: python benchmarks/bench_train_throughput.py [--config FILE] [--batch-size 128] [--steps 30]
     [--rounds 5] [--threads 0] [--paired 400] [--set table.key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from sfotorch.components import build_components
from sfotorch.config import load_config
from sfotorch.device import resolve_device
from sfotorch.sampler import epoch_permutation

HERE = os.path.dirname(os.path.abspath(__file__))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_sfo(comp, steps: int, device) -> float:
    """Seconds for ``steps`` TrainingLoop steps (the loop sfo train runs)."""
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        comp.loop.step()
    _sync(device)
    return time.perf_counter() - t


class PlainLoop:
    """An ordinary loop over the same batches (π_e of the same seed, same gather) and a copy of θ₀."""

    def __init__(self, comp, model, cfg, device, transform):
        self.data = comp.train_data
        self.model = model
        self.b = cfg["schedule"]["b0"]
        self.seed = comp.loader.seed
        self.n = len(self.data)
        self.device, self.transform = device, transform
        o = cfg["optimizer"]
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg["schedule"]["eta0"], momentum=o["momentum"],
                                   weight_decay=o["weight_decay"], nesterov=o["nesterov"])
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.epoch, self.pos = 0, 0
        self.perm = epoch_permutation(self.n, self.seed, 0)

    def batch(self):
        if self.pos >= self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self.perm = epoch_permutation(self.n, self.seed, self.epoch)
        idx = self.perm[self.pos:self.pos + self.b]
        self.pos += len(idx)
        x, y = self.data.get_batch(idx)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return (self.transform(x) if self.transform else x), y

    def run(self, steps: int) -> float:
        _sync(self.device)
        t = time.perf_counter()
        for _ in range(steps):
            x, y = self.batch()
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.opt.step()
            float(loss.detach())  # the sfo loop reads the loss every step (non-finite policy); so does this one
        _sync(self.device)
        return time.perf_counter() - t


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(HERE, "..", "configs", "fashion_mnist_constant_cpu.toml"))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="timed blocks per loop (alternating)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: what sfo train picks)")
    ap.add_argument("--paired", type=int, default=400, help="step pairs of the step-paired estimate")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv)
    overrides = [f"schedule.b0={args.batch_size}", "schedule.tau=1000000000", f"run.threads={args.threads}",
                 *args.overrides]
    cfg = load_config(args.config, overrides)
    env = resolve_device(cfg)
    torch.set_num_threads(env["threads"])
    comp = build_components(cfg, seed=0, env=env)
    # an identical model for the plain loop: same θ₀ (and the same bf16 / channels_last treatment)
    torch.manual_seed(0)
    plain_model = copy.deepcopy(comp.model)
    plain = PlainLoop(comp, plain_model, cfg, env["device"], comp.transform)
    b = cfg["schedule"]["b0"]
    time_sfo(comp, args.steps, env["device"])          # warm-up
    plain.run(args.steps)
    sfo_t, plain_t = [], []
    for r in range(args.rounds):
        order = (("sfo", "plain") if r % 2 == 0 else ("plain", "sfo"))
        for which in order:
            if which == "sfo":
                sfo_t.append(time_sfo(comp, args.steps, env["device"]))
            else:
                plain_t.append(plain.run(args.steps))
    rate = lambda t: args.steps * b / t  # noqa: E731
    res = {"device": str(env["device"]), "threads": env["threads"], "amp": env["amp"], "batch_size": b,
           "model": cfg["model"]["name"], "dataset": cfg["data"]["dataset"],
           "sfo_median": rate(statistics.median(sfo_t)), "plain_median": rate(statistics.median(plain_t)),
           "sfo_best": rate(min(sfo_t)), "plain_best": rate(min(plain_t))}
    res["ratio_median"] = res["plain_median"] / res["sfo_median"]
    res["ratio_best"] = res["plain_best"] / res["sfo_best"]
    plain_steps, sfo_steps = [], []
    for t in range(args.paired):
        for which in (("sfo", "plain") if t % 2 == 0 else ("plain", "sfo")):
            if which == "sfo":
                sfo_steps.append(time_sfo(comp, 1, env["device"]))
            else:
                plain_steps.append(plain.run(1))
    diffs = [a - p for a, p in zip(sfo_steps, plain_steps)]
    mean_plain, mean_d = statistics.fmean(plain_steps), statistics.fmean(diffs)
    half = 1.96 * statistics.stdev(diffs) / len(diffs) ** 0.5
    res.update(paired_ratio=1 + mean_d / mean_plain, paired_low=1 + (mean_d - half) / mean_plain,
               paired_high=1 + (mean_d + half) / mean_plain, paired_diff_us=1e6 * mean_d, paired_half_us=1e6 * half)
    print(f"{res['model']} on {res['dataset']}, b = {b}, device {res['device']}, threads {res['threads']}, "
          f"amp {res['amp']}; {args.rounds} blocks of {args.steps} steps each, alternating")
    print(f"{'':14}{'median':>14}{'best':>14}   (samples/s)")
    print(f"{'plain torch':14}{res['plain_median']:14.0f}{res['plain_best']:14.0f}")
    print(f"{'sfo train':14}{res['sfo_median']:14.0f}{res['sfo_best']:14.0f}")
    print(f"time ratio sfo/plain: median {res['ratio_median']:.3f}, best {res['ratio_best']:.3f}  (blocks)")
    print(f"step-paired, {args.paired} pairs: plain {1e6 * mean_plain:.0f} us/step, sfo − plain "
          f"{res['paired_diff_us']:+.0f} ± {res['paired_half_us']:.0f} us/step (95%): ratio {res['paired_ratio']:.4f} "
          f"[{res['paired_low']:.4f}, {res['paired_high']:.4f}]  (target <= 1.05)")
    return res


if __name__ == "__main__":
    main()
