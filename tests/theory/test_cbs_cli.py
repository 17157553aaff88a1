"""``sfo cbs``: table, JSON, plot, and one-line errors with exit code 2."""

import json

import pytest

from sfotheory.cli import main

SMALL = ["cbs", "--problem", "quadratic", "--dim", "100", "--eps", "0.08", "--eta", "0.2", "--replicates", "4",
         "--batches", "6", "--max-steps", "300"]


def test_table_output(capsys):
    assert main(SMALL) == 0
    out = capsys.readouterr().out
    assert "b* = 2 C2/eps^2" in out and "b^*/b*" in out and "exact E" in out


def test_json_plot_and_save(tmp_path, capsys):
    png, js = tmp_path / "u.png", tmp_path / "r.json"
    assert main(SMALL + ["--json", "--plot", str(png), "--save", str(js)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["b_star"] == pytest.approx(json.loads(js.read_text())["b_star"])
    assert {"b_hat_measured", "b_hat_fit", "C1_fit", "C2_fit", "ratio_measured"} <= set(d)
    assert png.stat().st_size > 10_000


def test_explicit_grid_and_finite_sum_problem(capsys):
    assert main(["cbs", "--problem", "least_squares", "--n", "200", "--dim", "4", "--eps", "0.05", "--b-min", "2",
                 "--b-max", "64", "--batches", "4", "--replicates", "3", "--max-steps", "1500",
                 "--without-replacement", "200"]) == 0
    assert "without replacement" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["--eps", "0"], "The '--eps' parameter of sfo cbs must be > 0 (the target is ||grad f|| <= eps). Got --eps=0.0"),
    (["--eps", "nan"], "The '--eps' parameter of sfo cbs must be finite. Got --eps=nan instead."),
    (["--eps", "0.1", "--dim", "-5"], "The '--dim' parameter of sfo cbs must be >= 1. Got --dim=-5 instead."),
    (["--eps", "0.1", "--batches", "1"], "The '--batches' parameter of sfo cbs must be >= 2. Got --batches=1"),
    (["--eps", "0.1", "--max-steps", "0"], "The '--max-steps' parameter of sfo cbs must be >= 1."),
    (["--eps", "0.1", "--noise", "pink"], "The '--noise' parameter of sfo cbs must be one of 'isotropic', 'hessian'"),
    (["--eps", "0.1", "--problem", "mnist"], "'quadratic', 'least_squares', 'logistic', 'cauchy'"),
    (["--eps", "0.1", "--eta", "3"], "2/L = 2"),
    (["--eps", "0.1", "--problem", "logistic", "--sigma2", "2"], "'--sigma2'"),
    (["--eps", "0.1", "--problem", "least_squares", "--n", "50", "--without-replacement", "50", "--b-min", "4",
      "--b-max", "80"], "<= n = 50"),
])
def test_bad_input_is_one_line_with_exit_code_2(argv, needle, capsys):
    assert main(["cbs", "--replicates", "2", "--max-steps", "10"] + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sfo cbs: error:") and needle in err
    assert not any(inner in err for inner in ("cbs_sweep", "make_problem", "simulate")), "names the flag instead"


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["cbs", "--help"])
    assert e.value.code == 0
    assert "--replicates" in capsys.readouterr().out
