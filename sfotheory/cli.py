"""The ``sfo`` command: one entry point, one module per subcommand.

Each subcommand lives in its own module that defines ``register(subparsers)``;
the module adds its parser and sets ``handler`` with ``set_defaults``. Modules
of ``sfotorch`` import torch only inside their handler, so ``sfo --help`` and
the theory subcommands work without torch.

Bad input never shows a traceback: a :class:`~sfotheory.validation.ParameterError`
or an argument error prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .validation import ParameterError

__all__ = ["main", "build_parser", "OneLineParser"]

#: (module, what needs to be installed for it) in the order shown by ``sfo --help``.
SUBCOMMAND_MODULES = [
    "sfotheory.theory_cli",
    "sfotheory.cbs_cli",
    "sfotorch.train_cli",
    "sfotorch.plot_cli",
    "paper_checks.reproduce_cli",
]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sfo",
        description="Adaptive batch-size and learning-rate scheduling of SGD (Umeda & Iiduka 2025, "
                    "arXiv 2508.05302): theory, simulation and training.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except ParameterError as exc:
        print(f"sfo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name in {"torch", "torchvision"}:
            print(f"sfo {args.command}: error: this command needs {exc.name}; install it with "
                  f"pip install -e '.[torch]'", file=sys.stderr)
            return 2
        raise
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
