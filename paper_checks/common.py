"""What every check returns, how a verdict is stated, and how a check runs as a script.

A check measures something, puts it beside what the claim expects, and says PASS or FAIL
with the tolerance it used and the reason for that tolerance. A FAIL is a result, not an
error: the check still returns normally. Exceptions are for broken inputs only.

Modes: ``"quick"`` (CPU, minutes: synthetic problems and Fashion-MNIST subsets), ``"full"``
(more seeds, full Fashion-MNIST, CIFAR when ``data_dir`` holds it and a GPU is there), and
``"smoke"`` (seconds; the test suite runs every check this way to exercise its code — its
verdicts are not evidence).
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

__all__ = ["MODES", "CheckResult", "ClaimInfo", "Comparison", "RunContext", "script_main"]

MODES = ("smoke", "quick", "full")


@dataclass(frozen=True)
class ClaimInfo:
    """The claim a check tests: an id, a one-line statement, where the paper makes it."""

    id: str
    title: str
    statement: str
    source: str


@dataclass(frozen=True)
class Comparison:
    """One measured quantity beside what the claim expects, and whether it is within tolerance."""

    quantity: str
    measured: str
    expected: str
    ok: bool


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

    @classmethod
    def from_comparisons(cls, claim: ClaimInfo, mode: str, comparisons: list[Comparison], *, tolerance: str,
                         **kwargs) -> CheckResult:
        """PASS when every comparison is within tolerance, else FAIL."""
        verdict = "PASS" if comparisons and all(c.ok for c in comparisons) else "FAIL"
        return cls(claim=claim.id, title=claim.title, mode=mode, verdict=verdict, tolerance=tolerance,
                   comparisons=list(comparisons), **kwargs)

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CheckResult:
        d = dict(d)
        d["comparisons"] = [Comparison(**c) for c in d["comparisons"]]
        return cls(**d)

    def text(self) -> str:
        """A few lines for a terminal: the verdict, then measured beside expected."""
        lines = [f"[{self.verdict}] {self.claim}: {self.title} ({self.mode} mode, {self.wall_time_s:.0f} s)"]
        for c in self.comparisons:
            lines.append(f"  {'ok  ' if c.ok else 'MISS'} {c.quantity}: measured {c.measured}; expected {c.expected}")
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

    def figure_path(self, name: str) -> Path:
        return self.out_dir / name

    def tick(self, **status) -> None:
        """Show what the check is doing now on the progress line (the line counts checks, not ticks)."""
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
    """``python -m paper_checks.<check> [--full] [--out DIR] [--data-dir DIR]``: run one check, print it."""
    p = argparse.ArgumentParser(prog=f"python -m paper_checks.{claim.id}", description=claim.statement)
    p.add_argument("--full", action="store_true", help="full mode (more seeds and data; slow on a CPU)")
    p.add_argument("--out", default=f"reports/{claim.id}", help="folder for the figures and result.json")
    p.add_argument("--data-dir", default=None, help="a folder holding CIFAR in torchvision's layout (full mode)")
    args = p.parse_args(argv)
    ctx = RunContext(mode="full" if args.full else "quick", out_dir=Path(args.out), data_dir=args.data_dir,
                     progress=Progress(label=claim.id, stream=sys.stderr))
    t0 = time.perf_counter()
    result = module_run(ctx)
    result.wall_time_s = time.perf_counter() - t0
    ctx.progress.close()
    (ctx.out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2))
    print(result.text())
    return 0
