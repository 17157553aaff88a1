"""Benchmark: Algorithm 2 among its peers on real data, in torch, under the paper's expectation criterion.

Question: ``sfo compare`` (sfotheory/compare.py, docs/results/sfo_compare_*.txt) ranks Algorithm 2 against the
adaptive-batch peers on synthetic problems with known constants. On a real image task, driven by the torch shell
:class:`sfotorch.policy_scheduler.PolicyScheduler`, how many steps, training samples and samples with measurement
does each policy need to bring the expected gradient norm E‖∇f(θ_t)‖ below ε, and what test accuracy does each
reach for the same training SFO?

Setup (every value in CONFIG): real Fashion-MNIST from Debian's package (``load_dataset("fashion_mnist")``), the
first n = 2 000 training images un-augmented (f = the mean cross-entropy over them) and the first 2 000 test images;
``small_cnn`` widths (8, 16, 32), 6 218 parameters, no BatchNorm; plain SGD (no momentum, no weight decay). Every
run has the same budget of 20 epochs = 40 000 training samples (SFO), starts from b₀ = 8, η₀ = 0.1 (the authors'),
caps b at b_max = n/4 = 500, and leaves η uncapped. Policies, at their authors' default constants:

* ``algorithm2``: StageRule(adaptive_exponential(b₀, η₀, ε₀ = 1.0, δ = 2, γ = 1.4, τ = 40 steps, b_max)), ‖∇f‖
  measured by an exact monitor over the n images (n SFO a check, charged to its measurement SFO). τ·b₀/n = 0.16
  epoch, the authors' 1 000 steps · 8 / 50 000. ε₀ is a hand value chosen from the data, as for
  configs/fashion_mnist_adaptive_cpu.toml: the norm at the initialisation is small and rises within the first
  epoch (the output's ‖∇f‖ columns), so any fraction of ‖∇f(θ₀)‖ would never be met and Algorithm 2 would stay
  at b₀ for the whole run;
* ``norm_test``: Byrd et al. 2012, θ = 0.5, every step;  ``inner_product``: Bollapragada et al. 2018, θ = 0.9,
  ν = 5.84, every step;  ``noise_scale``: McCandlish et al. 2018, b ← ⌈B̂_simple⌉, η fixed, EMA β = 0.95;
* ``adascale``: Johnson et al. 2020, b = S·b₀ with S = 8 (64), base η₀ constant, gain r_t ∈ [1, S] on η;
* ``increase_batch``: Smith et al. 2018, b ×5 at 0.3, 0.6 and 0.8 of the budget (η takes what b_max refuses);
* ``constant`` (b = 128, η₀) and ``cosine`` (b = 128, η from η₀ to 0 over the run's 320 steps): the authors'
  baselines (b = 128 as in configs/*_constant*.toml).

The batch statistics of the peers (‖g_B‖², tr Σ̂, V̂_ip) come from the training batch's own per-sample gradients and
cost no SFO. Each run is a plain loop over ``ResizableLoader(TensorDataset(x, y), b₀, seed)``: ``sched.backward``,
(AdaScale: ``sched.before_update()``), ``opt.step()``, ``sched.step()``. A seed fixes the initialisation and every
epoch's permutation, the same for every policy (paired seeds). Observation, neither charged nor timed: at θ₀ and at
the first step whose training SFO reaches each multiple of K = n (every epoch), the exact ‖∇f(θ)‖ over the n images
(eval mode) and the test accuracy; each observation records step, training SFO, measurement SFO, ‖∇f‖, accuracy,
b and η. A run that diverges (PolicyScheduler's NonFiniteError) counts as ‖∇f‖ = ∞ from then on.

Outputs, from the raw runs only (pure functions below):
(1) per policy and target ε: under the expectation criterion, t*(ε) = the first observation j ≥ 1 (the first step
    with training SFO ≥ j·K, the same grid for every seed) whose mean over seeds of ‖∇f‖ is ≤ ε; the steps, training
    SFO and SFO with measurement there (means over seeds), each with a 95% percentile bootstrap interval over seeds
    (1 000 resamples, the same resampled seeds for every policy: ``sfotheory.compare.bootstrap_weights`` and
    ``mean_passage``, reused), "not reached" / "-" when the mean never gets there, inf = not reached in > 2.5% of
    resamples; the mean test accuracy at t* (acc@t*); and ``reached``, the fraction of seeds whose own ‖∇f‖ ≤ ε at
    some observation j ≥ 1. The grid is in training SFO, not in steps: seeds of one policy take different steps to
    the same SFO, so "steps" is a mean over seeds at t*. θ₀ is left out of the search: ‖∇f(θ₀)‖ lies below every
    target. Targets ε = 0.5, 0.3, 0.15 (absolute, in CONFIG; chosen once, from a timing run of seed 0, to lie
    between the small-batch runs' norm after one epoch and what the best run reaches in 20 epochs);
(2) test accuracy at equal training SFO (5, 10 and 20 epochs), linearly interpolated between the two observations
    around the mark, mean ± t-interval over seeds, and the paired difference policy − Algorithm 2, seed by seed, with
    its t-interval and n (positive: the policy is more accurate);
(3) per policy: wall time of a run without the observations, steps, measurement SFO, final b and η, moves (the
    policy's ``stage``), divergences.
With 5 seeds a percentile bootstrap is coarse (its intervals are too narrow at small R); read them as rough.

How to read (1) on this task: ‖∇f‖ is not monotone here. The initialisation sits on a plateau (test accuracy
0.10, ‖∇f(θ₀)‖ small); training leaves it and the norm rises, then falls only late and only for some policies. A
policy that has not left the plateau meets every target above ‖∇f(θ₀)‖ at its first observation: acc@t* and table
(2) show which passages are of that kind.

Run (``--raw`` keeps every finished (policy, seed) run and skips those already there under the same run
configuration, so an interrupted run resumes and two processes can share one file; ``--report-only`` builds the
report and figure from the raw file)::

    python benchmarks/bench_policies_torch.py --seeds 0,1,2,3,4 \
        --policies algorithm2,inner_product,constant,cosine --raw /tmp/bpt.jsonl &
    python benchmarks/bench_policies_torch.py --seeds 0,1,2,3,4 \
        --policies norm_test,noise_scale,adascale,increase_batch --raw /tmp/bpt.jsonl &
    wait
    python benchmarks/bench_policies_torch.py --report-only --raw /tmp/bpt.jsonl --out FILE.txt --figure FILE.png

A smoke run in ~10 s: ``--n 200 --epochs 2 --widths 4,4,4 --seeds 0 --policies algorithm2,norm_test``.
The size (widths (8, 16, 32), n = 2 000, 20 epochs) keeps the 8 policies × 5 seeds within about a quarter of an
hour on the two cores of the machines this project runs on; the output states each run's wall time.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import math
import os
import statistics
import sys
import time
import warnings
from bisect import bisect_left
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from sfotheory.compare import bootstrap_weights, mean_passage
from sfotheory.policies import (AdaScale, GradientNoiseScale, IncreaseBatch, InnerProductTest, NormTest, StageRule,
                                milestones_from_epochs, needs)
from sfotheory.rule import adaptive_exponential, constant, cosine
from sfotorch.datasets import load_dataset
from sfotorch.evaluation import evaluate
from sfotorch.models import build_model
from sfotorch.monitors import ExactMonitor
from sfotorch.policy_scheduler import PolicyScheduler
from sfotorch.sampler import ResizableLoader
from sfotorch.scheduler import NonFiniteError

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:       # loaded by path (tests): find _report
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit  # noqa: E402  (benchmarks/_report.py)

CONFIG = {
    # -- the runs (a raw run is reused only when all of these match) --
    "n": 2000,                   # training images (the first n); f = mean cross-entropy over them
    "test_n": 2000,              # test images (the first test_n of the test split), for accuracy
    "widths": (8, 16, 32),       # small_cnn channel widths (6 218 parameters for 1×28×28)
    "epochs": 20,                # training-SFO budget per run = epochs · n samples
    "b0": 8,                     # samples, every policy's first batch (AdaScale: its base batch)
    "eta0": 0.1,                 # learning rate at the start, every policy
    "b_max": None,               # samples; None = n // 4
    "eps0": 1.0,                 # Algorithm 2's ε₀ (hand value, see the docstring); ε_m = ε₀ √(b₀/b_m)
    "delta": 2.0, "gamma": 1.4,  # Algorithm 2: b ×δ, η ×γ at each stage (the authors')
    "tau": 40,                   # steps between Algorithm 2's exact checks
    "monitor_chunk": 256,        # samples per chunk of an exact pass (memory and speed only)
    "norm_theta": 0.5,           # norm test θ (Byrd et al.)
    "ip_theta": 0.9, "ip_nu": 5.84,   # inner-product test θ, ν (Bollapragada et al.)
    "gns_beta": 0.95,            # noise scale: EMA weight on the past
    "adascale_scale": 8,         # AdaScale S: b = S·b0 (clipped to b_max // b0)
    "increase_factor": 5.0,      # Smith et al.: b ×5 ...
    "increase_at": (0.3, 0.6, 0.8),   # ... at these fractions of the budget
    "baseline_b": 128,           # samples, constant and cosine baselines
    "observe_every": None,       # training samples between observations; None = n (every epoch)
    # -- the report only (changing these reruns nothing) --
    "targets": (0.5, 0.3, 0.15),  # ε, absolute (‖∇f‖ of the mean cross-entropy; see the docstring)
    "acc_marks": (0.25, 0.5, 1.0),    # fractions of the budget at which test accuracy is compared
    "resamples": 1000,           # bootstrap resamples over seeds
    "bootstrap_seed": 0,
    "confidence": 0.95,
    "threads": 1,                # torch.set_num_threads
}
REPORT_KEYS = ("targets", "acc_marks", "resamples", "bootstrap_seed", "confidence", "threads")
POLICIES = ("algorithm2", "norm_test", "inner_product", "noise_scale", "adascale", "increase_batch", "constant",
            "cosine")
REFERENCE = "algorithm2"


# -- configuration ---------------------------------------------------------------------------------------------

def resolved(cfg: dict) -> dict:
    """``cfg`` with its defaults that depend on n filled in (b_max = n // 4, observe_every = n)."""
    cfg = dict(cfg)
    if cfg["b_max"] is None:
        cfg["b_max"] = cfg["n"] // 4
    if cfg["observe_every"] is None:
        cfg["observe_every"] = cfg["n"]
    if cfg["observe_every"] < cfg["b_max"]:
        raise ValueError(f"observe_every = {cfg['observe_every']} must be >= b_max = {cfg['b_max']} "
                         "(one step may not pass two observation marks)")
    return cfg


def budget(cfg: dict) -> int:
    """Training samples of one run."""
    return int(cfg["epochs"] * cfg["n"])


def run_key(cfg: dict) -> dict:
    """What decides a run's result: CONFIG without the report-only keys, as JSON would hold it."""
    return json.loads(json.dumps({k: v for k, v in resolved(cfg).items() if k not in REPORT_KEYS}))


def make_policy(name: str, cfg: dict):
    """The policy ``name`` at CONFIG's constants."""
    b0, eta0, b_max = cfg["b0"], cfg["eta0"], cfg["b_max"]
    if name == "algorithm2":
        return StageRule(adaptive_exponential(b0=b0, eta0=eta0, eps0=cfg["eps0"], delta=cfg["delta"],
                                              gamma=cfg["gamma"], tau=cfg["tau"], b_max=b_max))
    if name == "norm_test":
        return NormTest(b0=b0, eta0=eta0, theta=cfg["norm_theta"], b_max=b_max)
    if name == "inner_product":
        return InnerProductTest(b0=b0, eta0=eta0, theta=cfg["ip_theta"], nu=cfg["ip_nu"], b_max=b_max)
    if name == "noise_scale":
        return GradientNoiseScale(b0=b0, eta0=eta0, b_max=b_max, smoothing=cfg["gns_beta"])
    if name == "adascale":
        return AdaScale(base_batch=b0, scale=max(1, min(cfg["adascale_scale"], b_max // b0)), eta0=eta0)
    if name == "increase_batch":
        epochs = tuple(f * cfg["epochs"] for f in cfg["increase_at"])
        return IncreaseBatch(b0=b0, eta0=eta0, milestones=milestones_from_epochs(epochs, cfg["n"]),
                             factor=cfg["increase_factor"], b_max=b_max)
    if name == "constant":
        return StageRule(constant(b0=min(cfg["baseline_b"], cfg["n"]), eta0=eta0))
    if name == "cosine":                          # η reaches 0 at the run's last step (epochs of ⌈n/b⌉ batches)
        b = min(cfg["baseline_b"], cfg["n"])
        return StageRule(cosine(b0=b, eta0=eta0, horizon=cfg["epochs"] * math.ceil(cfg["n"] / b)))
    raise ValueError(f"The 'policy' parameter of make_policy must be one of {', '.join(POLICIES)}. Got {name!r}.")


# -- the runs ----------------------------------------------------------------------------------------------------

class Data(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    test: object        # an ImageDataset (sfotorch.evaluation.evaluate reads it)


def load_data(cfg: dict) -> Data:
    train = load_dataset("fashion_mnist", subset=cfg["n"])
    x, y = train.get_batch(slice(0, len(train)))
    return Data(x, y, load_dataset("fashion_mnist", train=False, subset=cfg["test_n"]))


def run(name: str, cfg: dict, data: Data, seed: int) -> dict:
    """One run of policy ``name`` from seed ``seed``: its observations, moves, wall time and end."""
    cfg = resolved(cfg)
    torch.manual_seed(seed)
    model = build_model("small_cnn", 10, in_channels=1, widths=cfg["widths"])
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["eta0"])
    policy = make_policy(name, cfg)
    loader = ResizableLoader(torch.utils.data.TensorDataset(data.x, data.y), batch_size=policy.b0, seed=seed)
    monitor = (ExactMonitor(model, (data.x, data.y), loss_fn, batch_size=cfg["monitor_chunk"])
               if "full_norm" in needs(policy).statistics else None)
    sched = PolicyScheduler(opt, policy, loader=loader, model=model, loss_fn=loss_fn, monitor=monitor)
    before = needs(policy).order == "before_update"
    observer = ExactMonitor(model, (data.x, data.y), loss_fn, batch_size=cfg["monitor_chunk"], name="observer")
    observations, observe_s = [], 0.0

    def observe():
        nonlocal observe_s
        t = time.perf_counter()
        st = sched.state
        acc = evaluate(model, data.test, batch_size=500, device=torch.device("cpu"))["test_acc"]
        observations.append({"step": int(st.step), "sfo": int(st.samples), "meas": int(st.check_samples),
                             "norm": observer.measure().norm, "acc": acc, "b": sched.batch_size, "eta": sched.lr})
        observe_s += time.perf_counter() - t

    total, every = budget(cfg), cfg["observe_every"]
    marks = list(range(0, total + 1, every))
    observe()
    diverged, one_sample = None, 0
    start, observed_before = time.perf_counter(), observe_s
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*batch of one sample.*", category=RuntimeWarning)
        while sched.state.samples < total and diverged is None:
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                try:
                    sched.backward(xb, yb)
                    if before:
                        sched.before_update()
                    opt.step()
                    event = sched.step()
                except NonFiniteError as err:
                    diverged = {"step": int(sched.state.step), "sfo": int(sched.state.samples), "error": str(err)}
                    break
                one_sample += event.name == "NONFINITE"
                if len(observations) < len(marks) and sched.state.samples >= marks[len(observations)]:
                    observe()
                if sched.state.samples >= total:
                    break
    wall = time.perf_counter() - start - (observe_s - observed_before)
    while len(observations) < len(marks):            # diverged: ‖∇f‖ = ∞ from then on, nothing else observed
        observations.append({"step": None, "sfo": None, "meas": None, "norm": math.inf, "acc": None,
                             "b": None, "eta": None})
    return {"policy_config": policy.to_dict(), "observations": observations, "marks": marks,
            "transitions": list(sched.transitions), "wall_s": wall, "observe_s": observe_s,
            "train_sfo": int(sched.state.samples), "measure_sfo": int(sched.state.check_samples),
            "steps": int(sched.state.step), "final_b": sched.batch_size, "final_eta": sched.lr,
            "moves": int(sched.stage), "one_sample_checks": one_sample, "diverged": diverged,
            "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters())}


# -- the raw file -------------------------------------------------------------------------------------------------

def _json_line(record: dict) -> str:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return repr(v)                          # 'inf', 'nan': JSON has no number for them
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(record)) + "\n"


def _unclean(v):
    if v in ("inf", "nan", "-inf"):
        return float(v)
    if isinstance(v, dict):
        return {k: _unclean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unclean(x) for x in v]
    return v


def load_raw(path: str | None, cfg: dict) -> dict:
    """``{(policy, seed): run}`` of the runs in ``path`` made under ``cfg``'s run configuration and with the policy
    :func:`make_policy` builds from it now (later lines win)."""
    runs = {}
    if path is None or not os.path.exists(path):
        return runs
    key, policies = run_key(cfg), {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                name = row["policy"]
                if name in POLICIES and name not in policies:
                    policies[name] = json.loads(json.dumps(make_policy(name, resolved(cfg)).to_dict()))
                if row["cfg"] == key and row["run"]["policy_config"] == policies.get(name):
                    runs[(name, row["seed"])] = _unclean(row["run"])
    return runs


def append_raw(path: str, cfg: dict, policy: str, seed: int, result: dict) -> None:
    """Append one finished run as one line, under an exclusive lock (two processes may share the file)."""
    line = _json_line({"policy": policy, "seed": seed, "cfg": run_key(cfg), "run": result}).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# -- aggregation: pure functions of the raw runs -----------------------------------------------------------------

class Observed(NamedTuple):
    """Per [observation j, seed r, policy c]: step, training SFO, SFO with measurement, ‖∇f‖, test accuracy.

    ``marks`` (J + 1,) are the training-SFO marks j·K the observations were taken at (j = 0 is θ₀). Missing values
    (after a divergence) are NaN, except ‖∇f‖ = ∞.
    """

    marks: np.ndarray
    step: np.ndarray
    sfo: np.ndarray
    measured: np.ndarray
    norm: np.ndarray
    acc: np.ndarray


def observed(runs: dict, policies, seeds) -> Observed:
    """Stack the runs' observations; every run must have the same marks."""
    marks = {tuple(runs[(p, s)]["marks"]) for p in policies for s in seeds}
    if len(marks) != 1:
        raise ValueError(f"the runs were observed at different marks: {sorted(marks)}")
    marks = np.array(marks.pop(), dtype=float)

    def field(key):
        out = np.full((len(marks), len(seeds), len(policies)), np.nan)
        for c, p in enumerate(policies):
            for r, s in enumerate(seeds):
                vals = [np.nan if o[key] is None else o[key] for o in runs[(p, s)]["observations"]]
                out[:, r, c] = vals
        return out

    step, sfo, meas = field("step"), field("sfo"), field("meas")
    return Observed(marks, step, sfo, sfo + meas, field("norm"), field("acc"))


def passage_rows(obs: Observed, policies, targets, *, resamples: int, seed: int, confidence: float) -> list[dict]:
    """Per policy and target: the t*(ε) mark, steps, training SFO, SFO with measurement (with intervals), the test
    accuracy at t* and ``reached``.

    The search runs over the observations j ≥ 1 (θ₀ left out, see the module doc). Reuses
    :func:`sfotheory.compare.mean_passage` on one set of bootstrap weights: once for (training SFO, SFO with
    measurement), once with the per-seed step counts and test accuracies in those two slots (their means at t*).
    """
    R = obs.norm.shape[1]
    weights = bootstrap_weights(R, resamples, seed)           # row 0: every seed once; the same rows for all policies
    j = slice(1, None)
    norm = obs.norm[j]
    sfo_p = mean_passage(obs.marks[j], norm, obs.sfo[j], obs.measured[j], targets, weights)
    step_acc = mean_passage(obs.marks[j], norm, obs.step[j], obs.acc[j], targets, weights)
    a = (1.0 - confidence) / 2
    best = np.min(np.where(np.isnan(norm), np.inf, norm), axis=0)          # [R, C]: each seed's least observed norm
    rows = []
    for c, p in enumerate(policies):
        for e, eps in enumerate(targets):
            row = {"policy": p, "eps": float(eps), "mark": float(sfo_p.steps[e, c, 0]),
                   "acc": float(step_acc.measured[e, c, 0]), "reached": float(np.mean(best[:, c] <= eps))}
            for key, arr in (("steps", step_acc.sfo), ("sfo", sfo_p.sfo), ("measured", sfo_p.measured)):
                lo, hi = np.quantile(arr[e, c, 1:], [a, 1 - a], method="inverted_cdf")
                row.update({key: float(arr[e, c, 0]), f"{key}_lo": float(lo), f"{key}_hi": float(hi)})
            rows.append(row)
    return rows


def value_at(xs, ys, x) -> float | None:
    """``ys`` linearly interpolated at ``x`` over increasing ``xs``; None outside [xs[0], xs[-1]] or if not finite.

    >>> value_at([0, 2000, 4010], [0.1, 0.5, 0.7], 4000)        # 0.5 + (2000/2010)·0.2
    0.6990049751243781
    >>> value_at([0, 2000], [0.1, 0.5], 2000), value_at([0, 2000], [0.1, 0.5], 2001)
    (0.5, None)
    """
    pairs = [(float(a), float(b)) for a, b in zip(xs, ys) if a is not None and b is not None
             and math.isfinite(a) and math.isfinite(b)]
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    i = bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return ys[i]
    if i == 0 or i == len(xs):
        return None
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def accuracy_at(obs: Observed, sfo_marks) -> np.ndarray:
    """Test accuracy at each training-SFO mark [M, R, C], interpolated between observations; NaN where none."""
    _, R, C = obs.acc.shape
    out = np.full((len(sfo_marks), R, C), np.nan)
    for m, x in enumerate(sfo_marks):
        for r in range(R):
            for c in range(C):
                v = value_at(obs.sfo[:, r, c], obs.acc[:, r, c], x)
                out[m, r, c] = np.nan if v is None else v
    return out


def t_interval(values, level: float = 0.95) -> tuple[float, float | None]:
    """Mean and half-width t_{(1+level)/2, n−1} · s/√n of ``values`` (None for n = 1): the project's
    :func:`paper_checks.verdicts.mean_interval`, as (mean, half-width).

    >>> m, h = t_interval([0.1, 0.3])                # s = 0.1414, s/√2 = 0.1, t₀.₉₇₅,₁ = 12.706
    >>> round(m, 6), round(h, 4)
    (0.2, 1.2706)
    """
    from paper_checks.verdicts import mean_interval

    values = [float(v) for v in values]
    if not values:
        raise ValueError("t_interval: got no values")
    est = mean_interval(values, confidence=level)
    return est.value, (None if est.interval is None else (est.high - est.low) / 2)


def accuracy_rows(obs: Observed, policies, sfo_marks, reference: str = REFERENCE, level: float = 0.95) -> list[dict]:
    """Per policy and SFO mark: accuracy (mean, half-width, n) and the paired difference to ``reference``.

    The difference policy − reference is taken seed by seed over the seeds where both are defined.
    """
    acc = accuracy_at(obs, sfo_marks)
    ref = policies.index(reference) if reference in policies else None
    rows = []
    for c, p in enumerate(policies):
        for m, x in enumerate(sfo_marks):
            vals = acc[m, :, c]
            ok = vals[np.isfinite(vals)]
            mean, half = t_interval(ok, level) if ok.size else (math.nan, None)
            row = {"policy": p, "sfo": x, "acc": mean, "acc_half": half, "n": int(ok.size),
                   "diff": None, "diff_half": None, "diff_n": 0}
            if ref is not None and c != ref:
                d = vals - acc[m, :, ref]
                d = d[np.isfinite(d)]
                if d.size:
                    row["diff"], row["diff_half"] = t_interval(d, level)
                    row["diff_n"] = int(d.size)
            rows.append(row)
    return rows


def run_rows(runs: dict, policies, seeds) -> list[dict]:
    """Per policy: wall time (mean, half-width), final b and η, moves, measurement SFO, divergences."""
    rows = []
    for p in policies:
        rs = [runs[(p, s)] for s in seeds]
        wall, half = t_interval([r["wall_s"] for r in rs])
        rows.append({"policy": p, "wall": wall, "wall_half": half, "observe_s": statistics.fmean(
                     r["observe_s"] for r in rs), "final_b": [r["final_b"] for r in rs],
                     "final_eta": [r["final_eta"] for r in rs], "moves": [r["moves"] for r in rs],
                     "steps": statistics.fmean(r["steps"] for r in rs),
                     "measure_sfo": statistics.fmean(r["measure_sfo"] for r in rs),
                     "diverged": sum(r["diverged"] is not None for r in rs),
                     "one_sample_checks": sum(r["one_sample_checks"] for r in rs)})
    return rows


# -- the report ---------------------------------------------------------------------------------------------------

def _n(x) -> str:
    if x is None or (isinstance(x, float) and math.isinf(x)):
        return "-"
    return f"{x:.6g}" if abs(x) < 1e6 else f"{x:.3e}"


def _ci(lo, hi) -> str:
    def g(x):
        return "inf" if math.isinf(x) else (f"{x:.6g}" if abs(x) < 1e6 else f"{x:.3e}")
    return f"[{g(lo)}, {g(hi)}]"


def _pm(mean, half, spec=".3f") -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:{spec}}" + ("" if half is None else f" ± {half:{spec.lstrip('+')}}")


def setup_line(cfg: dict, runs: dict, policies, seeds) -> str:
    cfg = resolved(cfg)
    params = runs[(policies[0], seeds[0])]["params"]
    return (f"bench_policies_torch: Fashion-MNIST n = {cfg['n']} (test {cfg['test_n']}), small_cnn widths "
            f"{tuple(cfg['widths'])} ({params} parameters), plain SGD, b0 = {cfg['b0']}, eta0 = {cfg['eta0']}, "
            f"b_max = {cfg['b_max']}, budget {cfg['epochs']} epochs = {budget(cfg)} training SFO per run; "
            f"Algorithm 2: eps0 = {cfg['eps0']}, delta = {cfg['delta']}, gamma = {cfg['gamma']}, tau = {cfg['tau']} "
            f"steps, exact checks ({cfg['n']} SFO each); norm test theta = {cfg['norm_theta']}; inner product "
            f"theta = {cfg['ip_theta']}, nu = {cfg['ip_nu']}; noise scale beta = {cfg['gns_beta']}; AdaScale S = "
            f"{max(1, min(cfg['adascale_scale'], cfg['b_max'] // cfg['b0']))}; increase_batch x"
            f"{cfg['increase_factor']:g} at {tuple(cfg['increase_at'])} of the budget; constant and cosine b = "
            f"{min(cfg['baseline_b'], cfg['n'])}; observations every {cfg['observe_every']} training SFO; seeds "
            f"{list(seeds)}; {runs[(policies[0], seeds[0])]['threads']} thread(s)")


def report(runs: dict, cfg: dict, policies, seeds) -> str:
    """The whole report, as text, from the raw runs."""
    cfg = resolved(cfg)
    policies, seeds = list(policies), list(seeds)
    obs = observed(runs, policies, seeds)
    out = io.StringIO()
    pr = lambda *a: print(*a, file=out)  # noqa: E731
    pr(setup_line(cfg, runs, policies, seeds))
    g0 = obs.norm[0]
    pr(f"||grad f(theta0)|| = {np.mean(g0):.4g} (mean over seeds; min {np.min(g0):.4g}, max {np.max(g0):.4g})")
    pr(f"criterion (the paper's, in expectation): t*(eps) = the first observation j >= 1 (the first step with training "
       f"SFO >= j*{cfg['observe_every']}) whose mean over seeds of ||grad f|| <= eps; steps, training SFO and SFO with "
       f"measurement there are means over seeds; t* in epochs of n; {int(cfg['confidence'] * 100)}% percentile "
       f"bootstrap over seeds "
       f"({cfg['resamples']} resamples, the same resampled seeds for every policy); - = not reached, inf = not "
       f"reached in more than {(1 - cfg['confidence']) / 2:.1%} of resamples; reached = fraction of seeds whose own "
       f"||grad f|| <= eps at some observation j >= 1. acc@t* = mean test accuracy there: a policy that has not left "
       f"the initialisation's plateau (acc ~ 0.1) has ||grad f|| ~ ||grad f(theta0)|| and meets every target above it.")
    pr(f"{'policy':15} {'eps':>5} {'t* (epoch)':>11} {'steps':>7} {'[95% CI]':>16} {'train SFO':>10} {'[95% CI]':>20} "
       f"{'SFO+meas':>10} {'[95% CI]':>20} {'acc@t*':>6} {'reached':>7}")
    for row in passage_rows(obs, policies, cfg["targets"], resamples=cfg["resamples"], seed=cfg["bootstrap_seed"],
                            confidence=cfg["confidence"]):
        epoch = "not reached" if math.isinf(row["mark"]) else f"{row['mark'] / cfg['n']:g}"
        pr(f"{row['policy']:15} {row['eps']:5g} {epoch:>11} {_n(row['steps']):>7} "
           f"{_ci(row['steps_lo'], row['steps_hi']):>16} {_n(row['sfo']):>10} {_ci(row['sfo_lo'], row['sfo_hi']):>20} "
           f"{_n(row['measured']):>10} {_ci(row['measured_lo'], row['measured_hi']):>20} "
           f"{'-' if math.isinf(row['mark']) else format(row['acc'], '.3f'):>6} {row['reached']:7.2f}")
    marks = [int(round(f * budget(cfg))) for f in cfg["acc_marks"]]
    pr("")
    pr(f"test accuracy at equal training SFO (the first {cfg['test_n']} test images; linear between the two "
       f"observations around the mark): mean ± t-interval over seeds (n); paired difference policy - {REFERENCE}, "
       f"seed by seed (positive: more accurate than {REFERENCE})")
    rows = accuracy_rows(obs, policies, marks, level=cfg["confidence"])
    pr(f"{'policy':15} " + " ".join(f"{f'acc @ {m} SFO':>22} {f'- {REFERENCE}':>24}" for m in marks))
    for p in policies:
        cells = []
        for row in (r for r in rows if r["policy"] == p):
            acc = f"{_pm(row['acc'], row['acc_half'])} ({row['n']})"
            diff = "" if row["diff"] is None else f"{_pm(row['diff'], row['diff_half'], '+.3f')} ({row['diff_n']})"
            cells.append(f"{acc:>22} {diff:>24}")
        pr(f"{p:15} " + " ".join(cells))
    pr("")
    pr("runs: wall time without the observations (mean ± t-interval, s); steps and measurement SFO (means); "
       "final b, final eta, moves (per seed); divergences; check steps skipped on a one-sample batch")
    for row in run_rows(runs, policies, seeds):
        pr(f"{row['policy']:15} wall {_pm(row['wall'], row['wall_half'], '.1f'):>13} s  (observing "
           f"{row['observe_s']:.1f} s)  steps {row['steps']:.0f}  meas SFO {row['measure_sfo']:.4g}  b "
           f"{row['final_b']}  eta {[round(e, 4) for e in row['final_eta']]}  moves {row['moves']}  diverged "
           f"{row['diverged']}  one-sample {row['one_sample_checks']}")
    return out.getvalue()


def draw(runs: dict, cfg: dict, policies, seeds, path: str, *, dpi: int = 120) -> str:
    """Mean ‖∇f‖ and mean test accuracy against mean training SFO, one line per policy; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cfg = resolved(cfg)
    obs = observed(runs, list(policies), list(seeds))
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_norm, ax_acc = fig.subplots(1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # all-NaN slices after a divergence
        for c, p in enumerate(policies):
            x = np.nanmean(obs.sfo[:, :, c], axis=1)
            style = dict(color=f"C{c}", lw=2.2 if p == REFERENCE else 1.2, marker=".", ms=4, label=p)
            ax_norm.plot(x, np.mean(obs.norm[:, :, c], axis=1), **style)
            ax_acc.plot(x, np.nanmean(obs.acc[:, :, c], axis=1), **style)
    for eps in cfg["targets"]:
        ax_norm.axhline(eps, color="0.5", ls=":", lw=0.8)
    ax_norm.set_yscale("log")
    ax_norm.set_ylabel("mean over seeds of ‖∇f(θ)‖ (exact, n images)")
    ax_acc.set_ylabel(f"mean test accuracy ({cfg['test_n']} images)")
    for ax in (ax_norm, ax_acc):
        ax.set_xlabel("training SFO (samples)")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    fig.suptitle(f"Fashion-MNIST n = {cfg['n']}, small_cnn {tuple(cfg['widths'])}: Algorithm 2 and its peers, "
                 f"{len(seeds)} seed(s); dotted: the targets ε", fontsize=10)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# -- the command line ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--n", type=int, default=CONFIG["n"], help="training images")
    parser.add_argument("--epochs", type=int, default=CONFIG["epochs"], help="training-SFO budget in epochs of n")
    parser.add_argument("--widths", default=",".join(map(str, CONFIG["widths"])))
    parser.add_argument("--threads", type=int, default=CONFIG["threads"])
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--figure", default=None, help="draw the figure into this PNG file")
    parser.add_argument("--raw", default=None,
                        help="append each finished run to this JSON-lines file; runs already there are not rerun")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the runs in --raw")
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        parser.error(f"--policies must name policies among {', '.join(POLICIES)}; got {args.policies}")
    seeds = [int(s) for s in args.seeds.split(",")]
    widths = tuple(int(w) for w in args.widths.split(","))
    cfg = dict(CONFIG, n=args.n, epochs=args.epochs, widths=widths, threads=args.threads)
    if args.report_only and not args.raw:
        parser.error("--report-only needs --raw FILE")
    try:
        cfg = resolved(cfg)
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(cfg["threads"])
    runs = load_raw(args.raw, cfg)
    if args.report_only:
        missing = [(p, s) for p in policies for s in seeds if (p, s) not in runs]
        if missing:
            print(f"--report-only: {args.raw} holds no run of this configuration for (policy, seed) = {missing}",
                  file=sys.stderr)
            return 2
    else:
        data = load_data(cfg)
        for seed in seeds:
            for p in policies:
                if (p, seed) in runs:
                    continue
                t = time.perf_counter()
                runs[(p, seed)] = result = run(p, cfg, data, seed)
                print(f"[seed {seed}] {p}: {result['steps']} steps, final b {result['final_b']}, "
                      f"{result['moves']} moves, wall {result['wall_s']:.1f} s + observing {result['observe_s']:.1f} s "
                      f"({time.perf_counter() - t:.0f} s){' DIVERGED' if result['diverged'] else ''}",
                      file=sys.stderr, flush=True)
                if args.raw:
                    append_raw(args.raw, cfg, p, seed, result)
    emit(report(runs, cfg, policies, seeds), args.out)
    if args.figure:
        draw(runs, cfg, policies, seeds, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
