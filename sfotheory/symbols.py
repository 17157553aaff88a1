"""Every sympy symbol of the theory, declared once with its assumptions.

Legend (the paper's notation, arXiv 2508.05302; docs/theory.md, "Setting"):

======== ===================== ==========================================
symbol   name here             meaning
======== ===================== ==========================================
L        ``L``                 smoothness constant of f (A1)
σ²       ``sigma2``            variance bound of one stochastic gradient (A2)
Δ        ``gap``               f(θ₀) − f_*, initial optimality gap
η        ``eta``               (constant) learning rate
η_max    ``eta_max``           largest learning rate used, η_max < 2/L
b        ``b``                 batch size
n        ``n``                 number of training samples (finite sum)
ε        ``eps``               target gradient norm, min_t E‖∇f(θ_t)‖ ≤ ε
T, K     ``T``, ``K``          number of steps (K: steps per stage)
t        ``t``                 step index
m, M     ``m``, ``M``          stage index, number of stages
b₀, η₀   ``b0``, ``eta0``      initial batch size and learning rate
ε₀       ``eps0``              stage-0 threshold
δ, γ     ``delta``, ``gamma``  per-stage growth of b and η
a, c     ``a``, ``c``          polynomial growth b_t = (a t + b₀)^c
s        ``s``                 a positive offset, c = 1 + s or c = 1/(1 + s)
C₁, C₂   ``C1``, ``C2``        constants of Proposition 1 (i)
Σ η_t    ``sum_eta``           Σ_{t<T} η_t (Proposition 1, general sequences)
Σ φη²/b  ``sum_eta2_b``        Σ_{t<T} φ(b_t) η_t²/b_t, φ the variance factor
u        ``u``                 a second positive offset, δ = γ²(1 + u)
======== ===================== ==========================================

>>> from sfotheory.symbols import L, eta
>>> bool((L * eta).is_positive)
True
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "C1", "C2", "K", "L", "M", "T", "a", "b", "b0", "c", "delta", "eps", "eps0", "eta",
    "eta0", "eta_max", "gamma", "gap", "m", "n", "s", "sigma2", "t",
    "sum_eta", "sum_eta2_b", "u",
]

L = sp.Symbol("L", positive=True)
sigma2 = sp.Symbol("sigma^2", positive=True)
gap = sp.Symbol("Delta", positive=True)
eta = sp.Symbol("eta", positive=True)
eta_max = sp.Symbol("eta_max", positive=True)
b = sp.Symbol("b", positive=True)
n = sp.Symbol("n", positive=True, integer=True)
eps = sp.Symbol("epsilon", positive=True)
T = sp.Symbol("T", positive=True, integer=True)
K = sp.Symbol("K", positive=True, integer=True)
t = sp.Symbol("t", nonnegative=True, integer=True)
m = sp.Symbol("m", nonnegative=True, integer=True)
M = sp.Symbol("M", positive=True, integer=True)
b0 = sp.Symbol("b_0", positive=True)
eta0 = sp.Symbol("eta_0", positive=True)
eps0 = sp.Symbol("epsilon_0", positive=True)
delta = sp.Symbol("delta", positive=True)
gamma = sp.Symbol("gamma", positive=True)
a = sp.Symbol("a", positive=True)
c = sp.Symbol("c", positive=True)
s = sp.Symbol("s", positive=True)
C1 = sp.Symbol("C_1", positive=True)
C2 = sp.Symbol("C_2", positive=True)
sum_eta = sp.Symbol("Sigma_eta", positive=True)
sum_eta2_b = sp.Symbol("Sigma_eta2_b", positive=True)
u = sp.Symbol("u", positive=True)
