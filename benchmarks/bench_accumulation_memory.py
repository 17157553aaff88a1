"""Peak resident memory per stage as the batch grows 8 → 4096 at a fixed micro-batch cap.

Claim: with gradient accumulation (:mod:`sfotorch.accumulate`) at a cap c, the peak memory of a
training step does not grow with the logical batch b once b ≥ c: target spread ≤ 10% from the
first stage at the cap to the last stage (b = 4096).

Setup: the ~94 k-parameter SmallCNN (:mod:`sfotorch.models.small_cnn`, no BatchNorm) on generated
1×28×28 uint8 images (Fashion-MNIST-sized), cross-entropy, plain SGD. The batch is held as uint8
(b × 784 bytes: 3.2 MB at b = 4096) and each micro-batch is converted to normalised float32 by the
accumulator's ``transform``, so only c images are ever expanded. Each stage's step runs in a fresh
subprocess (1 thread) that reports ``ru_maxrss`` (the peak resident set of the whole process,
interpreter and torch included) after setup ("base") and after two accumulated steps ("peak");
"step" = peak − base is what the step itself added. For contrast the same steps are run without
accumulation (c = b) up to ``--contrast-max``. The stages' batch sizes are those of the authors'
schedule (b ×2 per stage up to b_max) with ``--b0`` and ``--b-max``, from the stage rule
(:func:`sfotheory.rule.schedule_table`).

Run: python benchmarks/bench_accumulation_memory.py [--cap 64] [--b-max 4096] [--contrast-max 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def child(b: int, cap: int) -> dict:
    import torch
    from torch import nn

    from sfotorch.accumulate import GradientAccumulator
    from sfotorch.models import SmallCNN

    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (b,), generator=g)
    model = SmallCNN(num_classes=10, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    acc = GradientAccumulator(model, nn.CrossEntropyLoss(), max_micro_batch=cap,
                              transform=lambda u: (u.float() / 255.0 - 0.286) / 0.353)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        acc.backward(images, labels)
        opt.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"b": b, "cap": cap, "base_kb": base, "peak_kb": peak}


def measure(b: int, cap: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(b), str(cap)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=64)
    parser.add_argument("--b0", type=int, default=8)
    parser.add_argument("--b-max", type=int, default=4096)
    parser.add_argument("--contrast-max", type=int, default=1024)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    # imported here, not at the top: the children measure memory and need only torch
    from sfotheory.paper import paper_schedule
    from sfotheory.rule import schedule_table

    sizes = [row["b"] for row in schedule_table(paper_schedule(b0=args.b0, b_max=args.b_max))]
    rows = []
    print(f"{'stage':>5} {'b':>5} {'k=⌈b/c⌉':>8} {'base MiB':>9} {'peak MiB':>9} {'step MiB':>9}"
          f" {'no-accum peak MiB':>18}")
    for m, b in enumerate(sizes):
        r = measure(b, args.cap)
        contrast = measure(b, b)["peak_kb"] / 1024 if b <= args.contrast_max else float("nan")
        rows.append(r)
        print(f"{m:>5} {b:>5} {-(-b // args.cap):>8} {r['base_kb'] / 1024:>9.1f} {r['peak_kb'] / 1024:>9.1f}"
              f" {(r['peak_kb'] - r['base_kb']) / 1024:>9.1f} {contrast:>18.1f}", flush=True)
    at_cap = [r for r in rows if r["b"] >= args.cap]
    first, last = at_cap[0]["peak_kb"], at_cap[-1]["peak_kb"]
    peaks = [r["peak_kb"] for r in at_cap]
    print(f"\npeak at the first stage at the cap (b = {at_cap[0]['b']}): {first / 1024:.1f} MiB; "
          f"at the last (b = {at_cap[-1]['b']}): {last / 1024:.1f} MiB; "
          f"change {100 * (last - first) / first:+.1f}%, spread over these stages "
          f"{100 * (max(peaks) - min(peaks)) / min(peaks):.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
