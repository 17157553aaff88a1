"""The command outputs committed under docs/results/ are what the code at HEAD prints, and README.md
quotes them line for line: a change of the code or of the README that makes them differ fails here.

Each file's first line is the command, after ``$ ``; the rest is its output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def _rerun(name: str) -> tuple[str, str]:
    committed = (RESULTS / name).read_text(encoding="utf-8")
    command, _, output = committed.partition("\n")
    assert command.startswith(("$ sfo ", "$ python ")), f"{name}: the first line must be the command, got {command!r}"
    program, *args = shlex.split(command[2:])
    launcher = ["-c", "import sys; from sfotheory.cli import main; sys.exit(main())"] if program == "sfo" else []
    proc = subprocess.run([sys.executable, *launcher, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return output, proc.stdout + proc.stderr


def _quoted_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"```\n(.*?)```", text, flags=re.S)]


def _readme_quotes(name: str) -> list[str]:
    """The lines of the README's code block that follows the link to ``name`` (``...`` lines left out)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    at = readme.index(f"docs/results/{name}")
    block = _quoted_blocks(readme[at:])[0]
    return [line for line in block if line.strip() not in {"...", ""}]


def test_sfo_theory_paper_output_is_current_and_the_readme_quotes_it():
    committed, now = _rerun("sfo_theory_paper.txt")
    assert now == committed
    quoted = _readme_quotes("sfo_theory_paper.txt")
    missing = [line for line in quoted if line not in committed.splitlines()]
    assert len(quoted) >= 5 and missing == []


@pytest.mark.slow
def test_sfo_cbs_output_is_current_and_the_readme_quotes_it():
    committed, now = _rerun("sfo_cbs_quadratic.txt")
    assert now == committed
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    at = readme.index("$ sfo cbs --problem quadratic --dim 1000 --eps 0.05")
    block = [line for line in _quoted_blocks(readme[at - 4:])[0][1:] if line.strip() not in {"...", ""}]
    missing = [line for line in block if line not in committed.splitlines()]
    assert block and missing == []


@pytest.mark.slow
def test_the_monitors_side_by_side_output_is_current():
    pytest.importorskip("torch")
    committed, now = _rerun("monitors_side_by_side.txt")
    assert now == committed
