"""What every check returns, how a verdict is stated, and how a check runs as a script.

A check measures something, puts it beside what it expects, and gives a three-valued verdict with
the interval and n behind it (:mod:`paper_checks.verdicts`): PASS, FAIL (the difference is resolved
against the expectation) or INCONCLUSIVE (the data cannot tell; the comparison says how many seeds
would). A FAIL is a result, not an error: the check still returns normally. Exceptions are for
broken inputs only.

Every check belongs to one of two parts of the report (:attr:`ClaimInfo.part`): ``"claim"``, what
the paper states, tested in the paper's metric and criterion; ``"question"``, what we ask beyond
the paper (measurement cost, tightness, other optimizers). Only claims are tallied. Inside a claim,
a comparison with ``counts=False`` is our addition reported beside the paper's (for instance SFO
with the measurement counted): shown, never part of the claim's verdict.

Modes: ``"smoke"`` (seconds; the suite runs every check this way to exercise its code — its verdicts
are not evidence), ``"quick"`` (the README's main job: CPU-sized problems and few seeds, so
verdicts may be INCONCLUSIVE), ``"standard"`` (CPU-sized problems, at least 5
paired seeds for every torch claim) and ``"full"`` (more seeds, full Fashion-MNIST, CIFAR when
``data_dir`` holds it and a GPU is there).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sfotheory.progress import Progress
from sfotheory.validation import check_choice

from .verdicts import FAIL, INCONCLUSIVE, PASS, VERDICTS, Judgement, combine

__all__ = ["MODES", "PARTS", "CheckResult", "ClaimInfo", "Comparison", "RunContext", "script_main"]

MODES = ("smoke", "quick", "standard", "full")
PARTS = ("claim", "question")


@dataclass(frozen=True)
class ClaimInfo:
    """What a check tests: an id, a one-line statement, where the paper makes it, and its part.

    ``part`` is ``"claim"`` for a statement of the paper, ``"question"`` for ours.
    """

    id: str
    title: str
    statement: str
    source: str
    part: str = "claim"

    def __post_init__(self):
        check_choice(self.part, PARTS, "part", f"ClaimInfo({self.id!r})")


@dataclass(frozen=True)
class Comparison:
    """One measured quantity beside what is expected, with its interval, n and verdict.

    ``measured``/``expected`` are the readable texts; ``value``, ``interval`` ([low, high] or
    None) and ``n`` (independent units: seeds or replicates; None for an exact quantity) are the
    numbers behind the verdict; ``needed`` the units that would resolve an INCONCLUSIVE one;
    ``counts=False`` marks our addition, shown beside the claim and left out of its verdict.
    """

    quantity: str
    measured: str
    expected: str
    verdict: str
    value: float | None = None
    interval: list | None = None
    n: int | None = None
    needed: int | None = None
    counts: bool = True

    def __post_init__(self):
        check_choice(self.verdict, VERDICTS, "verdict", "Comparison")

    @property
    def ok(self) -> bool:
        return self.verdict == PASS

    @classmethod
    def exact(cls, quantity: str, measured: str, expected: str, ok: bool, **kwargs) -> Comparison:
        """An identity or an exact quantity (no sampling): PASS or FAIL, n = None."""
        return cls(quantity, measured, expected, PASS if ok else FAIL, **kwargs)

    @classmethod
    def judged(cls, quantity: str, judgement: Judgement, expected: str, measured: str | None = None,
               **kwargs) -> Comparison:
        """A comparison from a :class:`~paper_checks.verdicts.Judgement` (its value, interval, n, verdict)."""
        value = judgement.value
        return cls(quantity, measured if measured is not None else judgement.text(), expected, judgement.verdict,
                   value=None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value),
                   interval=judgement.interval, n=judgement.n, needed=judgement.needed, **kwargs)

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        d = dict(d)
        if "verdict" not in d:                     # reports written before verdicts had three values
            d["verdict"] = PASS if d.pop("ok", False) else FAIL
        d.pop("ok", None)
        return cls(**d)


@dataclass
class CheckResult:
    """The outcome of one check (JSON-serialisable)."""

    claim: str
    title: str
    mode: str
    verdict: str
    tolerance: str
    comparisons: list[Comparison]
    figures: list[str] = field(default_factory=list)
    notes: str = ""
    seeds: list[int] = field(default_factory=list)
    wall_time_s: float = 0.0
    settings: dict = field(default_factory=dict)
    part: str = "claim"
    statement: str = ""

    @classmethod
    def from_comparisons(cls, claim: ClaimInfo, mode: str, comparisons: list[Comparison], *, tolerance: str,
                         **kwargs) -> CheckResult:
        """The verdict of the comparisons that count (:func:`~paper_checks.verdicts.combine`)."""
        verdict = combine(c.verdict for c in comparisons if c.counts)
        return cls(claim=claim.id, title=claim.title, mode=mode, verdict=verdict, tolerance=tolerance,
                   comparisons=list(comparisons), part=claim.part, statement=claim.statement, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CheckResult:
        d = dict(d)
        d["comparisons"] = [Comparison.from_dict(c) for c in d["comparisons"]]
        return cls(**d)

    def counts(self) -> dict:
        """How many counted comparisons have each verdict."""
        out = dict.fromkeys(VERDICTS, 0)
        for c in self.comparisons:
            if c.counts:
                out[c.verdict] += 1
        return out

    def text(self) -> str:
        """A few lines for a terminal: the verdict, then measured beside expected."""
        lines = [f"[{self.verdict}] {self.claim}: {self.title} ({self.part}, {self.mode} mode, "
                 f"{self.wall_time_s:.0f} s)"]
        for c in self.comparisons:
            tag = {PASS: "ok  ", FAIL: "MISS", INCONCLUSIVE: "open"}[c.verdict] if c.counts else "info"
            need = f" (about {c.needed} seeds would resolve it)" if c.needed else ""
            lines.append(f"  {tag} {c.quantity}: measured {c.measured}; expected {c.expected}{need}")
        lines.append(f"  tolerance: {self.tolerance}")
        if self.notes:
            lines.append(f"  note: {self.notes}")
        for f in self.figures:
            lines.append(f"  figure: {f}")
        return "\n".join(lines)


@dataclass
class RunContext:
    """What a check is given: the mode, where to write figures, an optional data folder, a progress bar."""

    mode: str
    out_dir: Path
    data_dir: Path | None = None
    progress: Progress | None = None

    def __post_init__(self):
        check_choice(self.mode, MODES, "mode", "RunContext")
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def settings(self, table: dict) -> dict:
        """This mode's entry of a check's ``SETTINGS`` (a check without a ``standard`` entry is an error)."""
        if self.mode not in table:
            raise KeyError(f"the check has no settings for mode {self.mode!r} (it has {', '.join(table)})")
        return table[self.mode]

    def figure_path(self, name: str) -> Path:
        return self.out_dir / name

    def tick(self, **status) -> None:
        """Show what the check is doing now on the progress bar (the bar counts checks, not ticks)."""
        if self.progress is not None:
            self.progress.update(0, **status)


def save_figure(fig, path):
    """Lay out ``fig``, write it to ``path`` (PNG at 110 dpi, the reports' size), close it; return ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def script_main(module_run, claim: ClaimInfo, argv=None) -> int:
    """``python -m paper_checks.<check> [--mode M] [--out DIR] [--data-dir DIR]``: run one check, print it."""
    p = argparse.ArgumentParser(prog=f"python -m paper_checks.{claim.id}", description=claim.statement)
    p.add_argument("--mode", choices=MODES[1:], default="quick",
                   help="quick (few seeds), standard (>= 5 paired seeds) or full; each report states its wall time")
    p.add_argument("--full", action="store_true", help="the same as --mode full")
    p.add_argument("--out", default=f"reports/{claim.id}", help="folder for the figures and result.json")
    p.add_argument("--data-dir", default=None, help="a folder holding CIFAR in torchvision's layout (full mode)")
    args = p.parse_args(argv)
    ctx = RunContext(mode="full" if args.full else args.mode, out_dir=Path(args.out), data_dir=args.data_dir,
                     progress=Progress(label=claim.id, stream=sys.stderr))
    t0 = time.perf_counter()
    result = module_run(ctx)
    result.wall_time_s = time.perf_counter() - t0
    ctx.progress.close()
    (ctx.out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    print(result.text())
    return 0
