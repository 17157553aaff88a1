"""`sfo reproduce` end to end (smoke mode: every check's code in seconds; its verdicts are not evidence),
and the summaries that README.md and paper_checks/README.md quote from the committed report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from paper_checks import CHECKS  # noqa: E402
from paper_checks.common import MODES, CheckResult  # noqa: E402
from paper_checks.report import load_results  # noqa: E402
from paper_checks.verdicts import VERDICTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    sfo = Path(sys.executable).with_name("sfo")
    proc = subprocess.run([str(sfo), "reproduce", "--mode", "smoke", "--out", str(out)], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_reproduce_writes_a_report_and_results_with_every_check(smoke_run):
    out, stdout = smoke_run
    results, meta = load_results(out / "results.json")
    assert meta["mode"] == "smoke" and meta["command"] == "sfo reproduce --mode smoke"
    assert re.fullmatch(r"[0-9a-f]{40}", meta["environment"]["git_commit"])
    ids = [r.claim for r in results]
    assert ids == [__import__(f"paper_checks.{m}", fromlist=["CLAIM"]).CLAIM.id for m in CHECKS]
    for r in results:
        assert r.verdict in VERDICTS and r.comparisons and r.tolerance and r.part in ("claim", "question")
        assert all(c.verdict in VERDICTS for c in r.comparisons)
        assert r.figures and all((out / Path(f).name).is_file() for f in r.figures)
        assert CheckResult.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()
    assert "1 claims PASS" not in stdout and "of the paper's" in stdout      # the tally counts claims only


@pytest.mark.slow
def test_report_puts_the_papers_claims_before_our_questions_and_never_prints_a_spread_of_one(smoke_run):
    out, _ = smoke_run
    text = (out / "report.md").read_text()
    results, _ = load_results(out / "results.json")
    claims, questions = text.index("## The paper's claims"), text.index("## Our questions beyond the paper")
    assert claims < questions
    for r in results:
        row = text.index(f"[{r.title.replace('|', chr(92) + '|')}](#{r.claim})")
        assert (claims < row < questions) == (r.part == "claim")
    assert "± 0 " not in text and "± 0k" not in text
    assert "smoke mode exercises the code" in text


@pytest.mark.slow
def test_every_mode_the_cli_offers_has_settings_in_every_check():
    for name in CHECKS:
        mod = __import__(f"paper_checks.{name}", fromlist=["SETTINGS"])
        assert set(mod.SETTINGS) == set(MODES), name


# -- the committed reports and the summaries quoted from them ---------------------------------------------

COMMITTED = {"standard": ROOT / "docs" / "results" / "reproduce_standard",
             "quick": ROOT / "docs" / "results" / "reproduce_quick"}
TORCH_CLAIMS = {"critical_batch_size", "adaptive_vs_baselines"}


@pytest.mark.parametrize("mode", sorted(COMMITTED))
def test_the_committed_report_is_of_its_mode_and_holds_every_check_in_two_parts(mode):
    results, meta = load_results(COMMITTED[mode] / "results.json")
    assert meta["mode"] == mode
    assert re.fullmatch(r"[0-9a-f]{40}", meta["environment"]["git_commit"])
    assert [r.claim for r in results] == [__import__(f"paper_checks.{m}", fromlist=["CLAIM"]).CLAIM.id
                                          for m in CHECKS]
    for r in results:
        assert r.verdict in VERDICTS and r.part in ("claim", "question")
        assert all((COMMITTED[mode] / Path(f).name).is_file() for f in r.figures)
    if mode == "standard":      # at least 5 paired seeds for every torch claim
        seeds = {r.claim: r.seeds for r in results if r.claim in TORCH_CLAIMS}
        assert seeds.keys() == TORCH_CLAIMS and all(len(s) >= 5 for s in seeds.values()), seeds


@pytest.mark.parametrize("readme", ["README.md", "paper_checks/README.md"])
def test_the_readmes_quote_the_committed_reports_as_generated(readme):
    from paper_checks.report import sync_markdown

    text = (ROOT / readme).read_text()
    assert all(f"reproduce-summary docs/results/reproduce_{m}" in text for m in COMMITTED)
    assert sync_markdown(ROOT / readme, root=ROOT, check=True), (
        f"{readme} quotes a summary that differs from the committed report: run "
        f"python -m paper_checks.report {readme}")
