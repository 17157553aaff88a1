"""``sfo plot``: figures of one or many ``sfo train`` runs (PNG and PDF).

    sfo plot runs/fashion_mnist_adaptive_cpu                      # → runs/.../plots/overview.png|pdf
    sfo plot runs/a runs/b runs/c --out figures/compare          # → figures/compare.png|pdf

matplotlib is imported only when the command runs (Agg canvas, no display needed).
"""

from __future__ import annotations

import argparse
import os

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot", help="plot ||grad f||, b, lr, losses and accuracy of sfo train runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw one overview figure of one or many sfo train runs: ||grad f|| against SFO, steps and "
                    "epochs with the stage boundaries; b and lr against SFO; the measurement SFO; train loss, "
                    "test accuracy and test loss against epochs. For a single run also the three-panel SFO "
                    "figure of sfotorch.sfolog.plot_log. Written as PNG and PDF.",
        epilog="RUN_DIR is a seed folder (holding log.jsonl) or a run folder with seed*/ subfolders.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by sfo train")
    p.add_argument("--out", metavar="STEM",
                   help="output path without extension (default: RUN_DIR/plots/overview for one folder, "
                        "else sfo_plot in the working directory)")
    p.add_argument("--x", choices=("samples", "sfo_total"), default="samples",
                   help="x axis of the SFO panels: training SFO, or training + measurement (default: samples)")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"], choices=("png", "pdf", "svg"),
                   help="file formats (default: png pdf)")
    p.add_argument("--dpi", type=int, default=120, help="PNG resolution (default 120)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from sfotorch.plots import plot_runs

    out = args.out
    if out is None:
        out = os.path.join(args.runs[0], "plots", "overview") if len(args.runs) == 1 else "sfo_plot"
    for path in plot_runs(args.runs, out, x=args.x, formats=tuple(args.formats), dpi=args.dpi):
        print(path)
    return 0
