"""The suite's own settings: reproducible hypothesis examples wherever it runs."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

DRAWN = []


@given(st.integers())
def _draw(x):
    DRAWN.append(x)


def test_hypothesis_draws_the_same_examples_on_every_run_unless_a_developer_opts_out():
    if os.environ.get("SFO_HYPOTHESIS_PROFILE") == "dev":
        assert not settings.default.derandomize
        return
    runs = []
    for _ in range(2):
        DRAWN.clear()
        _draw()
        runs.append(list(DRAWN))
    assert settings.default.derandomize and runs[0] == runs[1] and len(set(runs[0])) > 1
