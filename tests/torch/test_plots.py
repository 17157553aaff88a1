"""sfo plot: one or many runs read back from their logs, PNG and PDF written (Agg)."""

from __future__ import annotations

import json

import pytest

from sfotheory.cli import main
from sfotheory.validation import ParameterError
from sfotorch.plots import find_runs, load_run, plot_runs
from tests.snapshot import snapshot


def write_run(folder, n=100, stages=((8, 0.1, 0.5), (16, 0.14, 0.354), (32, 0.196, 0.25)), shift=0.0):
    """A log in sfo train's format: start, check records (one stage change per stage), evals, end."""
    folder.mkdir(parents=True)
    records = [{"kind": "start", "step": 0, "samples": 0, "n": n, "seed": 0}]
    step, samples, check = 0, 0, 0
    for m, (b, eta, eps) in enumerate(stages):
        for k in range(3):
            step += 5
            samples += 5 * b
            check += n
            last = k == 2 and m + 1 < len(stages)
            nxt = stages[m + 1] if last else (b, eta, eps)
            records.append({"kind": "check", "step": step, "samples": samples, "check_samples": check,
                            "sfo_total": samples + check, "stage": m, "b": b, "eta": eta, "eps_m": eps,
                            "norm": eps * (1.5 - 0.3 * k) + shift, "event": "ADVANCED" if last else "CHECKED",
                            "stage_next": m + 1 if last else m, "b_next": nxt[0], "eta_next": nxt[1],
                            "eps_m_next": nxt[2], "epoch": samples / n})
            records.append({"kind": "eval", "step": step, "samples": samples, "epoch": samples / n,
                            "test_acc": 0.5 + 0.02 * len(records), "test_loss": 1.0 / len(records),
                            "train_loss": 1.2 / len(records)})
    records.append({"kind": "checkpoint", "step": step, "samples": samples, "path": "x"})
    records.append({"kind": "end", "step": step, "samples": samples, "status": "finished"})
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_load_run_separates_checks_and_evals(tmp_path):
    records = write_run(tmp_path / "r" / "seed0")
    run = load_run(tmp_path / "r" / "seed0")
    assert run["n"] == 100 and run["label"] == "r/seed0"
    assert len(run["checks"]) == 9 and len(run["evals"]) == 9
    assert [r["step"] for r in run["checks"]] == [r["step"] for r in records if r["kind"] == "check"]


def test_find_runs_expands_seed_folders_and_refuses_other_folders(tmp_path):
    write_run(tmp_path / "multi" / "seed0")
    write_run(tmp_path / "multi" / "seed1")
    write_run(tmp_path / "single" / "seed3")
    runs = find_runs([tmp_path / "multi", tmp_path / "single" / "seed3"])
    assert [r.split("/")[-1] for r in runs] == ["seed0", "seed1", "seed3"]
    with pytest.raises(ParameterError, match=r"'RUN_DIR' parameter of sfo plot .*\(no log.jsonl found there\)"):
        find_runs([tmp_path])


@pytest.mark.slow
def test_one_run_gives_the_overview_and_the_sfo_figure_as_png_and_pdf(tmp_path):
    write_run(tmp_path / "r" / "seed0")
    files = plot_runs([tmp_path / "r"], str(tmp_path / "fig" / "one"), dpi=40)
    assert sorted(f.rsplit("/", 1)[1] for f in files) == ["one.pdf", "one.png", "one_sfo.pdf", "one_sfo.png"]
    for f in files:
        data = open(f, "rb").read()
        assert data.startswith(b"\x89PNG" if f.endswith(".png") else b"%PDF") and len(data) > 3000


@pytest.mark.slow
def test_the_figure_changes_with_the_data(tmp_path):
    write_run(tmp_path / "a" / "seed0")
    write_run(tmp_path / "b" / "seed0", shift=0.3)
    fa = plot_runs([tmp_path / "a"], str(tmp_path / "a_fig"), formats=("png",), dpi=40)[0]
    fb = plot_runs([tmp_path / "b"], str(tmp_path / "b_fig"), formats=("png",), dpi=40)[0]
    assert open(fa, "rb").read() != open(fb, "rb").read()


@pytest.mark.slow
def test_sfo_plot_draws_many_runs_into_one_figure(tmp_path, capsys):
    write_run(tmp_path / "adaptive" / "seed0")
    write_run(tmp_path / "adaptive" / "seed1", shift=0.1)
    write_run(tmp_path / "constant" / "seed0", stages=((128, 0.1, 0.5),))
    out = tmp_path / "cmp"
    assert main(["plot", str(tmp_path / "adaptive"), str(tmp_path / "constant"), "--out", str(out),
                 "--x", "sfo_total", "--dpi", "40"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [f"{out}.png", f"{out}.pdf"]          # several runs: the overview only
    assert (tmp_path / "cmp.png").stat().st_size > 3000


def test_sfo_plot_default_output_is_inside_the_run_folder(tmp_path, capsys):
    write_run(tmp_path / "r" / "seed0")
    assert main(["plot", str(tmp_path / "r"), "--formats", "png", "--dpi", "40"]) == 0
    assert (tmp_path / "r" / "plots" / "overview.png").exists()
    assert (tmp_path / "r" / "plots" / "overview_sfo.png").exists()


def test_sfo_plot_of_a_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such folder" in err and str(tmp_path / "nothing") in err


@pytest.mark.parametrize("content, missing", [
    (None, "no log.jsonl found there"),
    ("", "log.jsonl is empty"),
    ('{"kind": "start", "step": 0, "samples": 0, "n": 100}\n', "log.jsonl holds records of kind start only"),
])
def test_sfo_plot_of_a_run_with_nothing_to_draw_says_what_is_missing_and_writes_nothing(tmp_path, capsys, content,
                                                                                        missing):
    run = tmp_path / "r" / "seed0"
    run.mkdir(parents=True)
    if content is not None:
        (run / "log.jsonl").write_text(content)
    before = snapshot(tmp_path)
    assert main(["plot", str(tmp_path / "r"), "--formats", "png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sfo plot: error: The 'RUN_DIR' parameter of sfo plot")
    assert missing in err
    assert snapshot(tmp_path) == before
