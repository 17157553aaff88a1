"""The problem constants of assumptions (A1)–(A3) and the two variance models.

``ProblemConstants(L, sigma2, gap)`` holds L (smoothness), σ² (variance of one
stochastic gradient) and Δ = f(θ₀) − f_* (initial gap), validated on
construction. The variance of a mini-batch gradient of size b is

* ``WithReplacement()``: b i.i.d. draws, variance σ²/b (A3, the paper's model);
* ``WithoutReplacement(n)``: b distinct samples of n, variance
  (n − b)/(n − 1) · σ²/b — what a shuffling data loader does.

>>> ProblemConstants(L=1.0, sigma2=2.0, gap=3.0)
ProblemConstants(L=1.0, sigma2=2.0, gap=3.0)
>>> WithoutReplacement(n=11).factor(6)
0.5
>>> ProblemConstants(L=1.0, sigma2=-1.0, gap=3.0)
Traceback (most recent call last):
...
sfotheory.validation.ParameterError: The 'sigma2' parameter of ProblemConstants must be >= 0 (a variance cannot be negative). Got sigma2=-1.0 instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validation import check_greater, check_integer, check_positive, check_real, fail

__all__ = ["ProblemConstants", "VarianceModel", "WithReplacement", "WithoutReplacement", "variance_model"]


@dataclass(frozen=True)
class ProblemConstants:
    """L > 0, σ² ≥ 0 and Δ = f(θ₀) − f_* ≥ 0 of assumptions (A1)–(A2)."""

    L: float
    sigma2: float
    gap: float

    def __post_init__(self):
        where = "ProblemConstants"
        object.__setattr__(self, "L", check_positive(self.L, "L", where, reason="f must be L-smooth with L > 0"))
        object.__setattr__(self, "sigma2", check_greater(
            self.sigma2, 0.0, "sigma2", where, strict=False, reason="a variance cannot be negative"))
        object.__setattr__(self, "gap", check_greater(
            self.gap, 0.0, "gap", where, strict=False, reason="gap = f(theta_0) - f_* is never negative"))

    @property
    def eta_limit(self) -> float:
        """2/L, the learning rate every bound of Proposition 1 must stay below."""
        return 2.0 / self.L

    def to_dict(self) -> dict:
        return {"L": self.L, "sigma2": self.sigma2, "gap": self.gap}


class VarianceModel:
    """How the mini-batch variance scales with b: Var = factor(b) · σ²/b."""

    name: str = ""

    def factor(self, b):  # pragma: no cover - abstract
        raise NotImplementedError

    def check_batch_size(self, b, where: str):
        return check_real(b, "b", where, allow_array=True)


@dataclass(frozen=True)
class WithReplacement(VarianceModel):
    """b i.i.d. draws: variance σ²/b (factor 1)."""

    name = "with_replacement"

    def factor(self, b):
        return np.ones_like(np.asarray(b, dtype=float)) if np.ndim(b) else 1.0

    def to_dict(self) -> dict:
        return {"model": self.name}


@dataclass(frozen=True)
class WithoutReplacement(VarianceModel):
    """b distinct samples out of n: variance (n − b)/(n − 1) · σ²/b, zero at b = n."""

    n: int

    name = "without_replacement"

    def __post_init__(self):
        check_integer(self.n, "n", "WithoutReplacement", minimum=2,
                      reason="sampling without replacement needs at least two samples")

    def factor(self, b):
        return (self.n - np.asarray(b, dtype=float)) / (self.n - 1) if np.ndim(b) else (self.n - b) / (self.n - 1)

    def check_batch_size(self, b, where: str):
        b = check_real(b, "b", where, allow_array=True)
        if np.any(np.asarray(b) > self.n):
            fail("b", where, f"<= n = {self.n}", b, reason="a batch drawn without replacement cannot exceed the data set")
        return b

    def to_dict(self) -> dict:
        return {"model": self.name, "n": self.n}


def variance_model(name: str = "with_replacement", n: int | None = None) -> VarianceModel:
    """Build a variance model from its name, ``"with_replacement"`` or ``"without_replacement"``."""
    if name == "with_replacement":
        return WithReplacement()
    if name == "without_replacement":
        if n is None:
            fail("n", "variance_model", "given for sampling without replacement", n)
        return WithoutReplacement(int(n))
    fail("name", "variance_model", "'with_replacement' or 'without_replacement'", name)
