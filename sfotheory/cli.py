"""The ``sfo`` command: one entry point; each package registers its own subcommands.

A subcommand is a function ``register(subparsers)`` that adds its parser and sets
``handler`` with ``set_defaults``. Packages announce theirs as entry points of the
group :data:`ENTRY_POINT_GROUP` in their ``pyproject.toml``; for instance::

    [project.entry-points."sfo.commands"]
    theory = "sfotheory.theory_cli:register"

The dispatcher finds them with :func:`importlib.metadata.entry_points`, so this
package names no package above it: a layer built on ``sfotheory`` plugs its
commands in without ``sfotheory`` knowing it exists. The commands of
``sfotheory`` itself (:data:`OWN_COMMANDS`) are always there, even in a checkout
that was never installed. A registered module should import heavy dependencies
(torch) only inside its handler, so that ``sfo --help`` stays fast.

Bad input never shows a traceback: a :class:`~sfotheory.validation.ParameterError`
or an argument error prints one line on stderr and exits with code 2.

>>> [name for name, _ in command_entry_points()][:2]
['theory', 'cbs']
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import EntryPoint, entry_points

from .validation import ParameterError

__all__ = ["ENTRY_POINT_GROUP", "OWN_COMMANDS", "OneLineParser", "build_parser", "command_entry_points", "main"]

#: The entry-point group through which packages register ``sfo`` subcommands.
ENTRY_POINT_GROUP = "sfo.commands"

#: The subcommands of this package (name → ``module:register``), listed first in ``sfo --help``.
OWN_COMMANDS = {
    "theory": "sfotheory.theory_cli:register",
    "cbs": "sfotheory.cbs_cli:register",
    "compare": "sfotheory.compare_cli:register",
}

#: Modules whose absence means "install an optional extra", with the extra that brings them.
_EXTRAS = {"torch": "torch", "torchvision": "torch"}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def command_entry_points() -> list[tuple[str, EntryPoint]]:
    """``(name, entry point)`` of every registered subcommand, this package's own first.

    The others follow by name. A name registered twice (two installed distributions)
    keeps the registration :func:`importlib.metadata.entry_points` lists first.
    """
    chosen: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        chosen.setdefault(ep.name, ep)
    own = [(name, chosen.pop(name, EntryPoint(name, value, ENTRY_POINT_GROUP))) for name, value in OWN_COMMANDS.items()]
    return own + sorted(chosen.items())


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="sfo",
        description="Adaptive batch-size and learning-rate scheduling of SGD (Umeda & Iiduka 2025, "
                    "arXiv 2508.05302): theory, simulation and training.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    subparsers.required = True
    for _, ep in command_entry_points():
        ep.load()(subparsers)
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
        if exc.name in _EXTRAS:
            print(f"sfo {args.command}: error: this command needs {exc.name}; install it with "
                  f"pip install -e '.[{_EXTRAS[exc.name]}]'", file=sys.stderr)
            return 2
        raise
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
