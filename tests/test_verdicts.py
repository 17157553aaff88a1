"""Three-valued verdicts (paper_checks.verdicts), the report's two parts and its tally (paper_checks.report).

Closed-form cases: every interval below is computed by hand (Student t quantiles from scipy).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from paper_checks.common import CheckResult, ClaimInfo, Comparison
from paper_checks.report import load_results, summary_lines, tally, write_report
from paper_checks.verdicts import (FAIL, INCONCLUSIVE, PASS, combine, judge_interval, mean_interval, paired_less,
                                   seeds_needed, sign_test, within_bound)


def test_mean_interval_is_the_student_t_interval():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    j = mean_interval(x)
    h = stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2.0
    assert (j.value, j.low, j.high, j.n) == (3.5, pytest.approx(3.5 - h), pytest.approx(3.5 + h), 4)


def test_one_value_has_no_interval_and_never_prints_a_spread():
    j = mean_interval([4.2])
    assert math.isnan(j.low) and j.interval is None
    assert "±" not in j.text() and "no interval" in j.text()
    assert judge_interval(j, below=10.0).verdict == INCONCLUSIVE


@pytest.mark.parametrize("values, bound, verdict", [
    ([1.0, 1.1, 0.9, 1.0], 2.0, PASS),          # interval [0.87, 1.13] below 2
    ([3.0, 3.1, 2.9, 3.0], 2.0, FAIL),          # interval wholly above 2
    ([1.0, 3.0, 2.0, 2.5], 2.0, INCONCLUSIVE),  # mean 2.125, interval straddles 2
])
def test_within_bound_is_three_valued(values, bound, verdict):
    assert within_bound(values, bound).verdict == verdict


def test_an_inconclusive_verdict_says_how_many_units_would_resolve_it():
    j = judge_interval(mean_interval([1.0, 3.0, 2.0, 2.5]), below=2.0)
    h = (j.high - j.low) / 2
    assert j.needed == math.ceil(4 * (h / 0.125) ** 2) + 1
    assert seeds_needed(4, 1.0, 0.0) is None


def test_paired_less_tests_the_mean_difference_over_pairs():
    a, b = [10.0, 11.0, 12.0, 10.5, 11.5], [12.0, 13.5, 13.0, 12.5, 14.0]
    j = paired_less(a, b)
    d = np.subtract(a, b)
    h = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert j.verdict == PASS and j.value == pytest.approx(d.mean()) and j.high == pytest.approx(d.mean() + h)
    assert paired_less(b, a).verdict == FAIL


def test_censoring_never_decides_a_verdict_the_unsafe_way():
    inf = math.inf
    a, b = [1.0, 2.0, 1.5, 1.2, 1.7], [3.0, 4.0, 3.5, 3.1, 3.3]
    # the baseline b did not reach its target in one seed: its value is a lower bound
    assert paired_less(a, [3.0, inf, 3.5, 3.1, 3.3]).verdict == PASS                     # PASS only gets safer
    assert paired_less(b, a, censored_b=[False, True, False, False, False]).verdict == INCONCLUSIVE
    # the claimed-better a did not reach it: a PASS would rest on a lower bound
    assert paired_less(a, b, censored_a=[False, True, False, False, False]).verdict == INCONCLUSIVE
    assert paired_less([3.0, inf, 3.5, 3.1, 3.3], a).verdict == FAIL
    # both censored in every pair: nothing to judge
    assert paired_less([inf] * 3, [inf] * 3).n == 0


def test_a_resolved_paired_verdict_needs_the_signs_to_agree():
    # equal differences collapse the t interval to a point; two pairs cannot resolve anything
    assert paired_less([12.0, 12.0], [8.0, 8.0]).verdict == INCONCLUSIVE
    # five pairs, one against: the t interval may exclude 0, the sign test (4 of 5) does not
    j = paired_less([1.0, 1.0, 1.0, 1.0, 2.2], [2.0, 2.0, 2.0, 2.0, 2.0])
    assert j.verdict == INCONCLUSIVE and j.needed is not None and j.needed > 5


@pytest.mark.parametrize("more, less, verdict, needed", [
    (5, 0, PASS, None),          # P(X >= 5 | n = 5) = 1/32 < 0.05
    (4, 0, INCONCLUSIVE, 5),     # 1/16; five seeds all favourable would pass
    (0, 5, FAIL, None),
    (4, 1, INCONCLUSIVE, None),  # p = 6/32; at 80% favourable a PASS needs more seeds
])
def test_sign_test_table(more, less, verdict, needed):
    j = sign_test(more, less)
    assert j.verdict == verdict
    if needed is not None:
        assert j.needed == needed
    if (more, less) == (4, 1):
        assert j.needed is not None and j.needed > 5


def test_combine_fail_beats_inconclusive_beats_pass():
    assert combine([PASS, PASS]) == PASS
    assert combine([PASS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, FAIL, PASS]) == FAIL
    assert combine([]) == INCONCLUSIVE


# -- results and the report --------------------------------------------------------------------------------

def _result(claim_id, part, verdicts, counts=None):
    info = ClaimInfo(id=claim_id, title=f"title {claim_id}", statement=f"statement {claim_id}", source="-", part=part)
    counts = counts or [True] * len(verdicts)
    comps = [Comparison(f"q{i}", "m", "e", v, value=1.0, interval=[0.5, 1.5], n=5, counts=c)
             for i, (v, c) in enumerate(zip(verdicts, counts))]
    return CheckResult.from_comparisons(info, "quick", comps, tolerance="t", seeds=[0, 1, 2, 3, 4])


def test_a_comparison_that_does_not_count_never_changes_the_verdict():
    r = _result("a", "claim", [PASS, FAIL], counts=[True, False])
    assert r.verdict == PASS
    assert r.counts() == {PASS: 1, FAIL: 0, INCONCLUSIVE: 0}


def test_only_the_papers_claims_are_tallied():
    results = [_result("a", "claim", [PASS]), _result("b", "claim", [INCONCLUSIVE]),
               _result("c", "question", [FAIL]), _result("d", "claim", [FAIL, PASS])]
    assert tally(results) == {"claims": 3, PASS: 1, FAIL: 1, INCONCLUSIVE: 1}


def test_report_separates_claims_from_questions_and_states_interval_and_n(tmp_path):
    results = [_result("q", "question", [FAIL]), _result("a", "claim", [PASS, INCONCLUSIVE])]
    meta = {"mode": "quick", "wall_time_s": 12.0, "environment": {"git_commit": "0123456789abcdef"}}
    path = write_report(results, tmp_path, meta)
    text = path.read_text()
    claims, questions = text.index("## The paper's claims"), text.index("## Our questions beyond the paper")
    assert claims < questions
    assert "0 PASS, 0 FAIL, 1 INCONCLUSIVE of the paper's 1 claims" in text
    assert "| q0 | m | e | [0.5, 1.5] | 5 | PASS |" in text
    assert "verdicts may be INCONCLUSIVE" not in text and "cannot resolve the difference" in text
    back, meta_back = load_results(tmp_path / "results.json")
    assert [r.to_dict() for r in back] == [r.to_dict() for r in results] and meta_back["mode"] == "quick"
    lines = summary_lines(results, meta)
    assert lines[0].startswith("mode: quick; 0 PASS, 0 FAIL, 1 INCONCLUSIVE of the paper's 1 claims")
    assert lines.index("The paper's claims:") < lines.index("Our questions beyond the paper:")


def test_results_json_names_its_figures_relative_to_the_report_so_the_folder_can_move(tmp_path):
    r = _result("a", "claim", [PASS])
    r.figures = [str(tmp_path / "run" / "a.png")]
    write_report([r], tmp_path / "run", {"mode": "quick", "environment": {}})
    (back,), _ = load_results(tmp_path / "run" / "results.json")
    assert back.figures == ["a.png"]


def test_reports_written_before_three_valued_verdicts_still_load(tmp_path):
    old = {"meta": {"mode": "quick"}, "results": [{
        "claim": "x", "title": "X", "mode": "quick", "verdict": "FAIL", "tolerance": "t", "figures": [],
        "notes": "", "seeds": [0], "wall_time_s": 1.0, "settings": {},
        "comparisons": [{"quantity": "q", "measured": "m", "expected": "e", "ok": False},
                        {"quantity": "r", "measured": "m", "expected": "e", "ok": True}]}]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    (r,), _ = load_results(tmp_path / "results.json")
    assert [c.verdict for c in r.comparisons] == [FAIL, PASS] and r.part == "claim"


def test_a_comparison_refuses_a_verdict_it_does_not_know():
    with pytest.raises(Exception, match="verdict"):
        Comparison("q", "m", "e", "MAYBE")
