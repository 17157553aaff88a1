"""paper_checks: every claim of Umeda & Iiduka (2025) as a runnable check with a verdict.

One module per claim or question; each defines ``CLAIM`` (a :class:`~paper_checks.common.ClaimInfo`
whose ``part`` says whether it is a claim of the paper or our question) and
``run(ctx: RunContext) -> CheckResult``, and runs as a script
(``python -m paper_checks.<module> [--mode M] [--out DIR]``). ``sfo reproduce`` runs them all and
writes one report (:mod:`paper_checks.report`), the paper's claims first; verdicts are PASS, FAIL or
INCONCLUSIVE (:mod:`paper_checks.verdicts`).
"""

#: The checks in report order (module names): the paper's claims, then our questions.
CHECKS = [
    "check_proposition1_bound",
    "check_critical_batch_size",
    "check_exponential_vs_linear",
    "check_adaptive_vs_baselines",
    "check_gamma_boundary",
    "check_eps0_sensitivity",
    "check_measurement_cost",
    "check_beyond_sgd",
]
