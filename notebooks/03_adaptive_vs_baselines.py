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
# # Adaptive vs baseline schedules in the simulator
#
# Algorithm 2 (b ×δ, η ×γ when ‖∇f‖ ≤ ε_m) against the constant, periodic, linear and cosine schedules,
# all driven by the same stage rule, on a noisy quadratic with exact constants. Every schedule runs
# R replicates in one vectorised simulation; we compare the steps and the training SFO to reach ε
# (the paper's SFO; docs/theory.md, "SFO accounting"). The exact checks are free on this quadratic
# (its `check_cost` is 0), so the "+ checks" column is 0 here. The learning rate of the growing
# schedules is capped at η_max = 1/L: uncapped, η₀γ^m passes 2/L at the tenth stage (m = 9) and
# SGD diverges (`sfotheory.max_lr_increases`). And b_max must leave room: the noise floor of
# ‖∇f‖, √(C₂/b) with C₂ = Lσ²η/(2 − Lη), grows with η, so at η = 1 a batch of 1024 cannot reach
# ε = 0.02 on this problem (the floor is ≈ 0.031) — b* moves with η, as Proposition 2 says. The
# cell after the schedules asserts these numbers. Set `SFO_NOTEBOOK_SMALL=1` for a quick run.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import mannwhitneyu

from sfotheory import critical_batch_size, make_problem, max_lr_increases, quadratic_moments, simulate, \
    theory_constants
from sfotheory.rule import adaptive_exponential, adaptive_linear, constant, cosine, periodic

SMALL = os.environ.get("SFO_NOTEBOOK_SMALL") == "1"
R = 4 if SMALL else 16
problem = make_problem("quadratic", dim=100 if SMALL else 1000, seed=0)
eps, eta0, tau, max_steps = 0.02, 0.1, 10, 400 if SMALL else 2000
eta_max = 1.0 / problem.L
schedules = [
    constant(b0=8, eta0=eta0, tau=tau),
    constant(b0=128, eta0=eta0, tau=tau),
    periodic(b0=8, eta0=eta0, delta=2, gamma=1.4, period=40, b_max=4096, eta_max=eta_max, tau=tau),
    adaptive_linear(b0=8, eta0=eta0, eps0=0.5, increment=8, tau=tau, b_max=4096),
    adaptive_exponential(b0=8, eta0=eta0, eps0=0.5, delta=2, gamma=1.4, tau=tau, b_max=4096, eta_max=eta_max),
    cosine(b0=128, eta0=eta0, horizon=400, tau=tau),
]
labels = ["constant b=8", "constant b=128", "periodic x2/x1.4", "adaptive linear", "adaptive exponential",
          "cosine b=128"]
result = simulate(problem, schedules, eps=eps, replicates=R, seed=0, max_steps=max_steps, monitor="exact")

# %%
consts = problem.constants()
# Closed form (docs/theory.md, "Proposition 1", case (iii)): eta0 gamma^8 = 1.48 < 2/L <= eta0 gamma^9 = 2.07.
assert max_lr_increases(eta0, 1.4, L=problem.L) + 1 == 9, "the tenth stage (m = 9) is the first past 2/L"
floor_1024 = np.sqrt(theory_constants(consts, 1.0)[1] / 1024)         # sqrt(C2(eta = 1)/b), the noise floor
assert floor_1024 > eps and abs(floor_1024 - 0.031) < 5e-4, floor_1024  # the text's two digits
assert np.sqrt(theory_constants(consts, eta_max)[1] / 4096) < eps, "b_max = 4096 leaves room at eta_max"
assert critical_batch_size(consts, eta_max, eps) > critical_batch_size(consts, eta0, eps), "b* moves with eta"
print(f"floor at eta = 1, b = 1024: {floor_1024:.4f}; b* at eta0: {critical_batch_size(consts, eta0, eps):.0f}, "
      f"at eta_max: {critical_batch_size(consts, eta_max, eps):.0f}")

# %%
for label, row in zip(labels, result.summary()):
    print(f"{label:22s} hit {row['hit_fraction']:.2f}  median steps {row['median_steps']:8.1f}  "
          f"median SFO {row['median_sfo']:10.1f}  + checks {row.get('median_check_sfo', float('nan')):8.1f}")

# %% [markdown]
# What the table shows, asserted in the next cell:
#
# 1. Constant b = 8 sits on its noise floor C₂/8 ≈ 16 ε²: no replicate reaches ε.
# 2. Constant b = 128 sits just above its floor, C₂/128 ≈ 1.03 ε², so its exact E‖∇f(θ_t)‖² (the
#    quantity Propositions 1 and 2 bound) never reaches ε²; yet every replicate's norm dips below ε
#    by fluctuation. Its "median steps" is a first passage, not the paper's criterion
#    (docs/theory.md, "The expectation criterion").
# 3. The growing schedules and the cosine one reach ε in every replicate and none diverges; the
#    exponential runs reach stage 7 or beyond, where η₀γ^m first exceeds η_max (η₀γ⁷ ≈ 1.05), so
#    they end at η = η_max: the cap is in force.
# 4. In steps the adaptive exponential schedule reaches ε before the adaptive linear one and the
#    periodic baseline; in training SFO it spends more than the adaptive linear one.

# %%
summary = result.summary()
hit_steps = [result.hit_step[:, c] for c in range(len(schedules))]   # -1 where not hit: 3. rules that out
hit_sfo = [result.hit_sfo[:, c] for c in range(len(schedules))]
floor_8, floor_128 = (theory_constants(consts, eta0)[1] / b / eps**2 for b in (8, 128))   # C2/b in units of eps^2
assert round(floor_8) == 16 and round(floor_128, 2) == 1.03, (floor_8, floor_128)        # the text's digits
# 1. A run's ||grad f||^2 concentrates around its mean (relative spread ~ sqrt(2/d) << 1 - 1/16).
assert summary[0]["hit_fraction"] == 0
# 2. Exact moments over the whole run; the floor is 3% above eps^2, far beyond float error.
exact_128 = quadratic_moments(problem, [128] * max_steps, [eta0] * max_steps).mean_sq_norm
assert exact_128.min() > eps**2, exact_128.min() / eps**2
assert summary[1]["hit_fraction"] == 1.0
# 3. Counts of the runs' stop reasons and stages.
assert all(row["hit_fraction"] == 1.0 for row in summary[2:]) and all(row["diverged"] == 0 for row in summary)
assert np.all(result.final_stage[:, 4] > max_lr_increases(eta0, 1.4, eta_max=eta_max))   # stage >= 7
assert np.all(result.final_lr[:, 4] == eta_max), result.final_lr[:, 4]                   # min(eta_max, ...)
# 4. One-sided Mann-Whitney tests at the 5% level (exact for R = 4: p = 1/70 when the samples do not overlap).
assert mannwhitneyu(hit_steps[4], hit_steps[3], alternative="less").pvalue < 0.05
assert mannwhitneyu(hit_steps[4], hit_steps[2], alternative="less").pvalue < 0.05
assert mannwhitneyu(hit_sfo[4], hit_sfo[3], alternative="greater").pvalue < 0.05
print(f"constant b=128: min_t E||grad f||^2 = {exact_128.min() / eps**2:.3f} eps^2; exponential runs end in "
      f"stages {sorted(set(result.final_stage[:, 4].tolist()))}")

# %% [markdown]
# Mean ‖∇f(θ_t)‖² over replicates against training SFO (before the first hit):

# %%
fig, ax = plt.subplots(figsize=(7, 4))
sq = result.mean_sq_norm()
sfo = np.where(result.trace_sfo >= 0, result.trace_sfo, np.nan).mean(axis=1)
for c, label in enumerate(labels):
    ax.loglog(sfo[:, c], sq[:, c], label=label)
ax.axhline(eps**2, color="k", ls=":", label="eps^2")
ax.set_xlabel("training SFO")
ax.set_ylabel("mean ||grad f||^2")
ax.legend(fontsize=7)
fig.tight_layout()
