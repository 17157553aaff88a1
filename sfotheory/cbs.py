r"""The empirical critical batch size: sweep b, measure K(b) and N(b), fit, compare with b*.

Proposition 2 predicts, for constant b and η < 2/L,

.. math::

    K(b) = \frac{C_1 b}{\varepsilon^2 b - C_2}, \qquad N(b) = b\,K(b), \qquad
    b^\star = \arg\min_b N(b) = \frac{2C_2}{\varepsilon^2}, \qquad
    b_{\min} = \frac{C_2}{\varepsilon^2}\ \text{(below it ε is out of reach)}

with C₁ = 2Δ/(η(2 − Lη)), C₂ = Lσ²η/(2 − Lη) (:func:`sfotheory.complexity.theory_constants`).
:func:`cbs_sweep` runs constant-b SGD on a log grid of b (all b × replicates in one
simulation), takes for each b the median over replicates of the first step K and
the SFO N at which ‖∇f(θ_t)‖ ≤ ε (with a distribution-free confidence interval
from binomial order statistics), fits K(b) = C₁b/(ε²b − C₂) to the medians
(least squares on log K, scipy), and reports

* b̂*_meas — the grid point with the smallest median N (``refine`` rounds re-sweep
  a finer grid around it),
* b̂*_fit = 2Ĉ₂/ε² — the minimiser of the fitted curve, with Ĉ₁, Ĉ₂ beside C₁, C₂,
* b*_E — for the noisy quadratic, the minimiser of N for the exact expectation
  (:func:`sfotheory.quadratic_theory.expected_critical_batch_size`),

beside the theory's b* = 2C₂/ε².

What we find (d = 1000 noisy quadratic, isotropic noise, η = 0.1, ε = 0.05,
32 replicates; see the README): the measured b̂* sits at the noise floor
C₂/ε², about half of b* (b̂*/b* = 0.50; the exact expectation gives 0.57); the
fit is the least stable of the three estimates (here Ĉ₂/C₂ = 0.33, so
b̂*_fit/b* = 0.33); and Ĉ₁ is two orders of magnitude below C₁. They say the
same thing: Proposition 1's bias term C₁/K is loose on a strongly convex problem,
where the bias decays geometrically (see :mod:`sfotheory.quadratic_theory` for the
derivation of b̂* ≈ C₂/ε²), while its variance term C₂/b is exact when every
λ_i = L. With κ > 1 and isotropic noise the floor is below C₂/b and b̂* moves
further down (b̂*/b* ≈ 0.4 at κ = 2, 0.3 at κ = 4).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from .complexity import critical_batch_size, min_batch_size, sfo_complexity, steps_to_eps, theory_constants
from .constants import VarianceModel, WithoutReplacement, WithReplacement
from .problems import NoisyQuadratic, Problem
from .rule import constant
from .simulate import simulate
from .validation import check_in_range, check_integer, check_positive, fail

__all__ = ["CBSResult", "cbs_sweep", "first_mean_passage", "fit_steps_curve", "log_grid", "median_ci", "plot_cbs"]


@dataclass
class CBSResult:
    """A critical-batch-size sweep: per-b medians with CIs, the fit, and the three b̂* beside b*.

    With ``expectation=True`` the sweep also holds the paper's criterion: ``steps_mean`` is K(b) for
    the replicate mean, the first observed t with mean_r ‖∇f(θ_t)‖ ≤ ε (an estimate of
    min_t E‖∇f(θ_t)‖ ≤ ε), with bootstrap intervals over replicates (``steps_mean_lo/hi``), and
    ``b_hat_mean`` the argmin of N(b) = b·K(b) under it, with its bootstrap interval.
    """

    problem: dict
    eta: float
    eps: float
    variance: dict
    replicates: int
    seed: int
    max_steps: int
    confidence: float
    batch_sizes: list
    hit_fraction: list
    steps_median: list
    steps_lo: list
    steps_hi: list
    sfo_median: list
    sfo_lo: list
    sfo_hi: list
    steps_theory: list
    sfo_theory: list
    steps_expected: list
    C1: float
    C2: float
    b_star: float
    b_min: float
    b_hat_measured: float
    C1_fit: float
    C2_fit: float
    b_hat_fit: float
    b_hat_expected: float
    wall_time: float = field(default=0.0)
    steps_mean: list = field(default_factory=list)
    steps_mean_lo: list = field(default_factory=list)
    steps_mean_hi: list = field(default_factory=list)
    b_hat_mean: float | None = None
    b_hat_mean_lo: float | None = None
    b_hat_mean_hi: float | None = None

    @property
    def ratio_measured(self) -> float:
        """b̂*_meas / b*."""
        return self.b_hat_measured / self.b_star

    @property
    def ratio_fit(self) -> float:
        """b̂*_fit / b*."""
        return self.b_hat_fit / self.b_star

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio_measured"] = self.ratio_measured
        d["ratio_fit"] = self.ratio_fit
        return {k: _jsonable(v) for k, v in d.items()}

    def save(self, path) -> Path:
        """Write the result as JSON (``inf`` as the string "inf")."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path) -> CBSResult:
        d = json.loads(Path(path).read_text())
        d.pop("ratio_measured", None)
        d.pop("ratio_fit", None)
        return cls(**{k: _unjson(v) for k, v in d.items()})

    def table(self) -> str:
        """The sweep as a text table and the comparison with the theory."""
        p = self.problem
        params = ", ".join(f"{k}={v}" for k, v in p["params"].items())
        pct = round(100 * self.confidence)
        lines = [
            f"problem {p['name']} ({params}), seed {p['seed']}",
            f"L = {p['L']:.6g}, sigma2 = {p['sigma2']:.6g} ({'exact' if p['sigma2_exact'] else 'bound'}), "
            f"gap = {p['f_theta0'] - p['f_star']:.6g}; eta = {self.eta:.6g}, eps = {self.eps:.6g}, "
            f"{self.replicates} replicates, {self.variance['model'].replace('_', ' ')}",
            f"{'b':>7} {'hit':>5} {'K median':>9} {f'[{pct}% CI]':>15} {'N median':>10} {f'[{pct}% CI]':>19}"
            f" {'K theory':>10} {'N theory':>11}" + (f" {'K exact E':>9}" if self._has_expected else ""),
        ]
        for i, b in enumerate(self.batch_sizes):
            row = (f"{b:>7d} {self.hit_fraction[i]:>5.2f} {_num(self.steps_median[i]):>9} "
                   f"{_ci(self.steps_lo[i], self.steps_hi[i]):>15} {_num(self.sfo_median[i]):>10} "
                   f"{_ci(self.sfo_lo[i], self.sfo_hi[i]):>19} {_num(self.steps_theory[i]):>10} "
                   f"{_num(self.sfo_theory[i]):>11}")
            if self._has_expected:
                row += f" {_num(self.steps_expected[i]):>9}"
            lines.append(row)
        lines += [
            f"theory     C1 = {self.C1:.6g}, C2 = {self.C2:.6g}; b* = 2 C2/eps^2 = {self.b_star:.4g}, "
            f"floor C2/eps^2 = {self.b_min:.4g}",
            f"measured   b^* = {_num(self.b_hat_measured)} (argmin of median N)   b^*/b* = {self.ratio_measured:.3g}",
            f"fitted     b^* = 2 C2^/eps^2 = {self.b_hat_fit:.4g}   b^*/b* = {self.ratio_fit:.3g}; "
            f"C1^ = {self.C1_fit:.4g} (C1^/C1 = {self.C1_fit / self.C1:.3g}), "
            f"C2^ = {self.C2_fit:.4g} (C2^/C2 = {self.C2_fit / self.C2:.3g})",
        ]
        if self._has_expected:
            lines.append(f"exact E    b^* = {_num(self.b_hat_expected)} (argmin of N for E||grad f||^2 <= eps^2)"
                         f"   b^*/b* = {self.b_hat_expected / self.b_star:.3g}")
        if self.steps_mean:
            lines.append(f"mean       b^* = {_num(self.b_hat_mean)} [{_num(self.b_hat_mean_lo)}, "
                         f"{_num(self.b_hat_mean_hi)}] (argmin of N for mean_r ||grad f|| <= eps; bootstrap "
                         f"{pct}% CI)   b^*/b* = {self.b_hat_mean / self.b_star:.3g}")
        return "\n".join(lines)

    @property
    def _has_expected(self) -> bool:
        return not all(isinstance(v, float) and math.isnan(v) for v in self.steps_expected)


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _unjson(v):
    if v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, list):
        return [_unjson(x) for x in v]
    return v


def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isinf(x)):
        return "inf"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"


def _ci(lo, hi) -> str:
    return f"[{_num(lo)}, {_num(hi)}]"


# -- pieces ---------------------------------------------------------------------------------------------

def log_grid(lo: float, hi: float, num: int) -> np.ndarray:
    """Up to ``num`` distinct integer batch sizes, log-spaced from ⌈lo⌉ to ⌊hi⌋ (at least 1).

    >>> log_grid(1, 64, 7).tolist()
    [1, 2, 4, 8, 16, 32, 64]
    """
    lo = max(1.0, float(lo))
    hi = max(lo, float(hi))
    return np.unique(np.round(np.geomspace(lo, hi, int(num))).astype(np.int64))


def median_ci(samples, confidence: float = 0.95, axis: int = 0):
    """Median and a distribution-free CI (binomial order statistics) along ``axis``; ``inf`` = not reached.

    With R samples sorted x₍₁₎ ≤ … ≤ x₍R₎, [x₍j₎, x₍k₎] with j = B⁻¹(α/2), k = R + 1 − j,
    B the Binomial(R, ½) cdf, covers the median with probability ≥ 1 − α.

    >>> m, lo, hi = median_ci(np.arange(1.0, 33.0)[:, None])
    >>> float(m[0]), float(lo[0]), float(hi[0])
    (16.5, 10.0, 23.0)
    """
    x = np.sort(np.moveaxis(np.asarray(samples, dtype=float), axis, 0), axis=0)
    R = x.shape[0]
    alpha = 1.0 - confidence
    j = int(stats.binom.ppf(alpha / 2, R, 0.5))
    j = max(j, 1)
    k = R + 1 - j
    return np.median(x, axis=0), x[j - 1], x[k - 1]


def fit_steps_curve(b, K, eps: float):
    """Least-squares fit of log K = log(C₁b/(ε²b − C₂)) over points with finite K; returns (Ĉ₁, Ĉ₂).

    >>> b = np.array([10.0, 20, 40, 80]); C1, C2, eps = 3.0, 0.5, 0.5
    >>> np.round(fit_steps_curve(b, C1 * b / (eps**2 * b - C2), eps), 6).tolist()
    [3.0, 0.5]
    """
    b = np.asarray(b, dtype=float)
    K = np.asarray(K, dtype=float)
    ok = np.isfinite(K) & (K > 0)
    if ok.sum() < 2:
        return math.nan, math.nan
    b, K = b[ok], K[ok]
    e2 = eps**2
    c2_hi = e2 * b.min() * (1 - 1e-9)

    def model(x, c1, c2):
        return np.log(c1 * x / (e2 * x - c2))

    p0 = (K[-1] * e2, 0.5 * c2_hi)
    try:
        (c1, c2), _ = optimize.curve_fit(model, b, np.log(K), p0=p0, bounds=([1e-300, 0.0], [np.inf, c2_hi]),
                                         method="trf", max_nfev=10_000)
    except (RuntimeError, ValueError):
        return math.nan, math.nan
    return float(c1), float(c2)


# -- the sweep ------------------------------------------------------------------------------------------

def cbs_sweep(problem: Problem, *, eps: float, eta: float | None = None, batch_sizes=None,
              num_batch_sizes: int = 16, span: tuple = (0.125, 8.0), replicates: int = 32, seed: int = 0,
              max_steps: int = 2000, variance: VarianceModel | None = None, confidence: float = 0.95,
              refine: int = 0, threads: int | None = None, expectation: bool = False,
              resamples: int = 400) -> CBSResult:
    """Measure K(b), N(b) on a log grid of b and compare b̂* with b* = 2C₂/ε².

    ``eta`` defaults to 0.1/L; ``batch_sizes`` to ``num_batch_sizes`` points log-spaced
    over ``span`` × b*; ``refine`` extra rounds each add up to 8 points between the
    neighbours of the current argmin. Replicates that do not reach ε within
    ``max_steps`` count as N = ∞ (a median is finite when more than half reach ε).
    """
    where = "cbs_sweep"
    if not isinstance(problem, Problem):
        fail("problem", where, "a Problem (see sfotheory.problems.make_problem)", problem, cls=TypeError)
    eps = float(check_positive(eps, "eps", where, reason="the target is ||grad f|| <= eps"))
    eta = 0.1 / problem.L if eta is None else float(check_positive(eta, "eta", where))
    if eta >= 2.0 / problem.L:
        fail("eta", where, f"< 2/L = {2.0 / problem.L:.6g} for problem {problem.name!r}", eta,
             reason="Proposition 1 needs eta < 2/L")
    confidence = check_in_range(confidence, 0.0, 1.0, "confidence", where, low_strict=True)
    refine = check_integer(refine, "refine", where, minimum=0)
    variance = WithReplacement() if variance is None else variance
    consts = problem.constants()
    c1, c2 = theory_constants(consts, eta)
    b_star = float(critical_batch_size(consts, eta, eps, variance))
    b_min = float(min_batch_size(consts, eta, eps, variance))
    grid = _batch_grid(b_star, variance, batch_sizes, num_batch_sizes, span, where)
    t0 = time.perf_counter()
    K_all, N_all, traces = {}, {}, {}

    def run(bs, round_seed):
        sim = simulate(problem, [constant(b0=int(b), eta0=eta, eps0=eps) for b in bs], eps=eps,
                       replicates=replicates, seed=round_seed, max_steps=max_steps, variance=variance,
                       keep_trace=expectation, stop_at_hit=not expectation, threads=threads)
        K = np.where(sim.hit, sim.hit_step, np.inf).astype(float)
        N = np.where(sim.hit, sim.hit_sfo, np.inf).astype(float)
        for i, b in enumerate(bs):
            K_all[int(b)], N_all[int(b)] = K[:, i], N[:, i]
            if expectation:
                traces[int(b)] = (sim.trace_step, sim.trace_norm[:, :, i])

    run(grid, seed)
    for r in range(refine):
        bs = np.array(sorted(N_all))
        med = np.array([np.median(N_all[b]) for b in bs])
        if not np.any(np.isfinite(med)):
            break
        i = int(np.argmin(med))
        lo, hi = bs[max(i - 1, 0)], bs[min(i + 1, bs.size - 1)]
        new = np.setdiff1d(log_grid(lo, hi, 10), bs)
        if new.size == 0:
            break
        run(new, seed + 1 + r)
    bs = np.array(sorted(N_all))
    K = np.stack([K_all[b] for b in bs], axis=1)
    N = np.stack([N_all[b] for b in bs], axis=1)
    k_med, k_lo, k_hi = median_ci(K, confidence)
    n_med, n_lo, n_hi = median_ci(N, confidence)
    finite = np.isfinite(n_med)
    b_hat = float(bs[np.argmin(np.where(finite, n_med, np.inf))]) if finite.any() else math.inf
    c1_fit, c2_fit = fit_steps_curve(bs, k_med, eps)
    b_hat_fit = 2 * c2_fit / eps**2
    k_exp, b_exp = _exact_expectation(problem, bs, eta, eps, max_steps, variance)
    mean_fields = {}
    if expectation:
        mean_fields = _mean_criterion(bs, [traces[int(b)] for b in bs], eps, confidence, resamples, seed)
    with np.errstate(all="ignore"):
        k_th = steps_to_eps(consts, eta, eps, bs.astype(float), variance)
        n_th = sfo_complexity(consts, eta, eps, bs.astype(float), variance)
    return CBSResult(
        problem=problem.describe(), eta=eta, eps=eps, variance=variance.to_dict(), replicates=replicates,
        seed=seed, max_steps=max_steps, confidence=float(confidence), batch_sizes=[int(b) for b in bs],
        hit_fraction=np.isfinite(N).mean(axis=0).tolist(),
        steps_median=k_med.tolist(), steps_lo=k_lo.tolist(), steps_hi=k_hi.tolist(),
        sfo_median=n_med.tolist(), sfo_lo=n_lo.tolist(), sfo_hi=n_hi.tolist(),
        steps_theory=np.atleast_1d(k_th).tolist(), sfo_theory=np.atleast_1d(n_th).tolist(),
        steps_expected=[float(x) for x in k_exp],
        C1=float(c1), C2=float(c2), b_star=b_star, b_min=b_min, b_hat_measured=b_hat,
        C1_fit=c1_fit, C2_fit=c2_fit, b_hat_fit=b_hat_fit, b_hat_expected=float(b_exp),
        wall_time=time.perf_counter() - t0, **mean_fields,
    )


def _batch_grid(b_star: float, variance, batch_sizes, num_batch_sizes: int, span, where: str) -> np.ndarray:
    """The batch sizes of the sweep: ``batch_sizes`` as given (integers ≥ 1), or ``num_batch_sizes``
    points log-spaced over ``span`` × b* (capped at n without replacement)."""
    if batch_sizes is not None:
        grid = np.unique(np.asarray(batch_sizes))
        if grid.size == 0 or not np.issubdtype(grid.dtype, np.integer) or grid.min() < 1:
            fail("batch_sizes", where, "integers >= 1", batch_sizes)
        return grid
    span = tuple(span)
    if len(span) != 2 or not 0 < span[0] < span[1]:
        fail("span", where, "(lo, hi) with 0 < lo < hi", span)
    num = check_integer(num_batch_sizes, "num_batch_sizes", where, minimum=2)
    hi = b_star * span[1]
    if isinstance(variance, WithoutReplacement):
        hi = min(hi, variance.n)
    return log_grid(b_star * span[0], hi, num)


def _exact_expectation(problem: Problem, bs: np.ndarray, eta: float, eps: float, max_steps: int, variance):
    """On the noisy quadratic, K(b) under the paper's criterion E‖∇f‖² ≤ ε² at each b of ``bs`` and
    the b minimising N(b) = bK(b) on a fine grid (:mod:`sfotheory.quadratic_theory`); NaN elsewhere."""
    if not isinstance(problem, NoisyQuadratic):
        return [math.nan] * bs.size, math.nan
    from .quadratic_theory import expected_critical_batch_size, expected_steps_to_eps
    k_exp = expected_steps_to_eps(problem, bs.astype(float), eta, eps, max_steps=max_steps, variance=variance)
    fine = log_grid(max(1, bs.min()), bs.max(), 400)
    b_exp, _, _ = expected_critical_batch_size(problem, eta, eps, fine, max_steps=max_steps, variance=variance)
    return k_exp.tolist(), b_exp


def first_mean_passage(steps, norms, eps: float) -> float:
    """The first observed step with mean over replicates of ‖∇f(θ_t)‖ ≤ ε (``inf`` if never).

    ``steps`` the observed steps (T,), ``norms`` [T, R]; a NaN (a replicate that diverged) makes
    the mean NaN, which never counts as reached.

    >>> first_mean_passage(np.array([0, 1, 2]), np.array([[3.0, 1.0], [1.0, 2.0], [0.5, 1.0]]), 1.5)
    1.0
    """
    with np.errstate(invalid="ignore"):
        mean = np.mean(norms, axis=1)
    hit = np.flatnonzero(mean <= eps)
    return float(steps[hit[0]]) if hit.size else math.inf


def _mean_criterion(bs, traces, eps, confidence, resamples, seed) -> dict:
    """K(b) for the replicate mean with bootstrap intervals, and the argmin of N = b·K with its interval."""
    b = np.asarray(bs, dtype=float)
    R = traces[0][1].shape[1]
    rng = np.random.default_rng(seed)

    def curve(idx):
        return np.array([first_mean_passage(st, tr[:, idx], eps) for st, tr in traces])

    def argmin(k):
        n = b * k
        return float(b[np.argmin(n)]) if np.isfinite(n).any() else math.inf

    k = curve(np.arange(R))
    draws = np.array([curve(rng.integers(0, R, R)) for _ in range(resamples)])      # [resamples, B]
    a = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [a, 1 - a], axis=0, method="inverted_cdf")
    arg = np.array([argmin(d) for d in draws])
    alo, ahi = np.quantile(arg, [a, 1 - a], method="inverted_cdf")
    return {"steps_mean": k.tolist(), "steps_mean_lo": lo.tolist(), "steps_mean_hi": hi.tolist(),
            "b_hat_mean": argmin(k), "b_hat_mean_lo": float(alo), "b_hat_mean_hi": float(ahi)}


def plot_cbs(result: CBSResult, path) -> Path:
    """Draw the U-curve of N(b): measured medians with CIs, the theory's N(b) and the fitted curve,
    with b*, b̂* and the floor C₂/ε² marked (matplotlib, Agg backend)."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = np.asarray(result.batch_sizes, dtype=float)
    med = np.asarray(result.sfo_median, dtype=float)
    lo = np.asarray(result.sfo_lo, dtype=float)
    hi = np.asarray(result.sfo_hi, dtype=float)
    ok = np.isfinite(med)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    hi_plot = np.where(np.isfinite(hi), hi, med)
    ax.errorbar(b[ok], med[ok], yerr=[med[ok] - lo[ok], hi_plot[ok] - med[ok]], fmt="o", color="C0",
                capsize=3, label=f"measured median N(b), {round(100 * result.confidence)}% CI")
    fine = np.geomspace(b.min(), b.max(), 400)
    e2 = result.eps**2
    with np.errstate(all="ignore"):
        n_th = np.where(fine > result.C2 / e2, result.C1 * fine**2 / (e2 * fine - result.C2), np.nan)
        n_fit = np.where(fine > result.C2_fit / e2, result.C1_fit * fine**2 / (e2 * fine - result.C2_fit), np.nan)
    ax.plot(fine, n_th, color="C3", label=r"theory $C_1 b^2/(\varepsilon^2 b - C_2)$")
    if np.isfinite(result.C1_fit):
        ax.plot(fine, n_fit, color="C0", ls="--", label=r"fit with $\hat C_1, \hat C_2$")
    if result._has_expected:
        n_exp = b * np.asarray(result.steps_expected, dtype=float)
        ax.plot(b[np.isfinite(n_exp)], n_exp[np.isfinite(n_exp)], color="C2", ls=":", marker="x",
                label=r"exact $\mathbb{E}$ (quadratic)")
    ax.axvline(result.b_star, color="C3", ls="-.", lw=1, label=f"b* = 2C2/eps^2 = {result.b_star:.3g}")
    ax.axvline(result.b_min, color="gray", ls=":", lw=1, label=f"floor C2/eps^2 = {result.b_min:.3g}")
    if math.isfinite(result.b_hat_measured):
        ax.axvline(result.b_hat_measured, color="C0", ls="-", lw=1,
                   label=f"measured b^* = {result.b_hat_measured:.3g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("batch size b")
    ax.set_ylabel("SFO N(b) to reach ||grad f|| <= eps")
    ax.set_title(f"{result.problem['name']}: eta = {result.eta:.3g}, eps = {result.eps:.3g}, "
                 f"{result.replicates} replicates")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
