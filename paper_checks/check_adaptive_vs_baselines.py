r"""Claim 3: the adaptive joint scheduler beats fixed and periodic schedules (Algorithm 2).

**Claim** (Umeda & Iiduka 2025, Algorithm 2 and its CIFAR experiments; issue 7, claim 3): growing
b ×δ and η ×γ whenever the full-gradient norm falls below ε_m = ε₀ √(b₀/b_m) reaches each
threshold ε_m with fewer SFO (gradient evaluations Σ_t b_t) and fewer steps than a constant batch
or the same growth applied on a fixed period.

**Setup.** Plain SGD on a small CNN and a Fashion-MNIST training subset (the first n images, no
augmentation), the same data, seeds (initialisation and batch order) and check interval τ for
three schedules built by :mod:`sfotheory.rule`:

* adaptive — ``adaptive_exponential(b₀ = 8, η₀ = 0.1, ε₀, δ = 2, γ = 1.4, τ, b_max)``;
* constant — b = the authors' 128 scaled to the subset (same 390 steps an epoch, rounded to a
  power of two, at least b₀), η = 0.1;
* periodic — b ×2, η ×1.4 every P steps, the authors' 20 000 steps at b₀ = 8 scaled to the
  subset in epochs (:func:`paper_checks.torch_runs.scaled_to_subset`), same b_max.

Every schedule is measured the same way: the exact monitor's ‖∇f(θ)‖ over the whole subset, in
eval mode, after every τ-th step (observation only for the two baselines). A threshold ε_m is
*reached* at the first check whose exact norm is ≤ ε_m after one where it was above ε_m (reaching it
from above: near initialisation the network sits on a plateau with a small gradient, so thresholds
above that level are "crossed" at the first check by every schedule). SFO is reported two ways: training only
(the paper's and the reference code's count) and with the measurement counted (n per check for the
adaptive schedule, which needs its checks; the baselines need none). Runs stop at the final
threshold ε_M or at the SFO budget; several seeds, mean ± sample std.

**Verdict and tolerance (set before the runs).** SFO is cumulative, so the final threshold ε_M
carries every earlier stage's cost; the verdict is taken there. For each baseline, PASS needs the
adaptive mean to be strictly below the baseline mean in (i) steps, (ii) training SFO and (iii) SFO
with the measurement counted — a one-sided inequality with no slack, because the claim is
"fewer"; a baseline that never reaches ε_M within the budget counts as more. The notes say
whether each gap exceeds the seeds' spread (one pooled std); with 2–3 seeds a gap inside it is not
resolved either way. Every threshold ε₀…ε_M is tabulated in the notes and plotted.

Full mode: more seeds, the full 60 000-image Fashion-MNIST training set and the 94 k-parameter CNN;
on CIFAR with ResNet-18 when ``ctx.data_dir`` holds CIFAR-10 and CUDA is available (not run here:
this machine has no GPU).
"""

from __future__ import annotations

import math
import sys

from sfotheory import rule

from .common import CheckResult, ClaimInfo, Comparison, RunContext, save_figure, script_main
from .torch_runs import fmt_mean_std, mean_std, scaled_to_subset, torch_threads, train_run, training_data

CLAIM = ClaimInfo(
    id="adaptive_vs_baselines",
    title="The adaptive joint scheduler beats fixed and periodic schedules",
    statement="Algorithm 2 (b ×δ, η ×γ when ‖∇f‖ ≤ ε_m) reaches each threshold ε_m with fewer SFO and steps "
              "than a constant batch or the same growth on a fixed period",
    source="Umeda & Iiduka (2025), Algorithm 2 and the CIFAR experiments (adaptive vs constant b = 128 and "
           "periodic ×2/×1.4 every 20 000 steps)",
)

SETTINGS = {
    "smoke": {
        "dataset": "fashion_mnist",
        "n": 256,                     # training images (the first n)
        "widths": [8, 16, 32],        # CNN channels (a 6 k-parameter SmallCNN, for speed)
        "seeds": [0],
        "b0": 8,                      # samples
        "eta0": 0.1,                  # learning rate
        "eps0": 1.0,                  # ‖∇f‖ threshold of stage 0
        "delta": 2.0,
        "gamma": 1.4,
        "b_max": 128,                 # samples
        "final_stage": 2,             # the last threshold is ε_M with M = final_stage
        "tau": 8,                     # steps between checks
        "period": 16,                 # steps
        "b_const": None,              # samples (None: the authors' 128 scaled to n)
        "max_samples": 600,           # training SFO budget per run
        "torch_threads": 1,
    },
    "quick": {
        "dataset": "fashion_mnist",
        "n": 512,                     # training images (the first n): an exact check costs n
        "widths": None,               # the 94 k-parameter small CNN (sfotorch.models "small_cnn")
        "seeds": [0, 1],
        "b0": 8,                      # samples (the paper's)
        "eta0": 0.1,                  # learning rate (the paper's)
        "eps0": 1.0,                  # ‖∇f‖ threshold of stage 0 (the reference CPU run's: 0.088 · √(1024/8))
        "delta": 2.0,                 # the paper's
        "gamma": 1.4,                 # the paper's
        "b_max": 256,                 # samples (n / 2)
        "final_stage": 3,             # ε_M = ε₀ √(b₀ / (b₀ δ^M)) = 0.354 at b = 64
        "tau": 32,                    # steps: 2 checks an epoch at b₀ (the authors' τ scaled in epochs, 10
                                      # steps, would make the checks cost 6.25× the training at b₀: over budget)
        "period": None,               # steps: the authors' 20 000 at b₀ = 8 in epochs, 3.2 n / b₀ = 205
        "b_const": None,              # samples: the authors' 128 at the same steps per epoch → 8
        "max_samples": 40_000,        # training SFO budget per run (78 epochs of 512): with 16 000 no schedule
                                      # reached ε_M and the verdict was unresolved; runs stop at ε_M
        "torch_threads": 1,           # measured fastest on the 2 busy cores
    },
    "full": {
        "dataset": "fashion_mnist",
        "n": 60_000,                  # the whole training set
        "widths": None,               # the 94 k-parameter small CNN
        "seeds": [0, 1, 2, 3, 4],
        "b0": 8,
        "eta0": 0.1,
        "eps0": 1.0,
        "delta": 2.0,
        "gamma": 1.4,
        "b_max": 4096,                # the authors'
        "final_stage": 6,
        "tau": None,                  # the authors' scaled in epochs: 1200 steps
        "period": None,               # 24 000 steps
        "b_const": None,              # 128 (rounded 153)
        "max_samples": 3_000_000,     # 50 epochs
        "torch_threads": None,
        # CIFAR-10 + ResNet-18 on CUDA, when ctx.data_dir holds it (the authors' setting)
        "cifar": {"dataset": "cifar10", "model": "resnet18", "n": 50_000, "eps0": 0.5, "b_max": 4096,
                  "final_stage": 6, "max_samples": 10_000_000},
    },
}

SCHEDULES = ("adaptive", "constant", "periodic")


def schedules(s: dict) -> dict:
    """The three schedules of a settings dict (τ, P and the constant b scaled to n where None)."""
    scaled = scaled_to_subset(s["n"], s["b0"])
    tau = s["tau"] or scaled["tau"]
    period = s["period"] or scaled["period"]
    b_const = s["b_const"] or scaled["b_const"]
    return {
        "adaptive": rule.adaptive_exponential(b0=s["b0"], eta0=s["eta0"], eps0=s["eps0"], delta=s["delta"],
                                              gamma=s["gamma"], tau=tau, b_max=s["b_max"]),
        "constant": rule.constant(b0=b_const, eta0=s["eta0"], eps0=s["eps0"], tau=tau),
        "periodic": rule.periodic(b0=s["b0"], eta0=s["eta0"], delta=s["delta"], gamma=s["gamma"], period=period,
                                  b_max=s["b_max"], eps0=s["eps0"], tau=tau),
    }


def thresholds(adaptive: rule.Schedule, final_stage: int) -> list[float]:
    """ε₀ … ε_M of the adaptive schedule (the rule's closed form)."""
    return [float(rule.stage_values(adaptive, m)[2]) for m in range(final_stage + 1)]


def _cuda_cifar(ctx: RunContext) -> bool:
    import torch

    if ctx.data_dir is None or not torch.cuda.is_available():
        return False
    return (ctx.data_dir / "cifar-10-batches-py").is_dir()


def _gap(a: list, b: list) -> str:
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    if math.isinf(mb) and math.isinf(ma):
        return "neither reached ε_M in every seed: unresolved (counted as a miss, the claim is 'fewer')"
    if math.isinf(mb):
        return "baseline not reached"
    if math.isinf(ma) or math.isnan(sa) or math.isnan(sb):
        return "adaptive not reached"
    pooled = math.sqrt((sa * sa + sb * sb) / 2)
    resolved = abs(mb - ma) > pooled if pooled > 0 else True
    return f"ratio {ma / mb:.2f}, gap {'beyond' if resolved else 'within'} one pooled std"


def _less(a: list, b: list) -> bool:
    ma, _ = mean_std(a)
    mb, _ = mean_std(b)
    return (not math.isinf(ma)) and (math.isinf(mb) or ma < mb)


def run(ctx: RunContext) -> CheckResult:
    s = dict(SETTINGS[ctx.mode])
    notes = []
    if ctx.mode == "full" and _cuda_cifar(ctx):
        s.update(s["cifar"])
        notes.append("CIFAR-10 with ResNet-18 on CUDA.")
    elif ctx.mode == "full":
        notes.append("CIFAR/ResNet-18 not run (needs CIFAR in --data-dir and CUDA); Fashion-MNIST only.")
    scheds = schedules(s)
    eps = thresholds(scheds["adaptive"], s["final_stage"])
    data = training_data(s["dataset"], s["n"], None if s["dataset"] == "fashion_mnist" else str(ctx.data_dir))
    model = s.get("model", "small_cnn")
    runs = {k: [] for k in SCHEDULES}
    with torch_threads(s["torch_threads"]):
        for seed in s["seeds"]:
            for name in SCHEDULES:
                def tick(step, stage, _n=name, _s=seed):
                    ctx.tick(run=f"{_n}/seed{_s}", step=step, stage=stage)
                runs[name].append(train_run(scheds[name], data, seed=seed, max_steps=10**9,
                                            max_samples=s["max_samples"], stop_norm=eps[-1], model=model,
                                            widths=s["widths"], label=name, tick=tick))

    def per(name, fn):
        return [fn(r) for r in runs[name]]

    comparisons = []
    final = eps[-1]
    metrics = [("steps", lambda r, e: r.steps_to(e), 1e3, "k"),
               ("training SFO (the paper's count)", lambda r, e: r.sfo_to(e, counted=False), 1e3, "k"),
               ("SFO with the measurement counted", lambda r, e: r.sfo_to(e, counted=True), 1e3, "k")]
    gaps = []
    for base in ("constant", "periodic"):
        for label, fn, scale, unit in metrics:
            a = per("adaptive", lambda r: fn(r, final))
            b = per(base, lambda r: fn(r, final))
            comparisons.append(Comparison(
                quantity=f"{label} to ε_M = {final:.3g}: adaptive vs {base}",
                measured=f"adaptive {fmt_mean_std(a, unit, scale)} vs {base} {fmt_mean_std(b, unit, scale)}",
                expected=f"adaptive < {base} (mean over {len(a)} seeds)",
                ok=_less(a, b)))
            gaps.append(f"{label} vs {base}: {_gap(a, b)}")

    # every threshold, for the notes and the figure
    table = ["per threshold, training SFO (k) mean over seeds [with measurement]:"]
    for m, e in enumerate(eps):
        cells = []
        for name in SCHEDULES:
            tr = mean_std(per(name, lambda r: r.sfo_to(e, counted=False)))[0]
            ct = mean_std(per(name, lambda r: r.sfo_to(e, counted=True)))[0]
            cells.append(f"{name} {tr / 1e3:.3g}" + (f" [{ct / 1e3:.3g}]" if name == "adaptive" else ""))
        table.append(f"ε_{m} = {e:.3g}: " + ", ".join(cells))
    stops = {name: [r.stop_reason for r in runs[name]] for name in SCHEDULES}
    final_b = {name: [r.records[-1].b if r.records else None for r in runs[name]] for name in SCHEDULES}
    notes += ["; ".join(gaps) + ".", " | ".join(table) + ".",
              f"stop reasons {stops}; last batch sizes {final_b}.",
              "Baselines' exact checks are observation only (not counted for them)."]
    figures = _figure(ctx, runs, eps)
    scaled = {k: v for k, v in ((n, scheds[n]) for n in SCHEDULES)}
    settings = {**{k: v for k, v in s.items() if k != "cifar"}, "tau_steps": scaled["adaptive"].tau,
                "period_steps": scaled["periodic"].period, "b_const": scaled["constant"].b0,
                "thresholds": [round(e, 4) for e in eps]}
    return CheckResult.from_comparisons(
        CLAIM, ctx.mode, comparisons,
        tolerance="one-sided, no slack: the adaptive mean must be strictly below each baseline's at the final "
                  "threshold ε_M, in steps, training SFO and SFO with its checks counted (the claim is 'fewer'; "
                  "SFO is cumulative so ε_M includes every earlier stage); not reaching ε_M within the budget "
                  "counts as more; resolution against the seed spread is stated in the notes",
        figures=figures, notes=" ".join(notes), seeds=list(s["seeds"]), settings=settings)


def _figure(ctx: RunContext, runs: dict, eps: list) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"adaptive": "C0", "constant": "C1", "periodic": "C2"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, rs in runs.items():
        for i, r in enumerate(rs):
            x = [rec.train_samples for rec in r.records]
            y = [rec.norms["exact"] for rec in r.records]
            axes[0].plot(x, y, color=colors[name], alpha=0.7, label=name if i == 0 else None)
            if name == "adaptive":
                xc = [rec.train_samples + rec.check_samples for rec in r.records]
                axes[0].plot(xc, y, color=colors[name], ls=":", alpha=0.7,
                             label="adaptive, checks counted" if i == 0 else None)
            axes[1].step(x, [rec.b for rec in r.records], where="post", color=colors[name], alpha=0.7,
                         label=name if i == 0 else None)
    for m, e in enumerate(eps):
        axes[0].axhline(e, color="grey", lw=0.6, ls="--")
        axes[0].text(axes[0].get_xlim()[0], e, f" ε_{m}", va="bottom", fontsize=7, color="grey")
    axes[0].set(xscale="log", yscale="log", xlabel="training SFO (gradient evaluations)",
                ylabel="exact ‖∇f(θ)‖ at checks", title="full-gradient norm vs SFO")
    axes[1].set(xscale="log", yscale="log", xlabel="training SFO", ylabel="batch size b", title="batch size")
    for ax in axes:
        ax.legend(fontsize=8)
    return [str(save_figure(fig, ctx.figure_path("adaptive_vs_baselines.png")))]


if __name__ == "__main__":
    sys.exit(script_main(run, CLAIM))
