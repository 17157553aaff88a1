"""``sfo train``: run one configuration of ``configs/`` (or your own) for one or several seeds.

    sfo train --config configs/fashion_mnist_adaptive_cpu.toml
    sfo train --config configs/cifar100_densenet_adaptive.toml --set data.root=~/data/cifar
    sfo train --config FILE --seeds 0 1 2 --out runs/mine      # mean ± std in runs/mine/summary.csv
    sfo train --config FILE --out runs/mine --resume            # continue from the checkpoints
    sfo train --keys                                            # every config key, its default and meaning

torch is imported only when the command runs, so ``sfo --help`` works without it.
"""

from __future__ import annotations

import argparse
import sys

from sfotheory.validation import ParameterError

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model with an adaptive or baseline batch-size/learning-rate schedule",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the model of a TOML configuration (configs/*.toml) with its schedule: the authors' "
                    "adaptive Algorithm 2, or the constant / periodic / cosine baselines. Writes OUT/config.toml, "
                    "OUT/summary.csv (mean ± std over seeds) and per seed OUT/seedS/{log.jsonl, summary.csv, "
                    "checkpoint.pt, tb/}. Progress (step, stage, b, lr, latest ||grad f||, SFO, samples/s) goes "
                    "to stderr; the summary to stdout.",
        epilog="Overrides: --set table.key=value with a TOML value (a bare word is a string), e.g.\n"
               "  --set schedule.tau=200 --set train.epochs=2 --set data.root=/data/cifar --set run.seeds=[0,1]\n"
               "Exit status: 0 when every seed finished, 1 when one diverged, 2 on bad input.")
    p.add_argument("--config", metavar="FILE", help="the TOML configuration (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one key of the configuration (repeatable)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="S", help="seeds to run (default: run.seeds)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: run.out_dir, else runs/NAME)")
    p.add_argument("--resume", action="store_true",
                   help="continue each seed from OUT/seedS/checkpoint.pt, appending to the same log")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="shortcut for --set run.device=...")
    p.add_argument("--threads", type=int, metavar="N", help="shortcut for --set run.threads=N (0: automatic)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (shortcut for run.progress_every=0)")
    p.add_argument("--show-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--keys", action="store_true", help="list every configuration key with its default and exit")
    p.set_defaults(handler=run)


def run(args) -> int:
    from sfotorch.config import config_to_toml, load_config, schema_table

    if args.keys:
        print(schema_table())
        return 0
    if not args.config:
        raise ParameterError("The '--config' parameter of sfo train must be given (a TOML file, e.g. "
                             "configs/fashion_mnist_adaptive_cpu.toml). Got --config=None instead.")
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"run.device={args.device!r}".replace("'", '"'))
    if args.threads is not None:
        overrides.append(f"run.threads={args.threads}")
    if args.quiet:
        overrides.append("run.progress_every=0")
    cfg = load_config(args.config, overrides)
    if args.show_config:
        print(config_to_toml(cfg), end="")
        return 0
    from sfotorch.train import format_summary, train

    result = train(cfg, out_dir=args.out, seeds=args.seeds, resume=args.resume)
    print(format_summary(result))
    diverged = [r["seed"] for r in result["runs"] if r["status"] == "diverged"]
    if diverged:
        print(f"sfo train: seeds {diverged} diverged; see their log.jsonl", file=sys.stderr)
        return 1
    return 0
