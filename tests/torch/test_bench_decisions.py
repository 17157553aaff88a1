"""benchmarks/bench_decisions.py: its replay of an indifference zone on recorded looks decides as the
sequential monitor itself does (the replay is what its report's zone table rests on), and its kept runs
are keyed on each monitor's own settings."""

from __future__ import annotations

import math


import pytest

from tests.benchmark_module import benchmark_module

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from sfotorch.monitors import SequentialMonitor  # noqa: E402
from tests.torch.test_sequential_monitor import least_squares, model_at  # noqa: E402



@pytest.fixture(scope="module")
def bench():
    with benchmark_module("bench_decisions") as module:
        yield module


@pytest.mark.parametrize("rho", [0.1, 0.25])
def test_the_zone_replayed_on_zone_free_looks_decides_as_the_monitor_with_the_zone(bench, rho):
    """Near ε_m (ratios 0.7 … 1.4, 8 checks each; ε_m² = 8, large against the per-sample noise, so that
    zone stops happen): the decision and cost replayed from a zone-free check's looks equal those of a
    monitor with tolerance ρ on the same subsets (same seed and call), and ρ = 0 replays the zone-free
    check itself."""
    x, y, w_ls, hess = least_squares()
    eps = math.sqrt(8.0)
    zone_stops = 0
    for ratio in (0.7, 0.9, 1.0, 1.1, 1.4):
        model = model_at(x, w_ls, hess, ratio * eps * eps)
        free = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, seed=7)
        zoned = SequentialMonitor(model, (x, y), nn.MSELoss(), initial_size=64, blocks=8, tolerance=rho, seed=7)
        q, n = free.quantile(), free.n
        for _ in range(8):
            a, b = free.measure(eps_m=eps), zoned.measure(eps_m=eps)
            looks = [[look["samples"], look["sq_norm"], look["norm_se"]] for look in a.extra["looks"]]
            assert bench.zone_decision(looks, eps, q, n, 0.0) == (a.norm <= eps, a.cost)
            assert bench.zone_decision(looks, eps, q, n, rho) == (b.norm <= eps, b.cost)
            zone_stops += b.extra["decision"].endswith("(zone)")
    assert zone_stops >= (5 if rho > 0.2 else 1)          # the zone branch of the replay is exercised


def test_kept_runs_are_keyed_on_the_workload_and_the_monitors_own_settings(bench):
    cfg = dict(bench.CONFIG)
    changed = dict(cfg, sequential={**cfg["sequential"], "initial_size": 128})
    assert bench.run_key("exact", cfg) == bench.run_key("exact", changed)
    assert bench.run_key("subsampled", cfg) == bench.run_key("subsampled", changed)
    assert bench.run_key("sequential", cfg) != bench.run_key("sequential", changed)
    assert bench.run_key("debiased", cfg) != bench.run_key("debiased", changed)     # screened by the test
    assert bench.run_key("exact", cfg) != bench.run_key("exact", dict(cfg, tau=100))
