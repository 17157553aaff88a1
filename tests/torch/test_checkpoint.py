"""Checkpoints: exact resume by replay after SIGKILL at several points, atomic writes, refused checkpoints."""

import json
import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sfotheory.validation import ParameterError  # noqa: E402
from sfotorch import checkpoint as ckpt_mod  # noqa: E402
from sfotorch.checkpoint import (  # noqa: E402
    capture_rng_state,
    load_checkpoint,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
    state_digest,
)
from tests.torch.scripts import resume_run  # noqa: E402

TOTAL = 48


# -- kill and replay --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def children():
    """Child processes forked from a clean server that has imported torch once (fast, and no
    threads of this test process are inherited); each child runs resume_run.run()."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "sfotorch.loop", "sfotorch.monitors", "tests.torch.scripts.resume_run"])
    return ctx


def start(children, workdir, spec=""):
    p = children.Process(target=resume_run.run, args=(str(workdir), TOTAL, spec))
    p.start()
    return p


def finish(p, timeout=90):
    p.join(timeout)
    if p.is_alive():
        p.kill()
        pytest.fail(f"the training child did not finish within {timeout} s")
    return p.exitcode


def killed_at(workdir):
    path = workdir / "kill.json"
    info = json.loads(path.read_text())
    path.unlink()
    return info


def steps_done(workdir):
    path = workdir / "progress.txt"
    if not path.exists():
        return 0
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("STEP ")]
    return int(lines[-1].split()[1]) if lines else 0


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical_at_every_kill_point(children, tmp_path):
    """One run is killed six times — mid-epoch and mid-stage, mid-accumulation, right after a stage
    change, during a checkpoint write, again mid-accumulation at a later stage, and from outside
    at a random step — and resumed each time from its last checkpoint. It ends with the same
    parameters (bit for bit), BatchNorm buffers, stage transitions, rule state and sampler position
    as an uninterrupted run."""
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    ref_dir.mkdir()
    run_dir.mkdir()
    reference = start(children, ref_dir)

    # 1. after step 10: mid-epoch, mid-stage; the last checkpoint is from step 8
    assert finish(start(children, run_dir, "step:10")) == -signal.SIGKILL
    info = killed_at(run_dir)
    assert 0 < info["position"] < info["n"] and info["stage_step"] > 0 and info["checkpoint_steps"] == 8

    # 2. while step 19's first of two micro-batches is done (accumulation in progress)
    assert finish(start(children, run_dir, "micro:18:0")) == -signal.SIGKILL
    info = killed_at(run_dir)
    assert info["step_in_progress"] == 19 and info["micro_batch"] < info["micro_batches"] - 1

    # 3. right after the step that entered stage 2 (step 33, between the checkpoints of 32 and 36)
    assert finish(start(children, run_dir, "stage:2")) == -signal.SIGKILL
    info = killed_at(run_dir)
    assert info["changed_from"] == 1 and info["stage"] == 2 and info["steps"] % resume_run.CHECKPOINT_EVERY != 0

    # 4. mid-accumulation with b = 16 (four micro-batches of at most 5)
    assert finish(start(children, run_dir, "micro:34:1")) == -signal.SIGKILL
    info = killed_at(run_dir)
    assert info["b"] == 16 and info["micro_batches"] == 4 and info["micro_batch"] == 1

    # 5. during the write of step 36's checkpoint: half the temporary file is written
    assert finish(start(children, run_dir, "write:36")) == -signal.SIGKILL
    info = killed_at(run_dir)
    assert os.path.exists(info["temp_file"]) and 0 < info["written"] < info["of"]
    assert read_checkpoint(run_dir / "ckpt.pt")["loop"]["steps"] == 32    # the previous one, intact

    # 6. SIGKILL from outside at a random step (the child may be anywhere inside the next step)
    kill_after = random.Random(os.getpid()).randint(37, 42)
    p = start(children, run_dir)
    deadline = time.monotonic() + 90
    while steps_done(run_dir) < kill_after and p.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    assert finish(p) == -signal.SIGKILL, f"the child finished before the kill after step {kill_after}"

    # 7. resume to the end
    assert finish(start(children, run_dir)) == 0
    assert finish(reference) == 0

    ref = torch.load(ref_dir / "result.pt", weights_only=True)
    got = torch.load(run_dir / "result.pt", weights_only=True)
    assert ref["model"].keys() == got["model"].keys()
    for key in ref["model"]:
        assert torch.equal(ref["model"][key], got["model"][key]), f"{key} differs after resume"
    assert [t["step"] for t in ref["transitions"]] == [t["step"] for t in got["transitions"]]
    assert ref["transitions"] == got["transitions"] and len(ref["transitions"]) >= 3
    assert ref["state"] == got["state"] and ref["sampler"] == got["sampler"]
    assert got["loop"]["steps"] == TOTAL
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")], "a stale temporary file is left"


# -- atomic writes ------------------------------------------------------------------------------------

def small_setup(tmp_path, **schedule_changes):
    schedule = {**resume_run.SCHEDULE, **schedule_changes}
    old = resume_run.SCHEDULE
    resume_run.SCHEDULE = schedule
    try:
        return resume_run.build(str(tmp_path))
    finally:
        resume_run.SCHEDULE = old


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    model, opt, sched, loader, loop = small_setup(tmp_path)
    loop.run(max_steps=4)                                   # writes ckpt.pt at step 4
    before = (tmp_path / "ckpt.pt").read_bytes()
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)       # some bytes reach the temporary file
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash_half_way)
    loop.run(max_steps=6)
    with pytest.raises(OSError, match="disk full"):
        loop.save()
    monkeypatch.undo()
    assert (tmp_path / "ckpt.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert read_checkpoint(tmp_path / "ckpt.pt")["loop"]["steps"] == 4


def test_checkpoint_content_loads_with_weights_only_and_holds_every_part(tmp_path):
    model, opt, sched, loader, loop = small_setup(tmp_path)
    loop.run(max_steps=8)
    raw = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert set(raw) == {"format", "version", "world_size", "model", "optimizer", "scheduler", "sampler", "sfo",
                        "monitor", "loop", "rng", "extra", "digest"}
    assert raw["sampler"]["position"] == loader.position and raw["sampler"]["epoch"] == loader.epoch
    assert raw["sfo"] == {"steps": 8, "train": int(sched.state.samples), "measure": int(sched.state.check_samples),
                          "total": int(sched.state.samples) + int(sched.state.check_samples)}
    assert raw["loop"]["steps"] == 8 and raw["world_size"] == 1 and len(raw["rng"]) == 1
    assert raw["optimizer"]["state"], "the momentum buffers are saved"


def test_rng_states_round_trip_for_torch_numpy_and_python():
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_digest_sees_a_single_changed_bit():
    a = {"w": torch.tensor([1.0, 2.0]), "s": [1, "x", None]}
    b = {"w": torch.tensor([1.0, np.nextafter(np.float32(2.0), np.float32(3.0)).item()]), "s": [1, "x", None]}
    assert state_digest(a) == state_digest({"w": torch.tensor([1.0, 2.0]), "s": [1, "x", None]})
    assert state_digest(a) != state_digest(b)


# -- refused checkpoints: one message naming what and which value; nothing partly loaded -------------

def saved(tmp_path):
    model, opt, sched, loader, loop = small_setup(tmp_path)
    loop.run(max_steps=4)
    return tmp_path / "ckpt.pt"


def test_other_scheduler_arguments_are_refused_naming_the_fields(tmp_path):
    path = saved(tmp_path)
    model, opt, sched, loader, loop = small_setup(tmp_path / "other", gamma=1.3, tau=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ParameterError) as err:
        load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, loader=loader)
    msg = str(err.value)
    assert "'scheduler' parameter of load_checkpoint" in msg and "'gamma': {'saved': 1.2, 'here': 1.3}" in msg
    assert "'tau': {'saved': 3, 'here': 5}" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "model changed by a refused load"
    assert sched.state.step == 0 and loader.position == 0


def test_checkpoint_of_another_model_is_refused_naming_keys_and_shapes(tmp_path):
    path = saved(tmp_path)
    other = torch.nn.Sequential(torch.nn.Linear(resume_run.D, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    with pytest.raises(ParameterError) as err:
        load_checkpoint(path, model=other)
    msg = str(err.value)
    assert "'model' parameter of load_checkpoint" in msg
    assert "'0.weight': [[16, 6], [8, 6]]" in msg and "1.running_mean" in msg


def test_truncated_checkpoint_is_refused_with_its_size(tmp_path):
    path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])
    model, opt, sched, loader, loop = small_setup(tmp_path / "new")
    with pytest.raises(ParameterError, match=r"'path' parameter of read_checkpoint .* truncated or corrupted"):
        load_checkpoint(path, model=model)
    assert str(len(data) // 3) in str(pytest.raises(ParameterError, read_checkpoint, path).value)


def test_corrupted_tensor_bytes_are_refused_by_the_digest(tmp_path):
    path = saved(tmp_path)
    content = torch.load(path, weights_only=True)
    content["model"]["0.weight"][0, 0] += 1e-3                     # as if a bit flipped on disk
    torch.save(content, path)
    with pytest.raises(ParameterError, match="digest"):
        read_checkpoint(path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ParameterError, match="format 'sfotorch-checkpoint'"):
        read_checkpoint(path)
    with pytest.raises(ParameterError, match="an existing checkpoint file"):
        read_checkpoint(tmp_path / "missing.pt")


def test_world_size_mismatch_is_refused_naming_both_sizes(tmp_path):
    path = saved(tmp_path)
    content = read_checkpoint(path)
    content["world_size"] = 2
    content["rng"] = content["rng"] * 2
    content["digest"] = state_digest(content)
    torch.save(content, path)
    model, opt, sched, loader, loop = small_setup(tmp_path / "new")
    with pytest.raises(ParameterError) as err:
        load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, loader=loader)
    assert "'world_size' parameter" in str(err.value) and "written with, 2" in str(err.value)
    assert "Got world_size=1 instead" in str(err.value)
    content = load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, loader=loader,
                              allow_world_size_change=True)
    assert content["world_size"] == 2 and loader.position == read_checkpoint(path)["sampler"]["position"]


def test_other_dataset_size_is_refused(tmp_path):
    path = saved(tmp_path)
    model, opt, sched, loader, loop = small_setup(tmp_path / "new")
    from sfotorch.sampler import ResizableLoader
    x, y = resume_run.data()
    short = ResizableLoader(torch.utils.data.TensorDataset(x[:60], y[:60]), batch_size=4)
    with pytest.raises(ParameterError, match=r"saved size n = 90.*Got loader='n = 60'"):
        load_checkpoint(path, model=model, loader=short)


def test_a_nonfinite_state_is_never_saved(tmp_path):
    path = saved(tmp_path)
    before = path.read_bytes()
    model, opt, sched, loader, loop = small_setup(tmp_path)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ParameterError, match=r"'model' parameter of save_checkpoint .*Got model=\['0.weight'\]"):
        save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, loader=loader)
    assert path.read_bytes() == before
