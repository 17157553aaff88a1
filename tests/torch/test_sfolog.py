"""The JSON-lines check log, its reader, table and plot."""

import contextlib
import json
import math
import warnings

import pytest

torch = pytest.importorskip("torch")

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch.scheduler import MeasuredNorm, StageScheduler  # noqa: E402
from sfotorch.sfolog import LOG_FIELDS, SFOAccount, log_columns, log_table, plot_log, read_log  # noqa: E402


class Scripted:
    name = "scripted"

    def __init__(self, norms, cost):
        self.norms, self.cost, self.k = list(norms), cost, 0

    def measure(self):
        self.k += 1
        return MeasuredNorm(self.norms[self.k - 1], self.cost)


@contextlib.contextmanager
def _no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def run_logged(log, steps=20, samples=lambda t: 4):
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched = StageScheduler(opt, "adaptive_exponential", b0=4, eta0=0.1, eps0=0.5, delta=2, gamma=1.4, tau=4,
                           monitor=Scripted([0.9, 0.4, math.nan, 0.3, 0.1], cost=50), log=log, on_nonfinite="warn")
    with pytest.warns(RuntimeWarning, match="Got norm=nan") if steps >= 12 else _no_warning():
        for t in range(steps):
            sched.step(samples=samples(t))
    sched.close()
    return sched


def test_one_record_per_check_with_both_sfo_counts(tmp_path):
    path = tmp_path / "run" / "log.jsonl"
    sizes = [4, 4, 3, 4, 8, 8, 8, 5] + [16] * 12
    sched = run_logged(path, samples=lambda t: sizes[t])
    records = read_log(path)
    assert [r["step"] for r in records] == [4, 8, 12, 16, 20]
    assert all(tuple(r) == LOG_FIELDS for r in records)
    assert [r["event"] for r in records] == ["CHECKED", "ADVANCED", "NONFINITE", "ADVANCED", "ADVANCED"]
    assert [r["samples"] for r in records] == [sum(sizes[:s]) for s in (4, 8, 12, 16, 20)]
    assert [r["check_samples"] for r in records] == [50, 100, 150, 200, 250]
    assert all(r["sfo_total"] == r["samples"] + r["check_samples"] for r in records)
    assert math.isnan(records[2]["norm"]) and records[2]["monitor"] == "scripted"
    assert [(r["stage"], r["stage_next"]) for r in records] == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3)]
    assert [(r["b"], r["b_next"]) for r in records][1] == (4, 8)
    assert records[1]["eps_m"] == 0.5 and records[1]["eps_m_next"] == pytest.approx(0.5 / math.sqrt(2))
    # per-stage counts: stage 0 ran steps 1..8, stage 1 steps 9..16
    assert (records[1]["stage_samples"], records[1]["stage_check_samples"]) == (sum(sizes[:8]), 100)
    assert (records[3]["stage_samples"], records[3]["stage_check_samples"]) == (sum(sizes[8:16]), 100)
    assert sched.account.stage(1) == {"steps": 8, "checks": 2, "train": sum(sizes[8:16]), "measure": 100}


def test_log_appends_and_reads_back_as_columns_and_table(tmp_path):
    path = tmp_path / "log.jsonl"
    run_logged(path, steps=8)
    run_logged(path, steps=4)
    cols = log_columns(path)
    assert cols["step"] == [4, 8, 4] and cols["event"] == ["CHECKED", "ADVANCED", "CHECKED"]
    table = log_table(path, columns=["step", "stage", "b", "norm", "event"]).splitlines()
    assert table[0].split() == ["step", "stage", "b", "norm", "event"]
    assert table[2].split() == ["8", "0", "4", "0.4", "ADVANCED"]
    with pytest.raises(ParameterError, match=r"'columns' parameter of log_table must be fields of the log.*"
                                             r"Got columns=\['nrom'\] instead"):
        log_table(path, columns=["nrom"])


def test_periodic_stage_changes_are_logged_off_check_steps():
    records = []
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched = StageScheduler(opt, "periodic", b0=2, eta0=0.1, delta=2, gamma=1.2, period=5, tau=100, log=records)
    for _ in range(12):
        sched.step()
    assert [(r["step"], r["event"], r["check"], r["b_next"]) for r in records] == [
        (5, "PERIOD", False, 4), (10, "PERIOD", False, 8)]


def test_a_log_written_with_the_old_name_of_eps_m_next_reads_under_the_new_one(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"step": 2, "eps_m": 0.5, "eps_next": 0.35}) + "\n")
    (rec,) = read_log(path)
    assert rec == {"step": 2, "eps_m": 0.5, "eps_m_next": 0.35}
    assert log_columns([{"step": 2, "eps_m": 0.5, "eps_next": 0.35}])["eps_m_next"] == [0.35]


def test_read_log_names_a_broken_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n{broken\n")
    with pytest.raises(ParameterError, match=r"'path' parameter of read_log must be a JSON-lines file.*bad.jsonl:2"):
        read_log(path)


def test_plot_log_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    records = []
    run_logged(records, steps=20)
    out = plot_log(records, tmp_path / "log.png")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ParameterError, match="Got x='steps' instead"):
        plot_log(records, tmp_path / "x.png", x="steps")


def test_account_state_round_trip():
    acc = SFOAccount()
    acc.add(stage=0, samples=3, check_cost=10, checked=True)
    acc.add(stage=2, samples=5)
    other = SFOAccount()
    other.load_state_dict(json.loads(json.dumps(acc.state_dict())))
    assert other.per_stage() == acc.per_stage()
    assert other.totals() == {"steps": 2, "checks": 1, "train": 8, "measure": 10, "total": 18}


def test_truncate_log_cuts_at_a_stored_line_end_and_refuses_any_other_offset(tmp_path):
    from sfotheory.validation import ParameterError
    from sfotorch.sfolog import SFOLogWriter, read_log, truncate_log

    path = tmp_path / "log.jsonl"
    writer = SFOLogWriter(path, mode="w")
    writer.write({"step": 1})
    writer.write({"step": 2})
    cut = writer.offset()
    writer.write({"step": 3, "kind": "check"})
    writer.write({"step": 4})
    size = writer.offset()
    for bad in (cut - 1, size + 5):
        with pytest.raises(ParameterError, match=r"'offset' parameter of truncate_log.*end of a line"):
            truncate_log(path, bad)
    assert len(read_log(path)) == 4                       # a refused cut changes nothing
    assert truncate_log(path, cut) == 2
    writer.write({"step": 3})                             # the writer appends at the new end
    writer.close()
    assert [r["step"] for r in read_log(path)] == [1, 2, 3]


def test_rewind_log_cuts_after_the_checkpoint_record_restores_a_lost_one_and_leaves_another_file_alone(tmp_path):
    from sfotorch.sfolog import SFOLogWriter, read_log, rewind_log

    def log_with(tail_records, name):
        path = tmp_path / name
        w = SFOLogWriter(path, mode="w")
        w.write({"step": 1})
        start, line = w.offset(), SFOLogWriter.encode({"kind": "checkpoint", "step": 2})
        w.write_line(line)
        for r in tail_records:
            w.write(r)
        w.close()
        return path, start, line

    path, start, line = log_with([{"step": 3}, {"step": 4}], "after.jsonl")
    assert rewind_log(path, start, line) == 2 and [r["step"] for r in read_log(path)] == [1, 2]
    # died after the checkpoint file and before its record: the record is put back
    lost = tmp_path / "lost.jsonl"
    lost.write_bytes(path.read_bytes()[:start])
    assert rewind_log(lost, start, line) == 0 and read_log(lost) == read_log(path)
    # a log that does not hold that record there is not cut
    other = tmp_path / "other.jsonl"
    other.write_bytes(b'{"x": 1}\n' * 10)
    with pytest.warns(RuntimeWarning, match="was not cut"):
        assert rewind_log(other, start, line) is None
    assert len(read_log(other)) == 10
