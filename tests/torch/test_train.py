"""sfo train end to end on small generated data sets in the real on-disk formats (CPU, seconds each)."""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import shutil
import statistics
import sys

import pytest
import torch

from sfotheory.cli import main
from sfotorch.checkpoint import read_checkpoint
from sfotorch.config import apply_overrides, load_config, load_config_text
from sfotorch.datasets import write_cifar, write_fashion_mnist
from sfotorch.sfolog import read_log
from sfotorch.train import Progress, train
from tests.snapshot import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETERMINISTIC = ("kind", "step", "samples", "check_samples", "stage", "b", "eta", "norm", "event", "test_loss",
                 "test_acc", "train_loss", "stage_next")


def config_text(root, **schedule) -> str:
    sched = {"policy": '"adaptive_exponential"', "b0": 4, "eta0": 0.05, "eps0": 10.0, "delta": 2.0, "gamma": 1.4,
             "tau": 2, "b_max": 16, **{k: v for k, v in schedule.items()}}
    lines = "\n".join(f"{k} = {v}" for k, v in sched.items())
    return f"""
[run]
name = "tiny"
progress_every = 0.0
[data]
dataset = "fashion_mnist"
root = "{root}"
augment = true
[model]
name = "small_cnn"
[schedule]
{lines}
[monitor]
batch_size = 32
[train]
max_steps = 6
[eval]
every = "check"
"""


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    write_fashion_mnist(root, train_size=48, test_size=16, seed=3)
    return root


@pytest.fixture
def config_file(tmp_path, fashion):
    path = tmp_path / "tiny.toml"
    path.write_text(config_text(fashion))
    return path


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_one_run_writes_log_summary_checkpoint_and_plots(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--out", str(out), "--set", "run.checkpoint_every=4"]) == 0
    stdout = capsys.readouterr().out
    assert "test_acc" in stdout and "1 seed(s)" in stdout
    log = read_log(out / "seed0" / "log.jsonl")
    kinds = [r["kind"] for r in log]
    assert kinds[0] == "start" and kinds[-1] == "end"
    start = log[0]
    assert start["n"] == 48 and start["seed"] == 0 and start["versions"]["torch"] == torch.__version__
    assert start["config"]["schedule"]["tau"] == 2 and start["device"] == "cpu"
    checks = [r for r in log if r["kind"] == "check"]
    assert [r["step"] for r in checks] == [2, 4, 6]
    # eps0 = 10 is above any norm here: every check moves one stage (b ×2, η ×1.4) until b_max = 16
    assert [(r["b"], r["b_next"]) for r in checks] == [(4, 8), (8, 16), (16, 16)]
    assert [r["event"] for r in checks] == ["ADVANCED", "ADVANCED", "AT_MAX"]
    assert all(r["norm"] > 0 and math.isfinite(r["norm"]) for r in checks)
    # SFO in samples: training counts the true size of every batch, 4+4+8+8+16 and then the short last
    # batch of the epoch (48 − 40 = 8, a batch never crosses the epoch's end); the exact monitor n = 48 a check
    assert checks[-1]["samples"] == 48 and checks[-1]["check_samples"] == 3 * 48
    assert checks[-1]["epoch"] == 1.0
    evals = [r for r in log if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["test_loss"] > 0 and r["train_loss"] > 0 for r in evals)
    assert [r["step"] for r in log if r["kind"] == "checkpoint"] == [4, 6]
    summary = rows(out / "seed0" / "summary.csv")
    assert len(summary) == 1
    s = summary[0]
    assert s["status"] == "finished" and int(s["steps"]) == 6 and int(s["train_samples"]) == 48
    assert int(s["check_samples"]) == 144 and int(s["final_b"]) == 16 and int(s["final_stage"]) == 2
    assert float(s["test_acc"]) == evals[-1]["test_acc"] and s["schedule.tau"] == "2" and s["seed"] == "0"
    assert s["torch"] == torch.__version__ and s["python"]
    ckpt = read_checkpoint(out / "seed0" / "checkpoint.pt")
    assert ckpt["sfo"] == {"steps": 6, "train": 48, "measure": 144, "total": 192}
    assert ckpt["loop"]["steps"] == 6
    assert (out / "config.toml").exists() and load_config(out / "config.toml")["schedule"]["tau"] == 2
    assert main(["plot", str(out), "--dpi", "40"]) == 0
    files = capsys.readouterr().out.split()
    assert len(files) == 4
    for f in files:
        data = open(f, "rb").read()
        assert len(data) > 3000
        assert data.startswith(b"\x89PNG" if f.endswith(".png") else b"%PDF")


def _deterministic(log):
    return [tuple(r.get(k) for k in DETERMINISTIC) for r in log if r["kind"] not in ("start", "resume")]


class Crash(RuntimeError):
    pass


def test_a_resumed_run_continues_the_log_without_lost_or_duplicated_records(tmp_path, fashion):
    cfg = apply_overrides(load_config_text(config_text(fashion), "tiny.toml"),
                          ["train.max_steps=11", "run.checkpoint_every=4", "schedule.eps0=0.5"])
    train(cfg, out_dir=str(tmp_path / "whole"))

    def crash_at_7(info):
        if info["step"] == 7:
            raise Crash("simulated crash after step 7")

    with pytest.raises(Crash):
        train(cfg, out_dir=str(tmp_path / "cut"), on_step=crash_at_7)
    cut_log = read_log(tmp_path / "cut" / "seed0" / "log.jsonl")
    assert max(r["step"] for r in cut_log) == 6          # records after the checkpoint of step 4 exist …
    train(cfg, out_dir=str(tmp_path / "cut"), resume=True)
    whole = read_log(tmp_path / "whole" / "seed0" / "log.jsonl")
    resumed = read_log(tmp_path / "cut" / "seed0" / "log.jsonl")
    assert [r["kind"] for r in resumed].count("resume") == 1
    resume = next(r for r in resumed if r["kind"] == "resume")
    assert resume["step"] == 4 and resume["dropped_records"] > 0  # … and were dropped, then written again
    assert _deterministic(resumed) == _deterministic(whole)
    keys = [(r["kind"], r["step"]) for r in resumed if r["kind"] != "resume"]
    assert len(keys) == len(set(keys))
    a = read_checkpoint(tmp_path / "whole" / "seed0" / "checkpoint.pt")["model"]
    b = read_checkpoint(tmp_path / "cut" / "seed0" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # resuming a finished run changes nothing but the resume record
    train(cfg, out_dir=str(tmp_path / "cut"), resume=True)
    again = read_log(tmp_path / "cut" / "seed0" / "log.jsonl")
    assert _deterministic(again) == _deterministic(whole)


def test_resume_refuses_another_schedule_and_a_new_run_refuses_an_old_folder(config_file, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--config", str(config_file), "--out", out, "--set", "train.max_steps=2"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(config_file), "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "log.jsonl exists" in err
    assert main(["train", "--config", str(config_file), "--out", out, "--resume", "--set", "schedule.b0=8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "schedule.b0" in err and "'saved': 4" in err
    # a [monitor] key the run's (exact) monitor never reads may differ: the run resumes
    assert main(["train", "--config", str(config_file), "--out", out, "--resume", "--quiet",
                 "--set", "monitor.stats_every=1", "--set", "train.max_steps=3"]) == 0
    assert main(["train", "--config", str(config_file), "--out", out, "--resume", "--set", "monitor.batch_size=8"]) == 2
    assert "monitor.batch_size" in capsys.readouterr().err


def test_several_seeds_give_a_summary_with_mean_and_std(config_file, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(["train", "--config", str(config_file), "--out", str(out), "--seeds", "0", "1",
                 "--set", "train.max_steps=4"]) == 0
    stdout = capsys.readouterr().out
    assert "2 seed(s)" in stdout and "±" in stdout
    table = rows(out / "summary.csv")
    assert [r["seed"] for r in table] == ["0", "1", "mean", "std"]
    accs = [float(r["test_loss"]) for r in table[:2]]
    assert accs[0] != accs[1]                                # different seeds, different runs
    assert float(table[2]["test_loss"]) == pytest.approx(statistics.fmean(accs))
    assert float(table[3]["test_loss"]) == pytest.approx(statistics.stdev(accs))
    for seed in (0, 1):
        assert read_log(out / f"seed{seed}" / "log.jsonl")[0]["seed"] == seed


@pytest.mark.slow
def test_a_cifar_config_runs_on_generated_cifar_files(tmp_path, capsys):
    write_cifar(tmp_path / "cifar", "cifar10", train_size=20, test_size=10, seed=1)
    with pytest.warns(UserWarning, match="b_max=4096 exceeds the dataset size n=20"):
        assert main(["train", "--config", os.path.join(ROOT, "configs", "cifar10_resnet18_adaptive.toml"),
                     "--out", str(tmp_path / "run"), "--quiet", "--set", f"data.root={tmp_path / 'cifar'}",
                     "--set", "train.max_steps=2", "--set", "schedule.tau=2"]) == 0
    log = read_log(tmp_path / "run" / "seed0" / "log.jsonl")
    assert log[0]["model"] == "resnet18" and log[0]["dataset"] == "cifar10" and log[0]["n"] == 20
    check = next(r for r in log if r["kind"] == "check")
    assert check["step"] == 2 and check["samples"] == 16 and check["check_samples"] == 20
    assert log[-1]["kind"] == "end" and log[-1]["status"] == "finished"


@pytest.mark.parametrize("monitor", ["exact", "debiased"])
def test_bf16_autocast_and_channels_last_code_paths_run_on_cpu(config_file, tmp_path, monitor):
    # debiased: the per-sample-norm hooks see a float32 layer input and a bf16 output gradient
    cfg = apply_overrides(load_config(config_file), ["run.amp=bf16", "run.channels_last=on", "train.max_steps=4",
                                                     f"monitor.kind={monitor}"])
    result = train(cfg, out_dir=str(tmp_path / "bf16"))
    log = read_log(tmp_path / "bf16" / "seed0" / "log.jsonl")
    assert log[0]["amp"] == "bf16" and log[0]["channels_last"] is True
    assert all(math.isfinite(r["norm"]) for r in log if r["kind"] == "check")
    assert result["runs"][0]["status"] == "finished" and math.isfinite(result["runs"][0]["test_loss"])


def test_baselines_and_the_debiased_monitor_run(fashion, tmp_path):
    periodic = load_config_text(config_text(fashion, policy='"periodic"', period=2, eps0=1.0, tau=3))
    train(periodic, out_dir=str(tmp_path / "periodic"))
    log = read_log(tmp_path / "periodic" / "seed0" / "log.jsonl")
    moves = [(r["step"], r["b_next"]) for r in log if r["kind"] == "check" and r["stage_next"] != r["stage"]]
    assert moves == [(2, 8), (4, 16)]                         # every 2 steps, logged off check steps too
    alone = apply_overrides(load_config_text(config_text(fashion)), ["monitor.kind=debiased", "monitor.confirm=none"])
    train(alone, out_dir=str(tmp_path / "debiased"))
    checks = [r for r in read_log(tmp_path / "debiased" / "seed0" / "log.jsonl") if r["kind"] == "check"]
    assert all(r["monitor"] == "debiased" and r["check_samples"] == 0 for r in checks)
    # the default: the window screens, the sequential test decides where it does not rule ‖∇f‖ ≤ ε_m out
    screened = apply_overrides(load_config_text(config_text(fashion)), ["monitor.kind=debiased"])
    train(screened, out_dir=str(tmp_path / "screened"))
    checks = [r for r in read_log(tmp_path / "screened" / "seed0" / "log.jsonl") if r["kind"] == "check"]
    assert checks and all(r["monitor"] == "screened" for r in checks)
    assert any(r["check_samples"] > 0 for r in checks)            # the sequential test measured


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_shows_step_stage_batch_lr_norm_and_samples_on_a_terminal():
    stream = _Terminal()
    p = Progress(stream, every=1e-9, total=192)
    p.update({"step": 12, "samples": 96, "check": 480, "epoch": 2.0, "stage": 1, "b": 16, "eta": 0.14,
              "eps_m": 0.354, "norm": 0.25, "fraction": 0.5}, force=True)
    p.close()
    line = stream.getvalue()
    for part in ("step 12", "stage 1", "b 16", "lr 0.14", "norm 0.25", "eps_m 0.354", "SFO 96+480", "sample/s",
                 "50%", "96.0/192"):
        assert part in line, part


def test_progress_is_off_when_the_output_is_not_a_terminal(config_file, tmp_path):
    stream = io.StringIO()                      # a pipe or a log file: the JSON-lines log is the record
    cfg = apply_overrides(load_config(config_file), ["train.max_steps=3", "run.progress_every=1e-9"])
    train(cfg, out_dir=str(tmp_path / "quiet"), progress_stream=stream)
    assert stream.getvalue() == ""
    assert read_log(tmp_path / "quiet" / "seed0" / "log.jsonl")[-1]["kind"] == "end"


def test_tensorboard_event_files_are_written_when_installed(config_file, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = apply_overrides(load_config(config_file), ["run.tensorboard=on", "train.max_steps=2"])
    train(cfg, out_dir=str(tmp_path / "tb"))
    files = os.listdir(tmp_path / "tb" / "seed0" / "tb")
    assert any(f.startswith("events.out.tfevents") for f in files)


# -- refused work writes nothing ------------------------------------------------------------------------

def refused(args, folder, capsys) -> str:
    """``sfo train ARGS``: exit code 2, one line on stderr, and ``folder`` as it was (paths and bytes)."""
    capsys.readouterr()
    before = snapshot(folder)
    assert main(["train", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sfo train: error: "), err
    assert snapshot(folder) == before
    return err


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory, fashion):
    """A finished run, and runs of another model and of other schedule arguments (checkpoints to swap in)."""
    root = tmp_path_factory.mktemp("finished")
    config = root / "tiny.toml"
    config.write_text(config_text(fashion))
    runs = {"same": [], "other model": ["--set", "model.options={batch_norm=true}"],
            "other schedule": ["--set", "schedule.eps0=3.0"]}
    for name, extra in runs.items():
        assert main(["train", "--config", str(config), "--out", str(root / name), "--quiet",
                     "--set", "train.max_steps=2", *extra]) == 0
    return config, root


@pytest.mark.parametrize("case, checkpoint, args, expect", [
    ("a changed key without --resume", None, ["--set", "schedule.b0=8"], ["--resume", "log.jsonl exists"]),
    ("a checkpoint of another model", "other model", ["--resume"], ["'model' parameter of load_checkpoint",
                                                                    "features.1.running_mean"]),
    ("a truncated checkpoint", "truncated", ["--resume"], ["'path' parameter of read_checkpoint", "truncated"]),
    ("a checkpoint of other schedule arguments", "other schedule", ["--resume"],
     ["'scheduler' parameter of load_checkpoint", "'eps0': {'saved': 3.0, 'here': 10.0}"]),
])
def test_a_refused_run_leaves_a_finished_run_as_it_was(finished_runs, tmp_path, capsys, case, checkpoint, args,
                                                       expect):
    config, root = finished_runs
    out = tmp_path / "run"
    shutil.copytree(root / "same", out)
    ckpt = out / "seed0" / "checkpoint.pt"
    good = ckpt.read_bytes()
    if checkpoint == "truncated":
        ckpt.write_bytes(good[:len(good) // 2])
    elif checkpoint is not None:
        shutil.copyfile(root / checkpoint / "seed0" / "checkpoint.pt", ckpt)
    # train.max_steps may change on --resume, so config.toml would differ if it were written
    err = refused(["--config", str(config), "--out", str(out), "--set", "train.max_steps=3", *args], tmp_path,
                  capsys)
    assert all(part in err for part in expect), err
    ckpt.write_bytes(good)                    # the run, untouched, still resumes
    assert main(["train", "--config", str(config), "--out", str(out), "--quiet", "--resume",
                 "--set", "train.max_steps=3"]) == 0
    assert read_log(out / "seed0" / "log.jsonl")[-1]["step"] == 3


def test_a_bad_checkpoint_of_a_later_seed_refuses_the_run_before_the_first_seed_starts(config_file, tmp_path,
                                                                                       capsys):
    out = tmp_path / "seeds"
    assert main(["train", "--config", str(config_file), "--out", str(out), "--quiet", "--seeds", "0", "1",
                 "--set", "train.max_steps=2"]) == 0
    ckpt = out / "seed1" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    err = refused(["--config", str(config_file), "--out", str(out), "--seeds", "0", "1", "--resume",
                   "--set", "train.max_steps=4"], tmp_path, capsys)
    assert str(ckpt) in err


def _cifar_without_batch_1(root):
    write_cifar(root, "cifar10", train_size=20, test_size=10, seed=1)
    next(root.rglob("data_batch_1")).unlink()
    return root


def _truncated_fashion(root, fashion):
    shutil.copytree(fashion, root)
    images = next(root.rglob("train-images*"))
    images.write_bytes(images.read_bytes()[:100])
    return root


def _without_tensorboard(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)     # `import tensorboard` raises ImportError


CIFAR10 = os.path.join(ROOT, "configs", "cifar10_resnet18_adaptive.toml")


@pytest.mark.parametrize("case, config, setup, sets, expect", [
    ("a missing CIFAR folder", CIFAR10, lambda tmp, fashion: tmp / "nowhere", [],
     ["'root' parameter of load_dataset('cifar10')", "nowhere/cifar-10-batches-py", "looked in", "downloaded"]),
    ("a missing CIFAR batch file", CIFAR10, lambda tmp, fashion: _cifar_without_batch_1(tmp / "cifar"), [],
     ["'root' parameter of load_dataset('cifar10')", "missing: data_batch_1"]),
    ("a truncated Fashion-MNIST file", None, lambda tmp, fashion: _truncated_fashion(tmp / "fashion", fashion), [],
     ["'root' parameter of load_dataset('fashion_mnist')", "malformed"]),
    ("data.subset smaller than b0", None, lambda tmp, fashion: fashion, ["data.subset=3"],
     ["The 'data.subset' parameter of the config", "must be >= schedule.b0 = 4", "Got data.subset=3 instead"]),
    ("run.tensorboard = on without the package", None, lambda tmp, fashion: fashion, ["run.tensorboard=on"],
     ["'run.tensorboard' parameter", "not installed", "Got run.tensorboard='on' instead"]),
])
def test_bad_data_or_environment_refuses_the_run_before_any_file_is_written(
        config_file, fashion, tmp_path, capsys, monkeypatch, case, config, setup, sets, expect):
    data_root = setup(tmp_path / "data", fashion)
    if "tensorboard" in case:
        _without_tensorboard(monkeypatch)
    args = ["--config", str(config or config_file), "--out", str(tmp_path / "run"),
            "--set", f"data.root={data_root}", *[a for key in sets for a in ("--set", key)]]
    err = refused(args, tmp_path, capsys)
    assert not (tmp_path / "run").exists()
    assert all(part in err for part in expect), err


@pytest.mark.slow
def test_compile_with_the_eager_backend_runs_through_stage_changes_and_changes_no_number(
        config_file, tmp_path, capsys):
    # backend "eager": dynamo traces the model but no C compiler is needed (inductor would need one),
    # so this exercises sfo train's compile path on CPU in a second or two. The schedule of config_file
    # (eps0 = 10 above any norm, tau = 2) moves b 4 → 8 → 16, so dynamo sees three training batch
    # sizes, plus the monitor's and the evaluation's batches in eval mode.
    import torch._dynamo
    from torch._dynamo.utils import counters

    common = ["--config", str(config_file), "--quiet", "--device", "cpu"]
    assert main(["train", *common, "--out", str(tmp_path / "plain")]) == 0
    torch._dynamo.reset()
    counters.clear()
    assert main(["train", *common, "--out", str(tmp_path / "compiled"),
                 "--set", "run.compile=true", "--set", 'run.compile_backend="eager"']) == 0
    capsys.readouterr()
    assert counters["stats"]["unique_graphs"] >= 2            # dynamo traced the model (no silent eager fallback)
    log = read_log(tmp_path / "compiled" / "seed0" / "log.jsonl")
    assert log[0]["kind"] == "start" and log[0]["compile"] is True and log[0]["device"] == "cpu"
    assert log[-1]["kind"] == "end" and log[-1]["status"] == "finished"
    checks = [r for r in log if r["kind"] == "check"]
    assert [(r["b"], r["b_next"]) for r in checks] == [(4, 8), (8, 16), (16, 16)]
    assert [r["stage_next"] for r in checks] == [1, 2, 2]
    evals = [r for r in log if r["kind"] == "eval"]
    assert evals and all(math.isfinite(r["test_loss"]) and math.isfinite(r["train_loss"]) for r in evals)
    assert all(math.isfinite(r["norm"]) for r in checks)
    summary = rows(tmp_path / "compiled" / "seed0" / "summary.csv")[0]
    assert summary["status"] == "finished" and int(summary["final_b"]) == 16
    # the eager backend runs the traced graph op by op: every logged number equals the uncompiled run's,
    # and the checkpoint holds the same parameters under the same names (no '_orig_mod.' prefix)
    plain = read_log(tmp_path / "plain" / "seed0" / "log.jsonl")
    assert _deterministic(log) == _deterministic(plain)
    compiled_state = read_checkpoint(tmp_path / "compiled" / "seed0" / "checkpoint.pt")["model"]
    plain_state = read_checkpoint(tmp_path / "plain" / "seed0" / "checkpoint.pt")["model"]
    assert list(compiled_state) == list(plain_state)
    assert all(torch.equal(compiled_state[k], plain_state[k]) for k in plain_state)


def test_with_rollback_the_loops_checkpoints_go_through_sfo_trains_save(config_file, tmp_path):
    """on_nonfinite = rollback: the loop writes the checkpoints (it rolls back to them), through sfo
    train's save — so they hold the run's own content (time, the log's checkpoint record and offset)
    and the log has one 'checkpoint' record per checkpoint, none twice at the last step."""
    cfg = apply_overrides(load_config(config_file), ["train.on_nonfinite=rollback", "run.checkpoint_every=2",
                                                     "train.max_steps=6"])
    train(cfg, out_dir=str(tmp_path / "rb"))
    extra = read_checkpoint(tmp_path / "rb" / "seed0" / "checkpoint.pt")["extra"]
    assert extra["log_start"] > 0 and '"kind": "checkpoint"' in extra["log_record"] and extra["time"] > 0
    steps = [r["step"] for r in read_log(tmp_path / "rb" / "seed0" / "log.jsonl") if r["kind"] == "checkpoint"]
    assert steps == [2, 4, 6]


def test_a_debiased_run_started_before_confirm_existed_resumes_with_the_window_alone(tmp_path):
    """Its saved config.toml has no [monitor] confirm: the run continues with the monitor it started with
    (confirm = "none"), and the sequential test's settings, which it never read, may differ."""
    from sfotheory.validation import ParameterError
    from sfotorch.config import config_to_toml
    from sfotorch.train import _check_resumable

    cfg = load_config(os.path.join(ROOT, "configs", "fashion_mnist_adaptive_cpu.toml"), ["monitor.kind=debiased"])
    text = config_to_toml(cfg)
    assert "\nconfirm = " in text
    old = "\n".join(line for line in text.splitlines() if not line.startswith("confirm"))
    (tmp_path / "config.toml").write_text(old, encoding="utf-8")
    now = copy.deepcopy(cfg)
    now["monitor"]["initial_size"] = 512
    _check_resumable(now, str(tmp_path))
    assert now["monitor"]["confirm"] == "none"
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")      # started with the screen: held fixed
    now = copy.deepcopy(cfg)
    now["monitor"]["initial_size"] = 512
    with pytest.raises(ParameterError, match=r"monitor.initial_size"):
        _check_resumable(now, str(tmp_path))
