"""``sfo theory``: JSON values, text, --help on every subcommand, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from sfotheory.cli import build_parser, main
from tests.golden import COMPLEXITY_TABLE, PAPER_STAGES


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "sfotheory.cli", *argv], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("row", COMPLEXITY_TABLE[:2], ids=["unit", "L2"])
def test_json_keys_and_values(row, capsys):
    argv = ["theory", "--L", str(row["L"]), "--sigma2", str(row["sigma2"]), "--gap", str(row["gap"]),
            "--eta", str(row["eta"]), "--eps", str(row["eps"]), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["C1"] == pytest.approx(row["C1"], rel=1e-12)
    assert out["C2"] == pytest.approx(row["C2"], rel=1e-12)
    assert out["critical_batch_size"] == pytest.approx(row["b_star"], rel=1e-12)
    assert out["steps_at_critical"] == pytest.approx(row["K"], rel=1e-12)
    assert out["sfo_at_critical"] == pytest.approx(row["N"], rel=1e-12)
    assert "steps" not in out


def test_json_with_batch_size(capsys):
    assert main(["theory", "--L", "2", "--sigma2", "4", "--gap", "3", "--eta", "0.5", "--eps", "0.1",
                 "--b", "1600", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == pytest.approx(1600.0) and out["sfo"] == pytest.approx(2.56e6)


def test_text_report_and_paper_table(capsys):
    assert main(["theory", "--L", "1", "--sigma2", "1", "--gap", "1", "--eta", "1", "--eps", "0.5",
                 "--b", "16"]) == 0
    text = capsys.readouterr().out
    assert "critical batch size b*" in text and "At b = 16" in text
    assert main(["theory", "--paper", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["schedule"]
    assert [(r["m"], r["b"]) for r in rows] == [(m, b) for m, b, _, _ in PAPER_STAGES]


@pytest.mark.slow
def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "theory" in sub.choices
    for name in sub.choices:
        res = run_cli(name, "--help")
        assert res.returncode == 0 and "usage: sfo " + name in res.stdout


@pytest.mark.parametrize("argv, fragment", [
    (["theory", "--L", "1", "--sigma2", "1", "--gap", "1", "--eta", "2.5", "--eps", "0.5"],
     "'eta' parameter of theory_constants must be > 0 and < 2/L = 2"),
    (["theory", "--L", "1", "--sigma2", "-1", "--gap", "1", "--eta", "0.1", "--eps", "0.5"], "'sigma2' parameter"),
    (["theory", "--L", "1", "--sigma2", "1", "--gap", "1", "--eta", "0.1", "--eps", "0"], "Got eps=0.0"),
    (["theory", "--L", "nan", "--sigma2", "1", "--gap", "1", "--eta", "0.1", "--eps", "0.5"], "Got L=nan"),
    (["theory", "--L", "abc"], "invalid float value: 'abc'"),
    (["theory", "--L", "1"], "missing: --sigma2 --gap --eta --eps"),
    (["theory", "--L", "1", "--sigma2", "1", "--gap", "1", "--eta", "0.1", "--eps", "0.5", "--n", "10",
      "--b", "11"], "'b' parameter of steps_to_eps must be <= n = 10"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_bad_input_is_one_line_exit_two(argv, fragment):
    res = run_cli(*argv)
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert fragment in lines[0]


def test_importing_sfotheory_does_not_import_torch():
    code = ("import sys, sfotheory, sfotheory.cli, sfotheory.complexity, sfotheory.rule, sfotheory.theory_cli; "
            "sfotheory.cli.build_parser(); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
