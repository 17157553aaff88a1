"""sfotheory: the SFO-complexity theory of mini-batch SGD (Umeda & Iiduka 2025, arXiv 2508.05302).

Closed-form theory (sympy and numpy from the same expressions), the one stage
rule of Algorithm 2, synthetic problems and a fast simulator. No torch.
"""

from .constants import ProblemConstants, VarianceModel, WithoutReplacement, WithReplacement, variance_model
from .rule import (
    Event,
    Schedule,
    StageState,
    adaptive_exponential,
    adaptive_linear,
    advance,
    check_due,
    constant,
    cosine,
    initial_state,
    periodic,
    schedule_table,
    stack_schedules,
    stage_values,
)
from .validation import ParameterError

__all__ = [
    "Event",
    "ParameterError",
    "ProblemConstants",
    "Schedule",
    "StageState",
    "VarianceModel",
    "WithReplacement",
    "WithoutReplacement",
    "adaptive_exponential",
    "adaptive_linear",
    "advance",
    "check_due",
    "constant",
    "cosine",
    "initial_state",
    "periodic",
    "schedule_table",
    "stack_schedules",
    "stage_values",
    "variance_model",
]
