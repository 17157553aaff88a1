r"""Our question: beyond SGD — does the adaptive schedule still save SFO with momentum SGD and with Adam?

**Question** (the paper names other optimizers, e.g. Adam, as future work). Propositions 1–3 are
derived for plain mini-batch SGD; for other optimizers it is an open question, not a claim of the
paper.

**Setup.** The adaptive-vs-constant comparison of :mod:`paper_checks.check_adaptive_vs_baselines`
(same data, CNN, warm start and ε₀ rule, δ = 2, γ = 1.4, τ, thresholds, the authors' constant batch
and budget, the exact monitor at every check, thresholds reached from above) with two more
optimizers. Learning rates by a stated
rule, fixed before any run: plain SGD η₀ = 0.1 (the paper's); heavy-ball momentum β = 0.9 with
η₀ = 0.01, so that the effective step η₀/(1 − β) = 0.1 equals plain SGD's; Adam with torch's
default η₀ = 10⁻³ (β = (0.9, 0.999)). The adaptive schedule multiplies η by γ at each stage for
every optimizer, exactly as for SGD.

**Verdict (defined before the runs).** Our own criterion for this open question: for each of
momentum SGD and Adam, the paired difference adaptive − constant in training SFO to the final
threshold ε_M over seeds, with its 95% t interval: PASS below 0, FAIL above 0, else INCONCLUSIVE
(one seed is always INCONCLUSIVE). A run that never reaches ε_M is censored at what it spent. Plain
SGD (full mode) is reported as the reference, not judged here. The SFO with the adaptive schedule's
checks counted is reported beside it.

Full mode: more seeds and the full Fashion-MNIST training set with the 94 k-parameter CNN.
"""

from __future__ import annotations

import math
import sys

from .check_adaptive_vs_baselines import SETTINGS as BASE_SETTINGS
from .check_adaptive_vs_baselines import schedules, start_points, thresholds
from .common import CheckResult, ClaimInfo, Comparison, RunContext, save_figure, script_main
from .torch_runs import fmt_mean_std, mean_std, torch_threads, train_run, training_data
from .verdicts import paired_less

CLAIM = ClaimInfo(
    id="beyond_sgd",
    title="Beyond SGD: the adaptive schedule with momentum SGD and Adam",
    statement="With momentum SGD and with Adam, the adaptive joint schedule reaches the final threshold ε_M "
              "with no more SFO than a constant batch (an open question of the paper, tested as stated)",
    part="question",
    source="Umeda & Iiduka (2025), conclusion (future work: other optimizers such as Adam)",
)

#: Learning rate η₀ per optimizer, by the rule stated in the module docstring.
LEARNING_RATES = {"sgd": 0.1, "momentum": 0.01, "adam": 1e-3}


def _settings(mode: str, **changes) -> dict:
    s = {k: v for k, v in BASE_SETTINGS[mode].items() if k != "cifar"}
    s.update(changes)
    return s


SETTINGS = {
    "smoke": _settings("smoke", optimizers=["momentum", "adam"], momentum=0.9),
    "quick": _settings("quick",
                       seeds=[0],                          # one seed per optimizer and schedule (budget)
                       optimizers=["momentum", "adam"],    # plain SGD is the adaptive_vs_baselines claim's
                       momentum=0.9),                      # heavy-ball β
    "standard": _settings("standard", seeds=[0, 1, 2], optimizers=["momentum", "adam"], momentum=0.9),
    "full": _settings("full", seeds=[0, 1, 2], optimizers=["sgd", "momentum", "adam"], momentum=0.9),
}


def run(ctx: RunContext) -> CheckResult:
    s = ctx.settings(SETTINGS)
    data = training_data(s["dataset"], s["n"])
    runs = {}
    eps = None
    with torch_threads(s["torch_threads"]):
        states, eps0, _ = start_points(s, data, ctx)
        for opt in s["optimizers"]:
            sc = schedules({**s, "eta0": LEARNING_RATES[opt]}, eps0)
            eps = thresholds(sc["adaptive"], s["final_stage"])
            for name in ("adaptive", "constant"):
                for seed in s["seeds"]:
                    def tick(step, stage, _n=f"{opt}/{name}/seed{seed}"):
                        ctx.tick(run=_n, step=step, stage=stage)
                    runs.setdefault((opt, name), []).append(train_run(
                        sc[name], data, seed=seed, max_steps=10**9, max_samples=s["max_samples"],
                        stop_norm=eps[-1], optimizer=opt, momentum=s["momentum"], widths=s["widths"],
                        label=f"{opt}/{name}", tick=tick, init_state=states[seed]))
    final = eps[-1]
    comparisons, notes = [], []
    for opt in s["optimizers"]:
        a = [r.sfo_to(final, counted=False) for r in runs[(opt, "adaptive")]]
        c = [r.sfo_to(final, counted=False) for r in runs[(opt, "constant")]]
        ac = [r.sfo_to(final, counted=True) for r in runs[(opt, "adaptive")]]
        ma, mc = mean_std(a)[0], mean_std(c)[0]
        ok = ma != float("inf") and ma <= mc
        line = (f"adaptive {fmt_mean_std(a, 'k', 1e3)} vs constant {fmt_mean_std(c, 'k', 1e3)} "
                f"(adaptive with its checks counted: {fmt_mean_std(ac, 'k', 1e3)})")
        stages = [r.records[-1].stage if r.records else 0 for r in runs[(opt, "adaptive")]]
        notes.append(f"{opt} (η₀ = {LEARNING_RATES[opt]:g}): adaptive final stages {stages}, stop reasons "
                     f"{[r.stop_reason for r in runs[(opt, 'adaptive')]]} / constant "
                     f"{[r.stop_reason for r in runs[(opt, 'constant')]]}")
        if opt == "sgd":
            notes.append(f"plain SGD reference (not judged here): {line}, adaptive ≤ constant: {ok}")
            continue
        ta = [r.train_samples for r in runs[(opt, "adaptive")]]
        tc = [r.train_samples for r in runs[(opt, "constant")]]
        judged = paired_less([v if math.isfinite(v) else t for v, t in zip(a, ta)],
                             [v if math.isfinite(v) else t for v, t in zip(c, tc)],
                             censored_a=[math.isinf(v) for v in a], censored_b=[math.isinf(v) for v in c])
        comparisons.append(Comparison.judged(
            f"{opt}: training SFO to ε_M = {final:.3g}, adaptive - constant (paired over seeds)", judged,
            "< 0 (our question: the paper makes no claim for these optimizers)", measured=f"{line}; difference "
            f"{judged.text()}"))
    figures = _figure(ctx, runs, eps)
    return CheckResult.from_comparisons(
        CLAIM, ctx.mode, comparisons,
        tolerance="our question, not a claim of the paper: the 95% t interval of the paired difference adaptive - "
                  "constant in training SFO to the final threshold below 0 = PASS, above 0 = FAIL, else INCONCLUSIVE "
                  "(with one seed always INCONCLUSIVE); a run that did not reach eps_M is censored at what it spent",
        figures=figures, notes="; ".join(notes) + ".", seeds=list(s["seeds"]),
        settings={**s, "learning_rates": LEARNING_RATES, "thresholds": [round(e, 4) for e in eps]})


def _figure(ctx: RunContext, runs: dict, eps: list) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    opts = sorted({k[0] for k in runs}, key=["sgd", "momentum", "adam"].index)
    fig, axes = plt.subplots(1, len(opts), figsize=(4.2 * len(opts), 3.8), squeeze=False)
    for ax, opt in zip(axes[0], opts):
        for name, color in (("adaptive", "C0"), ("constant", "C1")):
            for i, r in enumerate(runs[(opt, name)]):
                ax.plot([x.train_samples for x in r.records], [x.norms["exact"] for x in r.records], color=color,
                        alpha=0.7, label=name if i == 0 else None)
        for e in eps:
            ax.axhline(e, color="grey", lw=0.6, ls="--")
        ax.set(xscale="log", yscale="log", xlabel="training SFO", ylabel="exact ‖∇f(θ)‖",
               title=f"{opt} (η₀ = {LEARNING_RATES[opt]:g})")
        ax.legend(fontsize=8)
    return [str(save_figure(fig, ctx.figure_path("beyond_sgd.png")))]


if __name__ == "__main__":
    sys.exit(script_main(run, CLAIM))
