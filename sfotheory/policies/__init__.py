r"""Batch-size and learning-rate policies under one interface: Algorithm 2 and its peers.

Every policy is a frozen configuration, an explicit state and one pure step
(:mod:`sfotheory.policies.base`), vectorised over rows for the simulator and scalar for a
training loop. Algorithm 2 and its baselines enter through :class:`StageRule`, which wraps
the one stage rule of :mod:`sfotheory.rule`; the peers are the adaptive-batch methods a
user would compare it with:

* :class:`StageRule` — Algorithm 2 (‖∇f‖ ≤ ε_m ⇒ b ×δ, η ×γ) or one of its baselines (periodic,
  constant, cosine); reads ‖∇f‖ every τ steps (a baseline reads nothing); costs the monitor's SFO;
* :class:`NormTest` — Byrd, Chin, Nocedal & Wu 2012: c_b tr Σ̂/b ≤ θ²‖g_B‖², else b grows;
  reads ‖g_B‖², tr Σ̂; no extra SFO;
* :class:`InnerProductTest` — Bollapragada, Byrd & Nocedal 2018: the inner-product and
  orthogonality tests (θ, ν); reads ‖g_B‖², tr Σ̂, V̂_ip; no extra SFO;
* :class:`GradientNoiseScale` — McCandlish et al. 2018: b ← ⌈B̂_simple⌉, η fixed or η₀/(1 + B̂/b);
  reads ‖g_B‖², tr Σ̂; no extra SFO;
* :class:`AdaScale` — Johnson et al. 2020: b fixed, η ← r_t η_base(τ_t), τ += r_t; reads ‖g_B‖²,
  tr Σ̂; no extra SFO;
* :class:`IncreaseBatch` — Smith, Kindermans, Ying & Le 2018: b ×α at each milestone of a step
  schedule; reads nothing.

(Legend in :mod:`sfotheory.policies.base`; each class's docstring gives its authors'
definition, their default constants and where ours differs.)
"""

from .adascale import AdaScale, AdaScaleState
from .base import (
    COMMON_FIELDS,
    ORDERS,
    POLICY_KINDS,
    STATISTIC_COST,
    STATISTICS,
    GrowthState,
    Needs,
    Policy,
    PolicyEvent,
    Statistics,
    check_due,
    initial_state,
    needs,
    policy_from_dict,
    state_from_dict,
    step,
)
from .increase_batch import IncreaseBatch, milestones_from_epochs
from .noise_scale import GradientNoiseScale, NoiseScaleState
from .stage_rule import StageRule
from .variance_tests import InnerProductTest, NormTest

__all__ = [
    "COMMON_FIELDS",
    "ORDERS",
    "POLICY_KINDS",
    "STATISTICS",
    "STATISTIC_COST",
    "AdaScale",
    "AdaScaleState",
    "GradientNoiseScale",
    "GrowthState",
    "IncreaseBatch",
    "InnerProductTest",
    "Needs",
    "NoiseScaleState",
    "NormTest",
    "Policy",
    "PolicyEvent",
    "StageRule",
    "Statistics",
    "check_due",
    "initial_state",
    "milestones_from_epochs",
    "needs",
    "policy_from_dict",
    "state_from_dict",
    "step",
]
