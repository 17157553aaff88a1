r"""How a comparison earns PASS, FAIL or INCONCLUSIVE: intervals, paired differences, sign tests.

A verdict is three-valued. A comparison is **PASS** when its confidence interval lies wholly on the
side the claim expects, **FAIL** when the interval lies wholly on the other side (the difference is
*resolved* against the claim), and **INCONCLUSIVE** when the interval straddles the boundary: the
data cannot tell, and :attr:`Judgement.needed` says roughly how many seeds (or replicates) would
resolve a difference of the size observed. Identities of the theory (a sympy series, an exact
expectation) are judged exactly: PASS or FAIL, n = None.

Intervals (two-sided, level ``confidence``, 95% unless stated):

* the mean of n values: Student's t, :math:`\bar x \pm t_{n-1,\,1-\alpha/2}\, s/\sqrt n`;
  n = 1 has no interval (it is printed without a spread, never as "± 0");
* a paired difference :math:`d_i = a_i - b_i` over the same seeds: the t interval of :math:`\bar d`,
  and the signs of the :math:`d_i` must agree by a one-sided sign test at the same level;
  a run that did not reach its target within its budget is *censored*: its value is replaced by the
  budget, a lower bound of what it would have cost, and the verdict uses only the side on which the
  censoring is conservative (see :func:`paired_less`);
* a count of seeds in which a relation holds: the exact one-sided sign test (ties dropped),
  :func:`sign_test`.

Seeds needed: for a t interval with half-width :math:`h` at n and an observed distance :math:`|g|`
from the estimate to the boundary, :math:`n' = \lceil n\,(h/|g|)^2 \rceil` resolves it if the
spread stays as observed (a planning figure, not a promise); ``None`` when :math:`g = 0`.

>>> j = paired_less([10.0, 11.0, 12.0, 10.5, 11.5], [12.0, 13.5, 13.0, 12.5, 14.0])
>>> j.verdict, j.n, round(j.value, 2)
('PASS', 5, -2.0)
>>> paired_less([1.0, 3.0], [2.0, 2.0]).verdict
'INCONCLUSIVE'
>>> mean_interval([4.2]).text()
'4.2 (n = 1, no interval)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FAIL", "INCONCLUSIVE", "PASS", "VERDICTS", "Judgement", "bootstrap_interval", "combine",
           "fmt_interval", "judge_interval", "mean_interval", "paired_less", "seeds_needed", "sign_test",
           "within_bound"]

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)


def combine(verdicts) -> str:
    """The verdict of several comparisons: FAIL if any fails, else INCONCLUSIVE if any is, else PASS.

    >>> combine(["PASS", "INCONCLUSIVE"]), combine(["INCONCLUSIVE", "FAIL"]), combine(["PASS"])
    ('INCONCLUSIVE', 'FAIL', 'PASS')
    """
    verdicts = list(verdicts)
    if not verdicts:
        return INCONCLUSIVE
    if FAIL in verdicts:
        return FAIL
    return INCONCLUSIVE if INCONCLUSIVE in verdicts else PASS


def _g(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def fmt_interval(low, high) -> str:
    """``[lo, hi]`` with 4 significant digits, or ``-`` when there is no interval."""
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return "-"
    return f"[{_g(low)}, {_g(high)}]"


@dataclass(frozen=True)
class Judgement:
    """A measured value with its interval and n, and the verdict against what the claim expects.

    ``value`` the estimate (a mean, a mean difference, a proportion); ``low``/``high`` its
    confidence interval (NaN where there is none: n = 1, or an exact quantity); ``n`` the number of
    independent units behind it (seeds, replicates; None for an exact identity); ``needed`` the
    units that would resolve an INCONCLUSIVE verdict (None otherwise or when no number would).
    """

    verdict: str
    value: float
    low: float = math.nan
    high: float = math.nan
    n: int | None = None
    confidence: float = 0.95
    needed: int | None = None

    def text(self) -> str:
        """``value [lo, hi] (n = …)``; n = 1 says that it has no interval."""
        if self.n is None:
            return _g(self.value)
        if self.n == 1 or math.isnan(self.low):
            return f"{_g(self.value)} (n = {self.n}, no interval)"
        return f"{_g(self.value)} {fmt_interval(self.low, self.high)} (n = {self.n})"

    @property
    def interval(self) -> list | None:
        return None if math.isnan(self.low) else [float(self.low), float(self.high)]


def _t(confidence: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def mean_interval(values, confidence: float = 0.95) -> Judgement:
    """The mean of ``values`` with its Student-t interval (verdict left INCONCLUSIVE: nothing is expected).

    >>> j = mean_interval([1.0, 2.0, 3.0])
    >>> j.value, round(j.low, 3), round(j.high, 3), j.n
    (2.0, -0.484, 4.484, 3)
    """
    x = np.asarray(values, dtype=float).ravel()
    n = int(x.size)
    if n == 0:
        return Judgement(INCONCLUSIVE, math.nan, n=0, confidence=confidence)
    m = float(x.mean())
    if n == 1 or not np.all(np.isfinite(x)):
        return Judgement(INCONCLUSIVE, m, n=n, confidence=confidence)
    h = _t(confidence, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Judgement(INCONCLUSIVE, m, m - h, m + h, n, confidence)


def seeds_needed(n: int, half_width: float, gap: float) -> int | None:
    """Units that would shrink a half-width ``half_width`` (at ``n``) below ``|gap|``: ⌈n (h/|g|)²⌉ + 1.

    >>> seeds_needed(4, 2.0, 1.0)
    17
    >>> seeds_needed(4, 2.0, 0.0) is None
    True
    """
    if not gap or not math.isfinite(half_width) or not math.isfinite(gap):
        return None
    return int(math.ceil(n * (half_width / abs(gap)) ** 2)) + 1


def judge_interval(est: Judgement, *, below: float | None = None, above: float | None = None) -> Judgement:
    """Judge an estimate against a boundary: expected ``< below`` or ``> above`` (one of the two).

    PASS when the whole interval is on the expected side, FAIL when the whole interval is on the
    other side, INCONCLUSIVE otherwise (with the units needed). Without an interval (n = 1, or
    values that are not finite) the verdict is INCONCLUSIVE unless the value is exact (n is None).

    >>> judge_interval(mean_interval([1.0, 1.1, 0.9]), below=2.0).verdict
    'PASS'
    >>> judge_interval(mean_interval([3.0, 3.1, 2.9]), below=2.0).verdict
    'FAIL'
    >>> judge_interval(mean_interval([3.0]), below=2.0).verdict
    'INCONCLUSIVE'
    """
    if (below is None) == (above is None):
        raise ValueError("judge_interval needs exactly one of below= or above=")
    sign = 1.0 if below is not None else -1.0
    bound = below if below is not None else above
    v, lo, hi = sign * est.value, sign * est.low, sign * est.high
    lo, hi = min(lo, hi), max(lo, hi)
    b = sign * bound
    if est.n is None:                                   # exact
        verdict = PASS if v < b else FAIL
        return Judgement(verdict, est.value, est.low, est.high, None, est.confidence)
    if math.isnan(est.low):
        return Judgement(INCONCLUSIVE, est.value, n=est.n, confidence=est.confidence,
                         needed=max(3, (est.n or 1) + 2))
    if hi < b:
        verdict = PASS
    elif lo > b:
        verdict = FAIL
    else:
        verdict = INCONCLUSIVE
    needed = seeds_needed(est.n, (hi - lo) / 2, v - b) if verdict == INCONCLUSIVE else None
    return Judgement(verdict, est.value, est.low, est.high, est.n, est.confidence, needed)


def within_bound(values, bound: float, confidence: float = 0.95) -> Judgement:
    """An upper bound holds: mean(values) ≤ ``bound`` (PASS if the interval is below it, FAIL if above).

    >>> within_bound([0.5, 0.6, 0.55, 0.52], 1.0).verdict
    'PASS'
    """
    return judge_interval(mean_interval(values, confidence), below=bound)


def paired_less(a, b, *, confidence: float = 0.95, censored_a=None, censored_b=None) -> Judgement:
    """The claim "a < b" over paired units (same seeds): the t interval of mean(a − b) against 0.

    A run that did not reach its target is *censored*: either ``inf`` (replaced by the largest
    finite value of both lists) or a value marked in ``censored_a``/``censored_b`` (the amount the
    run had spent when it stopped) — a lower bound of the true cost either way. Censoring ``b``
    makes the difference *larger* than the truth can be, so a FAIL then is not resolved; censoring
    ``a`` makes it *smaller*, so a PASS is not resolved: in those cases the verdict is INCONCLUSIVE.
    A pair with both censored says nothing, and it is dropped.

    A resolved verdict also needs the signs to agree: the differences must favour its side in enough
    pairs for the one-sided sign test at the same level (:func:`sign_test`; five pairs out of five at
    5%). A t interval from a few pairs with equal differences (discrete step counts, a shared budget)
    collapses to a point and would otherwise "resolve" anything.

    >>> inf = float("inf")
    >>> paired_less([1.0, 2.0, 1.5, 1.2, 1.7], [3.0, inf, 3.5, 3.1, 3.3]).verdict    # b censored: PASS is safe
    'PASS'
    >>> paired_less([3.0, inf, 3.5, 3.1, 3.3], [1.0, 2.0, 1.5, 1.2, 1.7]).verdict    # a censored: FAIL is safe
    'FAIL'
    >>> paired_less([3.0, 4.0, 3.5, 3.1, 3.3], [1.0, 2.0, 1.5, 1.2, 1.7], censored_b=[0, 1, 0, 0, 0]).verdict
    'INCONCLUSIVE'
    >>> paired_less([12.0, 12.0], [8.0, 8.0]).verdict        # two equal differences: too few pairs to resolve
    'INCONCLUSIVE'
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired_less needs paired values of one length; got {a.size} and {b.size}")
    ca = ~np.isfinite(a) | (np.zeros(a.size, bool) if censored_a is None else np.asarray(censored_a, bool))
    cb = ~np.isfinite(b) | (np.zeros(b.size, bool) if censored_b is None else np.asarray(censored_b, bool))
    keep = ~(ca & cb)
    finite = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    cap = float(finite.max()) if finite.size else math.nan
    a_ = np.where(np.isfinite(a), a, cap)[keep]
    b_ = np.where(np.isfinite(b), b, cap)[keep]
    if a_.size == 0:
        return Judgement(INCONCLUSIVE, math.nan, n=0, confidence=confidence)
    d = a_ - b_
    j = judge_interval(mean_interval(d, confidence), below=0.0)
    if (j.verdict == PASS and ca[keep].any()) or (j.verdict == FAIL and cb[keep].any()):
        return Judgement(INCONCLUSIVE, j.value, j.low, j.high, j.n, confidence, None)
    if j.verdict in (PASS, FAIL):
        fav, unfav = int(np.sum(d < 0)), int(np.sum(d > 0))
        signs = sign_test(fav, unfav, alpha=1 - confidence) if j.verdict == PASS else \
            sign_test(unfav, fav, alpha=1 - confidence)
        if signs.verdict != PASS:
            return Judgement(INCONCLUSIVE, j.value, j.low, j.high, j.n, confidence, signs.needed)
    return j


def sign_test(favourable: int, unfavourable: int, alpha: float = 0.05) -> Judgement:
    """Exact one-sided sign test of "the relation holds in most seeds" (ties already dropped).

    PASS when P(X ≥ favourable | p = ½) < α, FAIL when P(X ≥ unfavourable | p = ½) < α (the
    opposite relation is resolved), INCONCLUSIVE otherwise, with the seeds that would give a PASS
    if the observed proportion held. ``value`` is the favourable fraction.

    >>> sign_test(5, 0).verdict, sign_test(4, 0).verdict, sign_test(0, 5).verdict
    ('PASS', 'INCONCLUSIVE', 'FAIL')
    >>> sign_test(4, 0).needed
    5
    """
    from scipy import stats

    n = favourable + unfavourable
    if n == 0:
        return Judgement(INCONCLUSIVE, math.nan, n=0, confidence=1 - alpha)
    p_for = float(stats.binom.sf(favourable - 1, n, 0.5))
    p_against = float(stats.binom.sf(unfavourable - 1, n, 0.5))
    frac = favourable / n
    if p_for < alpha:
        verdict, needed = PASS, None
    elif p_against < alpha:
        verdict, needed = FAIL, None
    else:
        verdict, needed = INCONCLUSIVE, None
        if frac > 0.5:
            for m in range(n + 1, 1000):
                if float(stats.binom.sf(math.ceil(frac * m) - 1, m, 0.5)) < alpha:
                    needed = m
                    break
    return Judgement(verdict, frac, n=n, confidence=1 - alpha, needed=needed)


def bootstrap_interval(statistic, samples, *, resamples: int = 400, confidence: float = 0.95, seed: int = 0):
    """Percentile bootstrap interval of ``statistic(samples[idx])`` over resampled rows (axis 0).

    Returns ``(value, low, high, draws)``; ``draws`` holds the resampled statistics (all but NaN enter
    the percentiles, ``inf`` included). The resampling is seeded, so a report is reproducible.

    >>> v, lo, hi, _ = bootstrap_interval(np.mean, np.arange(20.0))
    >>> float(v), bool(lo < v < hi)
    (9.5, True)
    """
    samples = np.asarray(samples)
    rng = np.random.default_rng(seed)
    n = samples.shape[0]
    value = statistic(samples)
    draws = np.array([statistic(samples[rng.integers(0, n, n)]) for _ in range(resamples)], dtype=float)
    ok = draws[~np.isnan(draws)]                 # inf (target not reached in a resample) is a real value
    if ok.size < resamples // 2:
        return value, math.nan, math.nan, draws
    a = (1 - confidence) / 2
    lo, hi = np.quantile(ok, [a, 1 - a], method="inverted_cdf")
    return value, float(lo), float(hi), draws
