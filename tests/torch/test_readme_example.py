"""The README's training-loop example (docs/examples/adaptive_loop.py) runs and prints its stage transitions."""

import pathlib
import re
import runpy

import pytest

torch = pytest.importorskip("torch")

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "examples" / "adaptive_loop.py"


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
