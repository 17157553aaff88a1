"""docs/theory.md, the theory note inside the repository: every section the tree cites exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTE = ROOT / "docs" / "theory.md"
#: docs/theory.md, "Section title"  (also with ' or “” quotes)
CITATION = re.compile(r"docs/theory\.md,?\s*[\"'“]([^\"'”]+)[\"'”]")
SEARCHED = ("sfotheory", "sfotorch", "paper_checks", "tests", "benchmarks", "notebooks", "docs", "scripts")


def section_titles() -> set[str]:
    # headings "## 6. Algorithm 2" are cited by their title, "Algorithm 2"
    return {re.sub(r"^\d+\.\s*", "", line[3:].strip())
            for line in NOTE.read_text(encoding="utf-8").splitlines() if line.startswith("## ")}


def citations():
    files = [ROOT / "README.md"] + [p for d in SEARCHED for p in sorted((ROOT / d).rglob("*"))
                                     if p.suffix in {".py", ".md", ".toml"} and p.is_file()
                                     and p != Path(__file__).resolve()]
    for path in files:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for title in CITATION.findall(line):
                yield f"{path.relative_to(ROOT)}:{i}", title


def test_the_note_has_its_core_sections():
    assert {"Setting", "Proposition 1", "Proposition 2", "Stage thresholds", "Algorithm 2", "Order of events",
            "The expectation criterion", "SFO accounting"} <= section_titles()


def test_every_cited_section_exists():
    cited = list(citations())
    assert any(where.startswith("sfotheory/rule.py") for where, _ in cited)
    missing = [f"{where}: {title!r}" for where, title in cited if title not in section_titles()]
    assert missing == [], f"sections cited but not in docs/theory.md ({sorted(section_titles())}): {missing}"
