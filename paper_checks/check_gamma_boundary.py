r"""Claim: γ < √δ is the rate condition of the exponential schedule (b ×δ, η ×γ per stage).

Where the paper makes it: Proposition 1 (iii) — with b_m = b₀δ^m and η_m = η₀γ^m the variance sum
Σ_m η_m²/b_m = (η₀²/b₀) Σ_m (γ²/δ)^m is bounded iff γ < √δ, and the paper requires 1 < γ < √δ for
the O(γ^{−M}) rate of its bound.

Setup
-----
The simulator on the noisy quadratic with κ = 1 (d = 100, σ² = 1, L = 1; with every λ_i = L the
variance term C₂/b of Proposition 1 is the exact stationary E‖∇f‖², so the "noise floor" of a stage
has a closed form), the per-stage exponential schedule (``periodic``: K steps per stage, b ×δ,
η ×γ, δ = 2) for γ ∈ {1.0, 1.2, 1.3, 1.4, √2, 1.5, 1.6, 1.8}, M stages, R replicates,
``allow_unstable=True`` for γ ≥ √δ (the rule refuses it by default). Two variants:

* **η uncapped** (η_max = ∞, "large enough not to mask it"): η₀ is small (0.02/L) so that most
  γ stay below 2/L for all M stages; where η₀γ^m does reach 2/L the step itself is unstable, a
  different mechanism, reported separately with the stage where it is predicted
  (:func:`sfotheory.stages.max_lr_increases`);
* **η capped** at η_max = 1/L: what a practical cap does to the same sweep.

Measured per γ: the noise floor of each stage (replicate mean of ‖∇f‖² over the second half of the
stage) against the exact expectation (:func:`sfotheory.quadratic_theory.quadratic_moments`) and the
stationary formula C₂(η_m)/b_m = Lσ²η_m/((2 − Lη_m) b_m); its per-stage trend (least-squares slope of
log floor from stage 2 on — stages 0–1 hold the transient from θ₀ — up to the last stage with
η_m < 2/L); the final ‖∇f‖²; divergence.
Theory per γ: whether Σ_m (γ²/δ)^m is finite (sympy, :func:`sfotheory.stages.derive_variance_condition`).

What the paper states, and what it does not
-------------------------------------------
γ < √δ is the condition under which Proposition 1 (iii)'s bound keeps its O(γ^{−M}) rate: the bias
term falls as 1/Σ_t η_t ~ γ^{−M} and the variance term as (Σ_t η_t²/b_t)/Σ_t η_t, which is
~ γ^{−M} while Σ_m (γ²/δ)^m converges. For √δ ≤ γ < δ the variance sum grows like (γ²/δ)^M and the
variance term falls only as (γ/δ)^M — more slowly, but it still vanishes; at γ ≥ δ it no longer
vanishes. γ < √δ is a rate condition, not a divergence boundary; the practical limit on the
schedule is η_m < 2/L (``docs/theory.md``, "What γ < √δ is and is not").

Expected and criteria (set from these reasons, before results)
--------------------------------------------------------------
* Theory: Σ_m (γ²/δ)^m is finite exactly for γ < √δ — an identity, compared exactly.
* Measured, for every γ of the sweep (all < δ = 2), over the stages with η_m < 2/L where
  Proposition 1 applies: the stage floor of E‖∇f‖² moves the way the bound's variance term
  C₂(η_m)/b_m = Lσ²η_m/((2 − Lη_m) b_m) moves over the same stages. Its per-stage ratio is
  (γ/δ)·(2 − Lη_m)/(2 − Lη_{m+1}): below 1 — decreasing, at the rate (γ/δ) the bound predicts —
  while Lη_m is small, for every γ < δ; rising when η_m nears 2/L within the window, because the
  bound's constant 1/(2 − Lη_max) grows (the practical limit, not the γ < √δ condition). The
  statistic is the slope of log floor per stage, one slope per replicate; PASS when the 95% t
  interval of the mean slope is on the side of the variance term's slope, FAIL when it is wholly on
  the other side, INCONCLUSIVE otherwise.
* Beside the claim, not counted (ours): the measured slope against the exact expectation's and
  against the bound's rate max(−log γ, log(γ/δ)); the simulator's floors against the exact
  expectation (within 3 SE + 5%: the second half of a stage is not fully stationary and successive
  steps are correlated); where uncapped runs break (the first stage with η₀γ^m ≥ 2/L).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from paper_checks.check_exponential_vs_linear import per_stage_decay_slope
from paper_checks.common import CheckResult, ClaimInfo, Comparison, RunContext, save_figure, script_main
from paper_checks.verdicts import INCONCLUSIVE, judge_interval, mean_interval

__all__ = ["CLAIM", "SETTINGS", "run", "variance_sum_bounded"]

CLAIM = ClaimInfo(
    id="gamma_boundary",
    title="gamma < sqrt(delta) is the rate condition (Proposition 1 (iii))",
    statement="With b x delta and eta x gamma per stage, sum eta_m^2/b_m stays bounded iff gamma < sqrt(delta), "
              "which keeps the bound's O(gamma^-M) rate; for sqrt(delta) <= gamma < delta the bound still "
              "vanishes, at rate (gamma/delta)^M, so E||grad f||^2 keeps decreasing while eta_m < 2/L.",
    source="Proposition 1 (iii) (gamma^2 < delta); docs/theory.md, \"Proposition 1\"",
)

_BASE = {
    "problem": {"name": "quadratic", "dim": 100, "kappa": 1.0, "sigma2": 1.0, "gap": 1.0},
    "delta": 2.0,                     # batch growth per stage
    "gammas": [1.0, 1.2, 1.3, 1.4, math.sqrt(2.0), 1.5, 1.6, 1.8],   # learning-rate growth per stage
    "b0": 4,                          # samples per step in stage 0
    "eta0": 0.02,                     # learning rate in stage 0 (1/L units)
    "eta_cap": 1.0,                   # eta_max of the capped variant (1/L units)
    "stage_steps": 150,               # K: steps per stage (>= 3 relaxation times 1/(2 eta0 L) = 25)
    "stages": 10,                     # M
    "trend_from": 2,                  # first stage of the trend fit: stages 0-1 still hold the transient from
                                      # theta_0 (bias 2(1 - eta0 L)^(2t) is ~10% of the stage-1 floor)
}

SETTINGS = {
    "smoke": {**_BASE, "seed": 0, "replicates": 3, "stage_steps": 30, "stages": 4, "trend_from": 1,
              "gammas": [1.2, math.sqrt(2.0), 1.8], "problem": {**_BASE["problem"], "dim": 20}},
    "quick": {**_BASE, "seed": 0, "replicates": 16},
    "standard": {**_BASE, "seed": 0, "replicates": 64},
    "full": {**_BASE, "seed": 0, "replicates": 128, "stages": 14, "stage_steps": 300},
}


def variance_sum_bounded(gamma: float, delta: float) -> bool:
    """Whether Σ_{m≥0} (γ²/δ)^m is finite, by the sympy series of :func:`derive_variance_condition`.

    >>> variance_sum_bounded(1.4, 2.0), variance_sum_bounded(math.sqrt(2.0), 2.0), variance_sum_bounded(1.5, 2.0)
    (True, False, False)
    """
    import sympy as sp

    from sfotheory import symbols as S
    from sfotheory.stages import derive_variance_condition

    d = derive_variance_condition()
    ratio = sp.nsimplify(gamma) ** 2 / sp.nsimplify(delta)
    if ratio == 1:
        return bool(d.boundary_sum.is_finite)
    holds = bool(d.raw_condition.subs({S.gamma: sp.nsimplify(gamma), S.delta: sp.nsimplify(delta)}))
    return holds


def run(ctx: RunContext) -> CheckResult:
    from sfotheory.problems import make_problem
    from sfotheory.rule import periodic
    from sfotheory.simulate import schedule_sequence, simulate
    from sfotheory.stages import max_lr_increases

    cfg = ctx.settings(SETTINGS)
    t0 = time.perf_counter()
    p = dict(cfg["problem"])
    problem = make_problem(p.pop("name"), p, seed=cfg["seed"])
    L = problem.L
    delta, gammas = cfg["delta"], list(cfg["gammas"])
    K, M, R = cfg["stage_steps"], cfg["stages"], cfg["replicates"]
    b_max = int(cfg["b0"] * delta ** M)

    def sched(g, cap):
        return periodic(b0=cfg["b0"], eta0=cfg["eta0"], delta=delta, gamma=g, period=K, b_max=b_max,
                        eta_max=cap, allow_unstable=True)

    unc = [sched(g, math.inf) for g in gammas]
    cap = [sched(g, cfg["eta_cap"]) for g in gammas]
    sim = simulate(problem, unc + cap, eps=1e-12, replicates=R, seed=cfg["seed"], max_steps=K * M,
                   stop_at_hit=False, allow_unstable=True)
    ctx.tick(part="simulate")
    C = len(gammas)
    floors = _stage_floors(sim, K, M, 2 * C)
    mean_floor = np.nanmean(floors, axis=1) if np.isfinite(floors).any() else floors[:, 0]
    b_seq, lr_seq = schedule_sequence(unc + cap, K * M)

    comps = [_variance_sum_row(g, delta) for g in gammas]
    lines = []
    for i, g in enumerate(gammas):
        comps += _trend_rows(cfg, problem, unc[i], g, floors[:, :, i])
        lines.append(f"gamma {g:.4g}: last stage with eta_m < 2/L = "
                     f"{max_lr_increases(cfg['eta0'], g, L=L) if g > 1 else math.inf}")
    comps.append(_against_exact_expectation(problem, gammas, floors, b_seq, lr_seq, K))
    blow_rows, blown = _blow_up_rows(cfg, problem, gammas, floors)
    comps += blow_rows
    broke = [round(g, 4) for i, g in enumerate(gammas) if blown[:, :, i].any()]
    lines.append(f"uncapped runs that blew up within {M} stages: gamma in {broke}")
    for i, g in enumerate(gammas):
        fu = mean_floor[:, i]
        fc = mean_floor[:, C + i]
        lines.append(f"gamma {g:.4g}: floors uncapped " + ", ".join(f"{v:.2g}" for v in fu)
                     + f"; capped at eta_max = {cfg['eta_cap']}: " + ", ".join(f"{v:.2g}" for v in fc)
                     + f"; sum eta^2/b over the run {np.sum(lr_seq[:, i] ** 2 / b_seq[:, i]):.3g}")
    conv_capped = [g for i, g in enumerate(gammas) if np.isfinite(mean_floor[-1, C + i])
                   and mean_floor[-1, C + i] < mean_floor[1, C + i]]
    lines.append(f"with eta capped at {cfg['eta_cap']}/L the final floor is below stage 1's for gamma in "
                 f"{[round(g, 4) for g in conv_capped]} (the cap turns every schedule into b-growth at constant eta)")
    figs = [str(_plot(gammas, mean_floor, cfg, delta, ctx.figure_path("gamma_boundary.png")))]
    tolerance = ("Theory: exact. Trend (counted, every gamma < delta): the 95% t interval of the mean per-replicate "
                 "slope of log stage floor on the side of the bound's variance term C2(eta_m)/b_m over the same "
                 "stages = PASS, wholly on the other side = FAIL, else INCONCLUSIVE. Not counted: the slope beside the "
                 "bound's asymptotic rate; floors vs exact expectation within 3 SE + 5%; the divergence stage where "
                 "eta_0 gamma^m reaches 2/L.")
    return CheckResult.from_comparisons(
        CLAIM, ctx.mode, comps, tolerance=tolerance, figures=figs, notes=" | ".join(lines), seeds=[cfg["seed"]],
        settings={**{k: v for k, v in cfg.items() if k != "gammas"}, "gammas": [round(g, 6) for g in gammas]},
        wall_time_s=time.perf_counter() - t0)


def _stage_floors(sim, K: int, M: int, columns: int) -> np.ndarray:
    """E‖∇f‖² per stage, replicate and schedule [M, R, columns]: the mean of ‖∇f(θ_t)‖² over the
    second half of each stage's K steps (the stage's stationary floor)."""
    steps = sim.trace_step
    sq = sim.trace_norm**2                                      # [obs, R, columns]
    floors = np.full((M, sq.shape[1], columns), np.nan)
    for m in range(M):
        sel = (steps > m * K + K // 2) & (steps <= (m + 1) * K)
        with np.errstate(all="ignore"):
            floors[m] = sq[sel].mean(axis=0)
    return floors


def _variance_sum_row(g: float, delta: float) -> Comparison:
    """The theory row: Σ_m (γ²/δ)^m is finite exactly when γ < √δ (sympy)."""
    theory_bounded = variance_sum_bounded(g, delta)
    return Comparison.exact(
        quantity=f"gamma = {g:.4g}: sum_m (gamma^2/delta)^m finite (sympy)",
        measured="finite" if theory_bounded else "infinite",
        expected="finite" if g < math.sqrt(delta) else "infinite", ok=theory_bounded == (g < math.sqrt(delta)))


def _trend_rows(cfg: dict, problem, schedule, g: float, floors) -> list:
    """The counted trend of the uncapped stage floor ``floors`` [M, R] over stages trend_from..last
    (η_m < 2/L): its per-replicate slope against the sign of the bound's variance term over the same
    stages, and (not counted) beside the bound's asymptotic rate."""
    from sfotheory.stages import max_lr_increases

    m0, M = cfg["trend_from"], floors.shape[0]
    m_limit = max_lr_increases(cfg["eta0"], g, L=problem.L) if g > 1 else math.inf   # last stage with eta_m < 2/L
    last = int(min(M - 1, m_limit))
    fl = floors[m0:last + 1]
    ok_rows = np.all(np.isfinite(fl), axis=0)
    quantity = (f"gamma = {g:.4g} (eta uncapped): per-stage slope of log E||grad f||^2, stages {m0}..{last} "
                f"(eta_m < 2/L)")
    if not (last >= m0 + 2 and ok_rows.sum() >= 2):
        return [Comparison(quantity, f"fewer than 3 stages with eta_m < 2/L from stage {m0} on "
                                     f"(last valid stage {last})", "a slope over >= 3 stages", INCONCLUSIVE)]
    reps = np.array([per_stage_decay_slope(fl[:, r]) for r in np.flatnonzero(ok_rows)])
    floor_slope = per_stage_decay_slope(_stationary(schedule, problem.constants(), last)[m0:])
    side = {"below": 0.0} if floor_slope < 0 else {"above": 0.0}
    expected = (f"{'< 0 (decreasing' if floor_slope < 0 else '> 0 (rising'}: the sign of the bound's variance "
                f"term C2(eta_m)/b_m over these stages, slope {floor_slope:.3f})")
    judged = judge_interval(mean_interval(reps), **side)
    rate = max(-math.log(g), math.log(g / cfg["delta"])) if g > 1 else -math.log(cfg["delta"])
    return [Comparison.judged(quantity, judged, expected),
            Comparison.judged(f"gamma = {g:.4g}: measured slope vs the bound's asymptotic rate", judged,
                              f"max(-log gamma, log(gamma/delta)) = {rate:.3f} (at a fixed eta_max; here eta_m "
                              f"grows towards 2/L)", counts=False)]


def _against_exact_expectation(problem, gammas, floors, b_seq, lr_seq, K: int) -> Comparison:
    """Not counted: the simulator's stage floors (uncapped, stages with η_m < 2/L) against the exact
    expectation of the noisy quadratic, within 3 SE + 5%."""
    from sfotheory.quadratic_theory import quadratic_moments

    R = floors.shape[1]
    worst, worst_txt = 0.0, ""
    for i, g in enumerate(gammas):
        lr = lr_seq[:, i]
        valid_steps = int(np.argmax(lr * problem.L >= 2.0)) if np.any(lr * problem.L >= 2.0) else lr.size
        if valid_steps < K:
            continue
        mom = quadratic_moments(problem, b_seq[:valid_steps, i], lr[:valid_steps])
        t = np.arange(1, valid_steps + 1)
        for m in range(1, valid_steps // K):
            sel = (t > m * K + K // 2) & (t <= (m + 1) * K)
            exact = mom.mean_sq_norm[1:][sel].mean()
            meas = floors[m, :, i]
            if not np.all(np.isfinite(meas)):
                continue
            se = meas.std(ddof=1) / math.sqrt(R)
            dev = abs(meas.mean() - exact) / (3 * se + 0.05 * exact)
            if dev > worst:
                worst = dev
                worst_txt = f"gamma = {g:.4g}, stage {m}: measured {meas.mean():.4g} ± {se:.2g}, exact {exact:.4g}"
    return Comparison.exact(
        quantity="simulator check: stage floors (uncapped, eta_m < 2/L) vs exact expectation",
        measured=f"largest |measured - exact| / (3 SE + 5%) = {worst:.3g} ({worst_txt})",
        expected="<= 1", ok=bool(worst <= 1.0), counts=False)


def _blow_up_rows(cfg: dict, problem, gammas, floors):
    """Not counted: where the uncapped runs break (the first stage whose floor is non-finite or above
    10 ‖∇f(θ₀)‖²) against the first stage with η₀γ^m ≥ 2/L. Returns (rows, the blown mask [M, R, 2C])."""
    from sfotheory.stages import max_lr_increases

    R = floors.shape[1]
    g0 = float(problem.grad_norm(problem.theta0[None])[0]) ** 2
    blown = ~np.isfinite(floors) | (np.nan_to_num(floors, nan=np.inf) > 10 * g0)      # [M, R, 2C]
    rows_out = []
    for i, g in enumerate(gammas):
        rows = blown[:, :, i].any(axis=0)
        if not rows.any():
            continue
        stage_div = int(np.median(np.argmax(blown[:, rows, i], axis=0)))
        m_cross = max_lr_increases(cfg["eta0"], g, L=problem.L) + 1
        rows_out.append(Comparison.exact(
            quantity=f"gamma = {g:.4g} (eta uncapped): first stage with ||grad f||^2 > 10 ||grad f(theta0)||^2",
            measured=f"stage {stage_div} (median over the {rows.sum()}/{R} replicates that blew up)",
            expected=f"stage {m_cross}, the first with eta_0 gamma^m >= 2/L (the step-size limit)",
            ok=stage_div == m_cross, counts=False))
    return rows_out, blown


def _stationary(schedule, constants, last):
    """C₂(η_m)/b_m = Lσ²η_m/((2 − Lη_m) b_m), m = 0..last (the exact stationary floor at κ = 1),
    with (b_m, η_m) from the stage rule's closed form (requires η_m < 2/L up to ``last``)."""
    from sfotheory.complexity import theory_constants
    from sfotheory.rule import stage_values

    b, eta, _ = stage_values(schedule, np.arange(last + 1))
    _, c2 = theory_constants(constants, eta)
    return c2 / b


def _plot(gammas, mean_floor, cfg, delta, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    C = len(gammas)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    m = np.arange(mean_floor.shape[0])
    start = float(np.nanmax(mean_floor[0]))  # clip at 10x the starting floor: a blow-up leaves the axes
    shown = mean_floor[np.isfinite(mean_floor) & (mean_floor > 0)]
    for ax, off, title in ((axes[0], 0, "eta uncapped"), (axes[1], C, f"eta capped at {cfg['eta_cap']}/L")):
        for i, g in enumerate(gammas):
            col = plt.cm.viridis(i / max(C - 1, 1))
            style = "-" if g < math.sqrt(delta) else "--"
            ax.semilogy(m, mean_floor[:, off + i], style, marker="o", ms=3, color=col, label=f"gamma = {g:.3g}")
            over = np.flatnonzero(~(mean_floor[:, off + i] <= 10 * start))
            if over.size:
                ax.annotate(f"gamma = {g:.3g} diverges", (m[over[0]], 10 * start), fontsize=7, color=col,
                            xytext=(-60, -15), textcoords="offset points", arrowprops={"arrowstyle": "->"})
        ax.set_ylim(0.5 * shown.min(), 10 * start)
        ax.set_xlabel("stage m")
        ax.set_title(title + " (dashed: gamma >= sqrt(delta))")
    axes[0].set_ylabel("stage noise floor, mean ||grad f||^2")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(script_main(run, CLAIM))
