"""sfotheory: the SFO-complexity theory of mini-batch SGD (Umeda & Iiduka 2025, arXiv 2508.05302).

Closed-form theory (sympy and numpy from the same expressions), the one stage
rule of Algorithm 2, its peer policies under one interface (``sfotheory.policies``),
synthetic problems and a fast simulator. No torch. ``sfotheory.testing`` (hypothesis,
a test extra) property-tests any policy.
"""

from .bounds import (
    BoundTrace,
    derive_constant_case,
    derive_exponential_stages,
    derive_polynomial_growth,
    proposition1_bound,
)
from .cbs import CBSResult, cbs_sweep, plot_cbs
from .complexity import (
    critical_batch_size,
    critical_batch_size_sensitivity,
    derive_critical_batch_size,
    min_batch_size,
    sfo_complexity,
    steps_to_eps,
    theory_constants,
)
from .constants import ProblemConstants, VarianceModel, WithoutReplacement, WithReplacement, variance_model
from .policies import (
    AdaScale,
    GradientNoiseScale,
    IncreaseBatch,
    InnerProductTest,
    NormTest,
    Policy,
    PolicyEvent,
    StageRule,
    Statistics,
)
from .problems import PROBLEMS, CauchyRegression, LeastSquares, Logistic, NoisyQuadratic, Problem, make_problem
from .quadratic_theory import expected_critical_batch_size, expected_steps_to_eps, quadratic_moments
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
from .simulate import SimulationResult, schedule_sequence, simulate
from .simulate_policies import PolicyResult, simulate_policies
from .stages import (
    derive_lr_increases,
    derive_stage_thresholds,
    derive_variance_condition,
    max_lr_increases,
)
from .validation import ParameterError

__all__ = [
    "CBSResult",
    "CauchyRegression",
    "LeastSquares",
    "Logistic",
    "NoisyQuadratic",
    "PROBLEMS",
    "Problem",
    "SimulationResult",
    "PolicyResult",
    "simulate_policies",
    "AdaScale",
    "GradientNoiseScale",
    "IncreaseBatch",
    "InnerProductTest",
    "NormTest",
    "Policy",
    "PolicyEvent",
    "StageRule",
    "Statistics",
    "cbs_sweep",
    "expected_critical_batch_size",
    "expected_steps_to_eps",
    "make_problem",
    "plot_cbs",
    "quadratic_moments",
    "schedule_sequence",
    "simulate",
    "BoundTrace",
    "critical_batch_size",
    "critical_batch_size_sensitivity",
    "derive_constant_case",
    "derive_critical_batch_size",
    "derive_exponential_stages",
    "derive_lr_increases",
    "derive_polynomial_growth",
    "derive_stage_thresholds",
    "derive_variance_condition",
    "max_lr_increases",
    "min_batch_size",
    "proposition1_bound",
    "sfo_complexity",
    "steps_to_eps",
    "theory_constants",
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
