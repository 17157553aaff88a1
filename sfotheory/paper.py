"""The authors' settings (Umeda & Iiduka 2025, CIFAR-100 runs), in one place.

>>> PAPER_ADAPTIVE["b0"], PAPER_ADAPTIVE["gamma"]
(8, 1.4)
>>> paper_schedule().name
'adaptive_exponential'
"""

from __future__ import annotations

from .rule import Schedule, adaptive_exponential, constant, periodic

__all__ = ["PAPER_ADAPTIVE", "PAPER_CONSTANT", "PAPER_PERIODIC", "paper_schedule", "paper_baselines"]

#: Algorithm 2 as run by the authors: b₀ = 8, η₀ = 0.1, ε₀ = 0.5, δ = 2, γ = 1.4, τ = 1000 steps, b_max = 4096.
PAPER_ADAPTIVE = {"b0": 8, "eta0": 0.1, "eps0": 0.5, "delta": 2.0, "gamma": 1.4, "tau": 1000, "b_max": 4096}
#: The constant baseline: b = 128, η = 0.1.
PAPER_CONSTANT = {"b0": 128, "eta0": 0.1}
#: The periodic baseline: the same ×δ / ×γ growth every 20 000 steps from b₀ = 8.
PAPER_PERIODIC = {"b0": 8, "eta0": 0.1, "delta": 2.0, "gamma": 1.4, "period": 20_000, "b_max": 4096}


def paper_schedule(**overrides) -> Schedule:
    """The authors' adaptive joint schedule (Algorithm 2, exponential growth), with optional overrides."""
    return adaptive_exponential(**{**PAPER_ADAPTIVE, **overrides})


def paper_baselines() -> dict[str, Schedule]:
    """The authors' constant and periodic baselines."""
    return {"constant": constant(**PAPER_CONSTANT), "periodic": periodic(**PAPER_PERIODIC)}
