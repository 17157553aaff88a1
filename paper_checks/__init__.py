"""paper_checks: every claim of Umeda & Iiduka (2025) as a runnable check with a verdict.

One module per claim; each defines ``CLAIM`` (a :class:`~paper_checks.common.ClaimInfo`) and
``run(mode, out_dir, progress) -> CheckResult``, and runs as a script
(``python -m paper_checks.<module> [--full] [--out DIR]``). ``sfo reproduce`` runs them all and
writes one report (:mod:`paper_checks.report`).
"""

#: The checks in report order: (module name, claim id).
CHECKS = [
    "check_critical_batch_size",
    "check_exponential_vs_linear",
    "check_adaptive_vs_baselines",
    "check_gamma_boundary",
    "check_eps0_sensitivity",
    "check_measurement_cost",
    "check_beyond_sgd",
]
