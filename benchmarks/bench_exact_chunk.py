"""The exact monitor's pass over the training set at several chunk sizes, against a plain pass.

The exact monitor computes ∇f(θ) = (1/n) Σ_c S_c over chunks C_c of ``monitor.batch_size`` samples
(:mod:`sfotorch.monitors.exact`); the chunk changes only memory and speed, never the result. The
reference is what the authors' code does: an ordinary loop of ``loss.backward()`` over batches of
100, gradients accumulated in ``.grad``. Every pass (each chunk size and the reference) runs once
per round, in an order that rotates from round to round, so the machine's drift falls on all of
them alike; the medians over rounds are printed as seconds per pass and per 1 000 samples, and as a
ratio to the reference. The model, data and threads are those ``sfo train`` builds for the config.

Run: ``python benchmarks/bench_exact_chunk.py [--config FILE] [--chunks 64,100,128,256,512,1024,2048]
[--subset N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from sfotorch.components import build_components
from sfotorch.config import load_config
from sfotorch.device import resolve_device
from sfotorch.monitors import ExactMonitor

HERE = os.path.dirname(os.path.abspath(__file__))


def plain_pass(model, data, loss_fn, batch: int, device, transform) -> None:
    """The authors' pass: eval mode, ``loss.backward()`` per batch of ``batch``, summed in ``.grad``."""
    model.eval()
    model.zero_grad(set_to_none=True)
    n = len(data)
    for start in range(0, n, batch):
        x, y = data.get_batch(torch.arange(start, min(start + batch, n)))
        x, y = x.to(device), y.to(device)
        x = transform(x) if transform is not None else x
        (loss_fn(model(x), y) * (x.shape[0] / n)).backward()
    model.zero_grad(set_to_none=True)
    model.train()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(HERE, "..", "configs", "fashion_mnist_adaptive_cpu.toml"))
    ap.add_argument("--chunks", default="64,100,128,256,512,1024,2048")
    ap.add_argument("--subset", type=int, default=5000, help="training images (the config's subset by default)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: what sfo train picks)")
    args = ap.parse_args(argv)
    chunks = [int(c) for c in args.chunks.split(",")]
    cfg = load_config(args.config, [f"data.subset={args.subset}", f"run.threads={args.threads}"])
    env = resolve_device(cfg)
    torch.set_num_threads(env["threads"])
    comp = build_components(cfg, seed=0, env=env)
    data = comp.train_data.without_augmentation()
    loss_fn = torch.nn.CrossEntropyLoss()
    monitors = {c: ExactMonitor(comp.model, data, loss_fn, batch_size=c, transform=comp.transform) for c in chunks}
    passes = {f"chunk {c}": (lambda m=m: m.measure()) for c, m in monitors.items()}
    passes["plain, batches of 100"] = lambda: plain_pass(comp.model, data, loss_fn, 100, env["device"], comp.transform)
    names = list(passes)
    norms = {c: m.measure().norm for c, m in monitors.items()}          # warm-up, and the results agree
    times = {k: [] for k in names}
    for r in range(args.rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            passes[k]()
            times[k].append(time.perf_counter() - t)
    n = len(data)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["plain, batches of 100"]
    print(f"{cfg['model']['name']} on {cfg['data']['dataset']}, n = {n}, device {env['device']}, threads "
          f"{env['threads']}; {args.rounds} rounds, rotating order; ‖∇f(θ₀)‖ at every chunk: "
          f"{min(norms.values()):.9g} … {max(norms.values()):.9g}")
    print(f"{'pass':<24}{'s/pass':>10}{'s/1000':>10}{'vs plain':>10}")
    for k in names:
        print(f"{k:<24}{med[k]:>10.3f}{1000 * med[k] / n:>10.4f}{med[k] / ref:>10.3f}")
    best = min((k for k in names if k.startswith("chunk")), key=med.get)
    print(f"fastest chunk: {best} ({med[best] / ref:.3f} of the plain pass)")
    return {"median_s": med, "n": n, "best": best}


if __name__ == "__main__":
    main()
