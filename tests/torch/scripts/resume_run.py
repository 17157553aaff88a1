"""A small training run that can kill itself with SIGKILL at a chosen point, and resume.

Used by tests/torch/test_checkpoint.py (kill-and-replay) and tests/torch/test_faults.py.

    python resume_run.py WORKDIR TOTAL_STEPS          (or run(workdir, total, kill) in a child process)

resumes from WORKDIR/ckpt.pt when it exists, trains until the loop has taken TOTAL_STEPS steps and
writes WORKDIR/result.pt (parameters, transitions, loop and rule state). It appends ``STEP k`` to
WORKDIR/progress.txt after every step. The kill spec (``SFO_KILL`` on the command line) makes it
SIGKILL itself after writing WORKDIR/kill.json (where it was):

* ``step:K``     after step K is complete (K not a checkpoint step: the checkpoint is older);
* ``stage:M``    right after the step that entered stage M;
* ``micro:K:J``  during step K + 1, right after its micro-batch J (0-based) was computed;
* ``write:K``    while the checkpoint of step K is being written: half the bytes are in the
                 temporary file, nothing has been renamed yet.
"""

import io
import json
import os
import signal
import sys

import torch
from torch import nn

from sfotorch.checkpoint import read_checkpoint
from sfotorch.loop import TrainingLoop
from sfotorch.monitors import ExactMonitor
from sfotorch.sampler import ResizableLoader
from sfotorch.scheduler import StageScheduler

N, D, CLASSES = 90, 6, 3
SCHEDULE = {"b0": 4, "eta0": 0.1, "eps0": 0.5, "delta": 2, "gamma": 1.2, "tau": 3, "b_max": 32}
MAX_MICRO_BATCH = 5
CHECKPOINT_EVERY = 4


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, D, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 0.8).long()
    return x, y


def build(workdir, **loop_kwargs):
    """Model (Linear–BatchNorm–Tanh–Dropout–Linear), SGD with momentum, the adaptive rule, the loop."""
    torch.manual_seed(0)
    x, y = data()
    model = nn.Sequential(nn.Linear(D, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, CLASSES))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = ResizableLoader(torch.utils.data.TensorDataset(x, y), batch_size=SCHEDULE["b0"], seed=3,
                             drop_last=True)   # no batch of one sample for BatchNorm
    loss_fn = nn.CrossEntropyLoss()
    monitor = ExactMonitor(model, (x, y), loss_fn, batch_size=45)
    sched = StageScheduler(opt, "adaptive_exponential", loader=loader, monitor=monitor, **SCHEDULE)
    kwargs = {"max_micro_batch": MAX_MICRO_BATCH, "checkpoint_path": os.path.join(workdir, "ckpt.pt"),
              "checkpoint_every": CHECKPOINT_EVERY, **loop_kwargs}
    loop = TrainingLoop(model, opt, sched, loader, loss_fn, **kwargs)
    return model, opt, sched, loader, loop


def run(workdir, total, spec=""):
    """Resume from WORKDIR/ckpt.pt if present, train to ``total`` steps, write result.pt (see above)."""
    torch.set_num_threads(1)

    def kill(info):
        with open(os.path.join(workdir, "kill.json.tmp"), "w") as f:
            json.dump(info, f)
        os.replace(os.path.join(workdir, "kill.json.tmp"), os.path.join(workdir, "kill.json"))
        os.kill(os.getpid(), signal.SIGKILL)

    def progress(line):
        with open(os.path.join(workdir, "progress.txt"), "a") as f:
            f.write(line + "\n")

    kind, *args = spec.split(":") if spec else ("",)
    args = [int(a) for a in args]
    model, opt, sched, loader, loop = build(workdir)

    def where(**more):
        st = sched.state
        return {"steps": loop.steps, "epoch": loader.epoch, "position": loader.position, "n": loader.n,
                "stage": int(st.stage), "stage_step": int(st.stage_step), "b": int(st.batch_size), **more}

    if kind == "micro":
        def on_micro_batch(t, j, k):
            if t == args[0] and j == args[1]:
                kill(where(step_in_progress=t + 1, micro_batch=j, micro_batches=k))
        loop.on_micro_batch = on_micro_batch
    if kind == "write":
        real_save = torch.save

        def partial_save(obj, f, *a, **kw):
            if loop.steps != args[0]:
                return real_save(obj, f, *a, **kw)
            buf = io.BytesIO()
            real_save(obj, buf, *a, **kw)
            data = buf.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            kill(where(temp_file=f.name, written=len(data) // 2, of=len(data)))
        torch.save = partial_save

    resumed = loop.resume()
    progress("RESUMED " + json.dumps(where(resumed=resumed)))
    while loop.steps < total:
        stage_before = sched.stage
        loop.step()
        progress(f"STEP {loop.steps}")
        if kind == "step" and loop.steps == args[0]:
            kill(where(checkpoint_steps=read_checkpoint(loop.checkpoint_path)["loop"]["steps"]))
        if kind == "stage" and sched.stage == args[0] and stage_before == args[0] - 1:
            kill(where(changed_from=stage_before))
    torch.save({"model": model.state_dict(), "transitions": sched.transitions, "loop": loop.state_dict(),
                "state": sched.state.to_dict(), "sampler": loader.state_dict()},
               os.path.join(workdir, "result.pt"))


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), os.environ.get("SFO_KILL", ""))
