# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Propositions 1 and 2 and the stage thresholds, derived with sympy, then checked with numbers
#
# Umeda & Iiduka (arXiv 2508.05302). Every expression below comes from `sfotheory`: this notebook
# only displays and checks it. The derivations are in docs/theory.md, "Proposition 1",
# "Proposition 2", "Stage thresholds" and "Algorithm 2". Symbols: L smoothness, σ² variance of one
# stochastic gradient, Δ = f(θ₀) − f_*, η learning rate, b batch size, ε target norm,
# C₁ = 2Δ/(η(2 − Lη)), C₂ = Lσ²η/(2 − Lη).

# %%
import numpy as np
import sympy as sp
from scipy.optimize import minimize_scalar

from sfotheory import symbols as S
from sfotheory import (ProblemConstants, WithoutReplacement, critical_batch_size, derive_constant_case,
                       derive_critical_batch_size, derive_exponential_stages, derive_polynomial_growth,
                       derive_stage_thresholds, derive_variance_condition, max_lr_increases, proposition1_bound,
                       sfo_complexity, steps_to_eps)
from sfotheory.bounds import BOUND_EXPR
from sfotheory.complexity import C1_EXPR, C2_EXPR

sp.init_printing()

# %% [markdown]
# ## Proposition 1: the general bound
# min_{t<T} E‖∇f(θ_t)‖² ≤ B_T + V_T, written in the sums Σ η_t and Σ φ(b_t) η_t²/b_t:

# %%
BOUND_EXPR

# %% [markdown]
# **Case (i)**, constant b and η: the bound is C₁/T + C₂/b.

# %%
case1 = derive_constant_case()
assert sp.simplify(case1.bound - (C1_EXPR / S.T + C2_EXPR / S.b)) == 0
case1.bound

# %% [markdown]
# **Case (ii)**, b_t = (a t + b₀)^c with constant η: the rate of each regime and the limit constant
# of bound / rate (finite and positive: the bound is Θ(rate)).

# %%
for regime in ("superlinear", "linear", "sublinear"):
    d = derive_polynomial_growth(regime)
    display((regime, d.exponent, d.rate, d.constant_upper))  # noqa: F821 - IPython's display

# %% [markdown]
# **Case (iii)**, b_m = b₀δ^m and η_m = η₀γ^m for K steps each: lim γ^M·bound is finite when γ < √δ,
# so the squared norm bound is O(γ^−M).

# %%
case3 = derive_exponential_stages()
case3.constant

# %% [markdown]
# ## Proposition 2: the critical batch size
# K(b) solves C₁/K + C₂/b = ε², N(b) = K(b)·b, and dN/db = 0 gives b*.

# %%
d = derive_critical_batch_size()
display(d.steps, d.sfo, d.critical, d.second_derivative, d.steps_at_critical, d.sfo_at_critical)  # noqa: F821
assert sp.simplify(d.critical - 2 * S.C2 / S.eps**2) == 0
assert sp.simplify(d.sfo_at_critical - 4 * S.C1 * S.C2 / S.eps**4) == 0

# %% [markdown]
# Without replacement from n samples the variance carries (n − b)/(n − 1), and b* tends to 2C₂/ε² as n → ∞:

# %%
dw = derive_critical_batch_size("without_replacement")
display(sp.simplify(dw.critical), sp.limit(dw.critical, S.n, sp.oo))  # noqa: F821

# %% [markdown]
# ### Numbers: b* against scipy's minimiser of N(b)

# %%
c = ProblemConstants(L=1.0, sigma2=150.0, gap=1.0)
eta, eps = 0.1, 0.5
b_star = critical_batch_size(c, eta, eps)
res = minimize_scalar(lambda b: sfo_complexity(c, eta, eps, b), bounds=(b_star / 1.9, 20 * b_star), method="bounded")
print(f"b* = {b_star:.4f}, scipy's minimiser = {res.x:.4f}, K(b*) = {steps_to_eps(c, eta, eps, b_star):.4f}")
assert abs(res.x - b_star) / b_star < 1e-4
print("without replacement, n = 1000:", critical_batch_size(c, eta, eps, WithoutReplacement(1000)))

# %% [markdown]
# ### Numbers: the numeric bound for constant sequences equals C₁/T + C₂/b

# %%
T = np.arange(1, 6)
trace = proposition1_bound(c, etas=np.full(5, eta), batch_sizes=np.full(5, 64.0))
c1, c2 = (float(C1_EXPR.subs({S.gap: 1, S.eta: eta, S.L: 1})), float(C2_EXPR.subs({S.sigma2: 150, S.eta: eta, S.L: 1})))
np.testing.assert_allclose(trace.total, c1 / T + c2 / 64)
trace.total

# %% [markdown]
# ## Stage thresholds and γ < √δ (docs/theory.md, "Stage thresholds"; γ < √δ in "Proposition 1", case (iii))

# %%
th = derive_stage_thresholds()
vc = derive_variance_condition()
display(th.eps_of_batch, th.eps_m, th.ratio, vc.series, vc.condition)  # noqa: F821
print("LR increases below 2/L for the paper's eta0 = 0.1, gamma = 1.4, L = 1:", max_lr_increases(0.1, 1.4, L=1.0))
