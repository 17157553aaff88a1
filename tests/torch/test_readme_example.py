"""The README's training-loop example (docs/examples/adaptive_loop.py) runs and prints its stage transitions."""

import pathlib
import re
import runpy

import pytest

torch = pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "adaptive_loop.py"


def _readme_block_after(marker: str) -> str:
    """The first fenced block after the line holding ``marker`` in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rest = text[text.index(marker):]
    return rest.split("```", 2)[1].split("\n", 1)[1]


def test_readme_example_trains_and_prints_stage_transitions(capsys):
    ns = runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    transitions = re.findall(r"step (\d+): stage (\d+), b=(\d+), lr=([\d.]+), eps_m=([\d.]+)", out)
    assert len(transitions) >= 3
    assert [int(t[1]) for t in transitions] == list(range(1, len(transitions) + 1))
    assert [int(t[2]) for t in transitions] == [8 * 2**m for m in range(1, len(transitions) + 1)]
    assert all(int(t[0]) % 50 == 0 for t in transitions)          # only on check steps (tau = 50)
    scheduler, loader = ns["scheduler"], ns["loader"]
    assert scheduler.transitions[-1]["b"] == loader.batch_size == scheduler.batch_size
    assert scheduler.account.totals()["train"] == 4 * len(ns["data"])   # four epochs, every sample counted once
    assert ns["loss"].item() < 0.05


def test_the_readme_quotes_the_lightning_example_as_it_is():
    example = ROOT / "docs" / "examples" / "lightning_loop.py"
    assert _readme_block_after("(`docs/examples/lightning_loop.py`, which the suite runs)") == example.read_text(
        encoding="utf-8")


def test_the_readme_quotes_the_monitors_side_by_side_as_committed():
    committed = (ROOT / "docs" / "results" / "monitors_side_by_side.txt").read_text(encoding="utf-8").splitlines()
    quoted = _readme_block_after("docs/results/monitors_side_by_side.txt").splitlines()
    assert quoted and all(line in committed for line in quoted)


def test_the_readme_quotes_the_example_and_its_real_output(capsys):
    assert _readme_block_after("this is `docs/examples/adaptive_loop.py`") == EXAMPLE.read_text(encoding="utf-8")
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert _readme_block_after("Its real output on CPU") == capsys.readouterr().out
