"""README's "Algorithm 2 among its peers": the table's cells are rows of the committed sfo compare outputs,
and the property-testing example is quoted as it is and prints what the README says."""

import pathlib
import re
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _results(problem: str) -> dict:
    """(policy, eps) → (train SFO with its interval, SFO with measurement), from the committed output's table."""
    text = (ROOT / "docs" / "results" / f"sfo_compare_{problem}.txt").read_text(encoding="utf-8")
    rows = {}
    for line in text.split("\nresults:", 1)[1].splitlines()[2:]:
        m = re.match(r"(\w+)\s+([\d.]+)\s+\S+\s+\[[^\]]*\]\s+(\S+)\s+(\[[^\]]*\])\s+(\S+)\s+\[[^\]]*\]\s+[\d.]+$", line)
        if not m:
            break
        policy, eps, sfo, ci, meas = m.groups()
        rows[(policy, eps)] = ("–" if sfo == "-" else f"{sfo} {ci}", "–" if meas == "-" else meas)
    return rows


def _table_rows():
    block = README.split("<!-- peers-table:", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[3:]]


def test_every_cell_of_the_peers_table_is_in_the_committed_output():
    rows = _table_rows()
    assert len(rows) == 9
    for problem, eps, alg2, alg2_meas, best in rows:
        res = _results(problem)
        assert res[("stage_rule", eps)] == (alg2, alg2_meas), (problem, eps)
        policy, value = best.split(" ", 1)
        assert res[(policy, eps)][0] == value, (problem, eps, policy)
        reached = [float(v[0].split()[0]) for v in (res[(p, e)] for p, e in res if e == eps) if v[0] != "–"]
        assert float(value.split()[0]) == min(reached), (problem, eps)    # it is the least of all policies


def test_the_readme_quotes_the_own_policy_example_and_its_output(capsys):
    example = (ROOT / "docs" / "examples" / "own_policy.py").read_text(encoding="utf-8")
    assert "```python\n" + example + "```" in README
    runpy.run_path(str(ROOT / "docs" / "examples" / "own_policy.py"), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "DoubleWhenNoisy keeps every invariant"
    assert out[1].startswith("Uncapped: Uncapped ('uncapped') breaks 'b <= b_max = ")
    assert "`DoubleWhenNoisy keeps every invariant`" in README
