r"""Claim: growing the batch size *and* the learning rate exponentially (b ×δ, η ×γ per stage) makes
‖∇f‖ decay faster, per step and per SFO, than growing the batch size linearly with a constant η.

Where the paper makes it: Proposition 1 (iii) (b_m = b₀δ^m, η_m = η₀γ^m, 1 < γ < √δ: the squared
norm bound is O(γ^{−M}) after M stages) against Proposition 1 (ii) (b_m = b₀ + a·m, constant η:
O(log M / M) per stage), and Figure 2 (full-gradient norm of the two adaptive schedulers).

Setup
-----
The simulator (:func:`sfotheory.simulate.simulate`), R independent replicates (their seeds are
functions of (seed, step)), two pairings that start from the same b₀, η₀:

1. **same stage length K** (Proposition 1's setting): the exponential schedule is the library's
   ``periodic`` schedule (b ×δ, η ×γ every K steps); the linear one is the same
   :class:`~sfotheory.rule.Schedule` with ``increment = a`` and δ = γ = 1 (b₀ + a·m every K steps,
   constant η). M stages, with M chosen so that η_m stays below η_max < 2/L (so the rate is not
   capped and Proposition 1 applies at every step);
2. **the adaptive rule** (Algorithm 2, Figure 2's setting): ``adaptive_exponential`` against
   ``adaptive_linear`` with the same ε₀, τ, and stall fallback; ε₀ = √(2C₂(η₀)/b₀), the threshold
   that makes b₀ the critical batch size of stage 0 (``docs/theory.md``, "Stage thresholds").

Measured: the exact ‖∇f(θ_t)‖ of every replicate at every step, on two problems — the noisy
quadratic (strongly convex; its exact expectation is known, :func:`sfotheory.quadratic_theory.quadratic_moments`)
at two condition numbers, κ = 4 and κ = 16 — and for each target ε_j = ε₀·2^{−j/2}
the steps and the training SFO until the *replicate mean* of ‖∇f(θ_t)‖ first falls to ε_j (the
paper's target min_t E‖∇f(θ_t)‖ ≤ ε is an expectation). Both schedules are the same until the first
stage change; a target both reach before it says nothing about growth and is shown, not counted.

Expected and criteria (set from these reasons, before results)
--------------------------------------------------------------
* Steps and SFO to each target: exponential < linear. The statistic is the difference of the two
  schedules' mean-criterion steps (or SFO), with a bootstrap 95% interval over replicates
  (resampled jointly for both schedules). PASS when the interval is below 0, FAIL when above 0,
  INCONCLUSIVE otherwise; a target neither schedule reaches is reported and not judged.
* On the quadratic with the same stage length, the same comparison for the *exact* expectation
  (steps until E‖∇f(θ_t)‖² ≤ ε², exactly): PASS or FAIL.
* Beside, not counted: single-run first passage (the mean over replicates of each replicate's first
  dip below ε), and the per-stage slope of log E‖∇f‖² against −log γ — Proposition 1 (iii)'s
  O(γ^{−M}) is the rate of an upper bound, whose own slope over the same finite window is printed
  beside it (the bound is not tight, so its rate is no prediction of the measured slope).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from paper_checks.common import CheckResult, ClaimInfo, Comparison, RunContext, save_figure, script_main
from paper_checks.verdicts import FAIL, INCONCLUSIVE, PASS, Judgement, bootstrap_interval, mean_interval, paired_less

__all__ = ["CLAIM", "SETTINGS", "first_hits", "per_stage_decay_slope", "run"]

CLAIM = ClaimInfo(
    id="exponential_vs_linear",
    title="Exponential BS and LR growth beats linear BS growth (Proposition 1 (iii) vs (ii))",
    statement="With b x delta and eta x gamma per stage (1 < gamma < sqrt(delta)), ||grad f|| decays faster per step "
              "and per SFO than with b + a per stage and constant eta; E||grad f||^2 = O(gamma^-M) after M stages.",
    source="Proposition 1 (ii)-(iii); Figure 2",
)

_BASE = {
    "problems": [{"name": "quadratic", "dim": 100, "kappa": 4.0, "sigma2": 4.0, "gap": 1.0},
                 {"name": "quadratic", "dim": 100, "kappa": 16.0, "sigma2": 4.0, "gap": 1.0}],
    "b0": 8,              # samples per step in stage 0
    "eta0": 0.1,          # learning rate in stage 0 (1/L units, L = 1)
    "delta": 2.0,         # batch growth per stage (exponential)
    "gamma": 1.4,         # learning-rate growth per stage (exponential), < sqrt(2)
    "eta_max": 1.0,       # cap on eta (< 2/L = 2); unused within the M stages below
    "b_max": 4096,        # cap on b (samples), for every schedule
    "increment": 8,       # a: samples added per stage (linear)
    "stage_steps": 100,   # K: steps per stage (pairing 1)
    "stages": 7,          # M: eta_6 = 0.1 * 1.4^6 = 0.75 < eta_max
    "tau": 10,            # check interval of the adaptive rule (steps)
    "stall_limit": 300,   # steps in a stage before the adaptive rule's fallback advances it
    "adaptive_steps": 1400,   # step budget of the adaptive runs (same as M*K)
    "targets": 5,         # eps_j = eps0 * 2^(-j/2), j = 0..4
}

SETTINGS = {
    "smoke": {**_BASE, "seed": 0, "replicates": 3, "stage_steps": 20, "stages": 4, "adaptive_steps": 80,
              "stall_limit": 40, "targets": 3,
              "problems": [{**_BASE["problems"][0], "dim": 20}, {**_BASE["problems"][1], "dim": 20}]},
    "quick": {**_BASE, "seed": 0, "replicates": 16},
    "standard": {**_BASE, "seed": 0, "replicates": 128},
    "full": {**_BASE, "seed": 0, "replicates": 128, "stage_steps": 400, "adaptive_steps": 5600,
             "stall_limit": 1200},
}


def per_stage_decay_slope(values) -> float:
    """Least-squares slope of log(values) against the stage index 0, 1, …, M − 1.

    >>> round(per_stage_decay_slope([1.0, 0.5, 0.25, 0.125]), 12) == round(math.log(0.5), 12)
    True
    """
    v = np.asarray(values, dtype=float)
    m = np.arange(v.size, dtype=float)
    return float(np.polyfit(m, np.log(v), 1)[0])


def first_hits(trace_norm, trace_x, eps):
    """Per replicate, trace_x at the first observation with trace_norm ≤ eps (inf where never).

    ``trace_norm`` and ``trace_x`` have shape (observations, replicates).

    >>> first_hits(np.array([[3.0, 3.0], [1.0, 2.5], [0.5, 2.0]]), np.array([[0, 0], [10, 10], [20, 20]]), 1.0)
    array([10., inf])
    """
    below = np.asarray(trace_norm) <= eps
    any_hit = below.any(axis=0)
    idx = np.argmax(below, axis=0)
    x = np.take_along_axis(np.asarray(trace_x, dtype=float), idx[None, :], axis=0)[0]
    return np.where(any_hit, x, np.inf)


def _mean_passage_difference(steps, x_exp, x_lin, n_exp, n_lin, eps, seed: int) -> tuple:
    """Bootstrap over replicates of (x at the first mean passage, exp) − (the same, lin); returns (Judgement, a, b).

    ``n_*`` are the traces [obs, R] of ‖∇f‖, ``x_*`` the traces [obs, R] of what is counted (steps or SFO);
    a schedule's x at the first observation where mean_r ‖∇f‖ ≤ ε is the mean over replicates of x there.
    """
    def at(x, n, idx):
        with np.errstate(invalid="ignore"):
            mean = np.mean(n[:, idx], axis=1)
        hit = np.flatnonzero(mean <= eps)
        return float(np.mean(x[hit[0], idx])) if hit.size else math.inf

    R = n_exp.shape[1]
    a, b = at(x_exp, n_exp, np.arange(R)), at(x_lin, n_lin, np.arange(R))

    def diff(idx):
        da, db = at(x_exp, n_exp, idx), at(x_lin, n_lin, idx)
        return math.nan if math.isinf(da) and math.isinf(db) else da - db

    value, lo, hi, _ = bootstrap_interval(lambda idx: diff(idx), np.arange(R), seed=seed)
    if math.isnan(lo):
        verdict = INCONCLUSIVE
    elif hi < 0:
        verdict = PASS
    elif lo > 0:
        verdict = FAIL
    else:
        verdict = INCONCLUSIVE
    return Judgement(verdict, value, lo, hi, R), a, b


def _schedules(cfg):
    from sfotheory.complexity import theory_constants
    from sfotheory.rule import Schedule, adaptive_exponential, adaptive_linear, periodic

    K = cfg["stage_steps"]
    exp_k = periodic(b0=cfg["b0"], eta0=cfg["eta0"], delta=cfg["delta"], gamma=cfg["gamma"], period=K,
                     eta_max=cfg["eta_max"], b_max=cfg["b_max"])
    lin_k = Schedule("periodic_linear", b0=cfg["b0"], eta0=cfg["eta0"], eps0=1.0, increment=cfg["increment"],
                     trigger="period", period=K, b_max=cfg["b_max"])
    return exp_k, lin_k, theory_constants, adaptive_exponential, adaptive_linear


def run(ctx: RunContext) -> CheckResult:
    from sfotheory.problems import make_problem

    cfg = ctx.settings(SETTINGS)
    t0 = time.perf_counter()
    comps, lines, figs = [], [], []
    for k, spec in enumerate(cfg["problems"]):
        p = dict(spec)
        problem = make_problem(p.pop("name"), p, seed=cfg["seed"])
        c, ln, fig = _one_problem(problem, cfg, ctx, index=k)
        comps += c
        lines += ln
        figs.append(fig)
    tolerance = ("Steps/SFO to each target under the expectation criterion (first t with the replicate mean of "
                 "||grad f(theta_t)|| <= eps): bootstrap 95% interval over replicates of exp - lin below 0 = PASS, "
                 "above 0 = FAIL, else INCONCLUSIVE. Quadratic, same K: the exact expectation E||grad f||^2 <= eps^2, "
                 "exactly. Not counted: single-run first passage; the per-stage slope beside -log gamma and the "
                 "bound's own slope.")
    return CheckResult.from_comparisons(
        CLAIM, ctx.mode, comps, tolerance=tolerance, figures=figs, notes=" | ".join(lines), seeds=[cfg["seed"]],
        settings={k: v for k, v in cfg.items()}, wall_time_s=time.perf_counter() - t0)


def _one_problem(problem, cfg, ctx: RunContext, *, index: int):
    """The comparisons, note lines and figure of one problem."""
    from sfotheory.problems import NoisyQuadratic
    from sfotheory.quadratic_theory import quadratic_moments
    from sfotheory.simulate import schedule_sequence, simulate

    exp_k, lin_k, theory_constants, adaptive_exponential, adaptive_linear = _schedules(cfg)
    _, c2 = theory_constants(problem.constants(), cfg["eta0"])
    eps0 = math.sqrt(2 * c2 / cfg["b0"])
    targets = eps0 * 2.0 ** (-np.arange(cfg["targets"]) / 2)
    exp_a = adaptive_exponential(b0=cfg["b0"], eta0=cfg["eta0"], eps0=eps0, delta=cfg["delta"], gamma=cfg["gamma"],
                                 tau=cfg["tau"], eta_max=cfg["eta_max"], b_max=cfg["b_max"], stall_limit=cfg["stall_limit"],
                                 stall_action="advance")
    lin_a = adaptive_linear(b0=cfg["b0"], eta0=cfg["eta0"], eps0=eps0, increment=cfg["increment"], tau=cfg["tau"],
                            b_max=cfg["b_max"], stall_limit=cfg["stall_limit"], stall_action="advance")
    K, M = cfg["stage_steps"], cfg["stages"]
    R = cfg["replicates"]
    name = f"{problem.name} (kappa = {problem.describe()['params'].get('kappa', '-')})"
    sims = {}
    for label, scheds, steps in (("same K", [exp_k, lin_k], K * M), ("adaptive", [exp_a, lin_a],
                                                                       cfg["adaptive_steps"])):
        sims[label] = simulate(problem, scheds, eps=float(targets[-1]) * 1e-6, replicates=R, seed=cfg["seed"],
                               max_steps=steps, stop_at_hit=False)
        ctx.tick(part=f"{name}/{label}")
    quadratic = isinstance(problem, NoisyQuadratic)
    b_seq, lr_seq = schedule_sequence([exp_k, lin_k], K * M)
    exact_sq = None
    if quadratic:
        exact_sq = np.stack([quadratic_moments(problem, b_seq[:, c], lr_seq[:, c]).mean_sq_norm for c in range(2)])

    comps, lines = [], []
    for label, sim in sims.items():
        exact_row = (lambda eps: _exact_row(exact_sq, name, eps, K)) if label == "same K" and quadratic else None
        comps += _passage_rows(sim, label, name, targets, K, cfg["seed"], lines, then=exact_row)
    row, mean_end = _stage_decay_row(sims["same K"], problem, name, cfg, b_seq, lr_seq)
    comps.append(row)
    t = np.arange(1, K * M + 1)
    exact = None
    if exact_sq is not None:
        e = exact_sq[:, 1:]
        exact = np.array([[e[c][(t > m * K + 0.75 * K) & (t <= (m + 1) * K)].mean() for m in range(M)]
                          for c in range(2)]).T
    lines.append(f"{name}: eps0 = sqrt(2 C2(eta0)/b0) = {eps0:.4g}; stage-end E||grad f||^2 (same K), exp: "
                 + ", ".join(f"{v:.3g}" for v in mean_end[:, 0])
                 + "; lin: " + ", ".join(f"{v:.3g}" for v in mean_end[:, 1]))
    a = sims["adaptive"]
    lines.append(f"{name}: adaptive final stage (mean) exp {a.final_stage[:, 0].mean():.2f} "
                 f"(b = {a.final_batch_size[:, 0].mean():.0f}), lin {a.final_stage[:, 1].mean():.2f} "
                 f"(b = {a.final_batch_size[:, 1].mean():.0f})")
    suffix = "" if index == 0 else f"_{index + 1}"
    fig = str(_plot(sims, targets, mean_end, exact, cfg, ctx.figure_path(f"exponential_vs_linear{suffix}.png"),
                    title=name))
    return comps, lines, fig


def _passage_rows(sim, label: str, name: str, targets, K: int, seed: int, lines: list, *, then=None) -> list:
    """exp − lin in steps and in SFO until the replicate mean ‖∇f‖ ≤ ε, for each target ε (counted
    once the schedules differ), with the single-run first passage beside it (not counted); ``then(ε)``
    gives the rows that follow each target's."""
    if label == "same K":
        split = K
    else:                      # the first stage change of either schedule (median over replicates)
        first = sim.transition_step[:, :, 0].astype(float)
        first[first < 0] = np.inf
        split = float(np.min(np.median(first, axis=0)))
    step_axis = np.broadcast_to(sim.trace_step[:, None], sim.trace_norm.shape[:2]).astype(float)
    comps = []
    for j, eps in enumerate(targets):
        for what, x_exp, x_lin in (("steps", step_axis, step_axis),
                                   ("SFO", sim.trace_sfo[:, :, 0].astype(float), sim.trace_sfo[:, :, 1].astype(float))):
            judged, a, b = _mean_passage_difference(None, x_exp, x_lin, sim.trace_norm[:, :, 0],
                                                    sim.trace_norm[:, :, 1], eps, seed=seed + j)
            sa, sb = _mean_passage_difference(None, step_axis, step_axis, sim.trace_norm[:, :, 0],
                                              sim.trace_norm[:, :, 1], eps, seed=0)[1:]
            quantity = f"{name}, {label}: {what} until mean ||grad f|| <= {eps:.4g}"
            if math.isinf(a) and math.isinf(b):
                lines.append(f"{quantity}: neither schedule reaches it")
                continue
            early = max(sa, sb) <= split
            comps.append(Comparison.judged(
                quantity + (f" (beside, not counted: both reach it by step {split:g}, before the schedules differ)"
                            if early else ""),
                judged, "exp - lin < 0 (bootstrap 95% interval over replicates)",
                measured=f"exp {a:.4g}, lin {b:.4g}; exp - lin {judged.text()}", counts=not early))
            if what == "steps":
                fe = first_hits(sim.trace_norm[:, :, 0], step_axis, eps)
                fl = first_hits(sim.trace_norm[:, :, 1], step_axis, eps)
                comps.append(Comparison.judged(
                    f"{name}, {label} (beside, not counted): single-run first passage, steps to ||grad f|| <= "
                    f"{eps:.4g}", paired_less(fe, fl), "exp - lin < 0 (paired t over replicates)", counts=False))
        if then is not None:
            comps += then(eps)
    return comps


def _exact_row(exact_sq, name: str, eps: float, K: int) -> list:
    """On the quadratic, same K: the first step where the exact E‖∇f‖² ≤ ε² (quadratic_moments), exp
    against lin, when the target is reached after the first stage (else no row)."""
    t_hit = [np.flatnonzero(exact_sq[c] <= eps**2) for c in range(2)]
    ke, kl = (float(t[0]) if t.size else math.inf for t in t_hit)
    if not ((math.isfinite(ke) or math.isfinite(kl)) and max(ke, kl) > K):
        return []
    quantity = f"{name}, same K: steps until the exact E||grad f||^2 <= {eps:.4g}^2 (quadratic_moments)"
    if ke == kl:
        return [Comparison(quantity, f"exp {ke:g}, lin {kl:g}: equal", "exp < lin", INCONCLUSIVE)]
    return [Comparison.exact(quantity, f"exp {ke:g}, lin {kl:g}", "exp < lin", ok=bool(ke < kl))]


def _stage_decay_row(sim, problem, name: str, cfg: dict, b_seq, lr_seq):
    """Not counted: the per-stage slope of log E‖∇f‖² of the exponential schedule (same K; the replicate
    mean over the last quarter of each stage) beside the slope of Proposition 1's bound over the same
    window. Returns (the row, the stage-end means [M, C])."""
    from sfotheory.bounds import proposition1_bound

    K, M, R = cfg["stage_steps"], cfg["stages"], cfg["replicates"]
    sq = sim.trace_norm**2                                   # [obs, R, C]
    steps = sim.trace_step
    ends = np.array([sq[(steps > m * K + 0.75 * K) & (steps <= (m + 1) * K)].mean(axis=0)
                     for m in range(M)])                     # [M, R, C]
    per_rep = np.array([per_stage_decay_slope(ends[1:, r, 0]) for r in range(R)])
    bound = proposition1_bound(problem.constants(), lr_seq[:, 0], b_seq[:, 0], eta_max=cfg["eta_max"]).total
    t = np.arange(1, K * M + 1)
    bound_ends = [bound[(t > m * K + 0.75 * K) & (t <= (m + 1) * K)].mean() for m in range(M)]
    row = Comparison.judged(
        f"{name}, same K (beside, not counted): slope of log E||grad f||^2 per stage, exponential (stages 1..{M - 1})",
        mean_interval(per_rep),
        f"-log gamma = {-math.log(cfg['gamma']):.3f} is the rate of the bound, an upper bound: over this window "
        f"the bound's own slope is {per_stage_decay_slope(bound_ends[1:]):.3f}",
        counts=False)
    return row, ends.mean(axis=1)


def _plot(sims, targets, mean_end, exact, cfg, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax_i, (label, sim) in enumerate(sims.items()):
        ax = axes[ax_i]
        sfo = np.where(sim.trace_sfo >= 0, sim.trace_sfo, np.nan).mean(axis=1)
        mean_norm = np.nanmean(sim.trace_norm, axis=1)
        for c, name in ((0, "exponential"), (1, "linear")):
            ax.plot(sfo[:, c], mean_norm[:, c], label=name, color=f"C{c}")
        for e in targets:
            ax.axhline(e, color="gray", lw=0.5, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training SFO")
        ax.set_ylabel("mean over replicates of ||grad f||")
        ax.set_title(label)
        ax.legend(fontsize=7)
    ax = axes[2]
    m = np.arange(mean_end.shape[0])
    ax.semilogy(m, mean_end[:, 0], "o-", label="exp measured")
    if exact is not None:
        ax.semilogy(m, exact[:, 0], "x--", label="exp exact E")
    ax.semilogy(m, mean_end[:, 1], "o-", label="lin measured")
    ax.semilogy(m, mean_end[0, 0] * cfg["gamma"] ** (-m), ":", color="k", label="gamma^-m (Prop. 1 (iii) rate)")
    ax.set_xlabel("stage m")
    ax.set_ylabel("E||grad f||^2 at stage end")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(script_main(run, CLAIM))
