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
# R replicates in one vectorised simulation; we compare SFO to reach ε with and without the cost of
# measuring ‖∇f‖. The learning rate of the growing schedules is capped at η_max = 1/L: uncapped,
# η₀γ^m passes 2/L at the tenth stage and SGD diverges (`sfotheory.max_lr_increases`). And b_max
# must leave room: the noise floor ησ²/(b(2 − Lη)) grows with η, so at η = 1 a batch of 1024 cannot
# reach ε = 0.02 on this problem (the floor is ≈ 0.031) — b* moves with η, as Proposition 2 says.
# Set `SFO_NOTEBOOK_SMALL=1` for a quick run.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from sfotheory import make_problem, simulate
from sfotheory.rule import adaptive_exponential, adaptive_linear, constant, cosine, periodic

SMALL = os.environ.get("SFO_NOTEBOOK_SMALL") == "1"
R = 4 if SMALL else 16
problem = make_problem("quadratic", dim=100 if SMALL else 1000, seed=0)
eps, eta0, tau = 0.02, 0.1, 10
schedules = [
    constant(b0=8, eta0=eta0, tau=tau),
    constant(b0=128, eta0=eta0, tau=tau),
    periodic(b0=8, eta0=eta0, delta=2, gamma=1.4, period=40, b_max=4096, eta_max=1.0, tau=tau),
    adaptive_linear(b0=8, eta0=eta0, eps0=0.5, increment=8, tau=tau, b_max=4096),
    adaptive_exponential(b0=8, eta0=eta0, eps0=0.5, delta=2, gamma=1.4, tau=tau, b_max=4096, eta_max=1.0),
    cosine(b0=128, eta0=eta0, horizon=400, tau=tau),
]
labels = ["constant b=8", "constant b=128", "periodic x2/x1.4", "adaptive linear", "adaptive exponential",
          "cosine b=128"]
result = simulate(problem, schedules, eps=eps, replicates=R, seed=0, max_steps=400 if SMALL else 2000,
                  monitor="exact")

# %%
for label, row in zip(labels, result.summary()):
    print(f"{label:22s} hit {row['hit_fraction']:.2f}  median steps {row['median_steps']:8.1f}  "
          f"median SFO {row['median_sfo']:10.1f}  + checks {row.get('median_check_sfo', float('nan')):8.1f}")

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
