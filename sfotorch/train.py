r"""The ``sfo train`` engine: one validated config (:mod:`sfotorch.config`) → a run folder per seed.

Everything is built from the config and handed to the project's own pieces — nothing here
re-implements them: data (:func:`sfotorch.datasets.load_dataset`), model
(:func:`sfotorch.models.build_model`), batches (:class:`~sfotorch.sampler.ResizableLoader`), the
stage rule (:class:`~sfotorch.scheduler.StageScheduler` over :mod:`sfotheory.rule`), ‖∇f‖ on check
steps (:mod:`sfotorch.monitors`, in eval mode on un-augmented data), the step itself
(:class:`~sfotorch.loop.TrainingLoop`: micro-batches, non-finite policy) and checkpoints
(:mod:`sfotorch.checkpoint`).

Run folder (``OUT`` = ``run.out_dir``, default ``runs/NAME``)::

    OUT/config.toml            the resolved configuration (after --set overrides)
    OUT/summary.csv            one row per seed, then rows 'mean' and 'std' (sample std, n − 1)
    OUT/seedS/log.jsonl        JSON lines: 'start'/'resume', every scheduler record ('check'),
                               the loop's events, 'eval', 'checkpoint', 'end'
    OUT/seedS/summary.csv      one row: results, SFO, versions, seed and the flattened config
    OUT/seedS/checkpoint.pt    everything needed to continue bit-exactly (``--resume``)
    OUT/seedS/tb/              TensorBoard event files (when tensorboard is installed)

**Progress is counted in samples.** Training SFO (Σ|B_t|) and measurement SFO (what the monitor
spent) are logged apart in every record, with ``epoch`` = training samples / n.

**Order within a step.** ``TrainingLoop.step()`` (which calls the scheduler and so writes the
'check' record), then the test evaluation if one is due ('eval'), then the checkpoint
('checkpoint'). A checkpoint at step S is therefore written after every record of step S; it
stores the byte offset at which its own 'checkpoint' record ends, so ``--resume`` cuts the log
back to that offset (dropping the later records and a previous 'end') and the replay writes them
again: no record is lost or duplicated, also after skipped steps.

**Devices.** ``run.device = "auto"`` picks CUDA when present. On CUDA by default: the forward pass
under ``torch.autocast(dtype=torch.bfloat16)`` (the loss is computed in float32), channels_last,
uint8 images kept on the GPU (a batch is gathered, augmented and normalised there, so the loader
cannot become the bottleneck), else pinned host batches copied with ``non_blocking=True``;
optional ``torch.compile``. Each of these can be forced on CPU as well (``run.amp = "bf16"``,
``run.channels_last = "on"``), which is how the tests exercise those code paths here.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from sfotheory.progress import Progress as StatusLine
from sfotheory.progress import write_status_line
from sfotheory.validation import fail

from .config import SCHEMA, config_to_toml, flatten_config, load_config_text, schedule_kwargs
from .sfolog import SFOLogWriter, read_log

__all__ = ["Components", "Progress", "RunLog", "SUMMARY_FIELDS", "build_components", "evaluate", "format_summary",
           "resolve_device", "train", "train_seed", "versions"]

#: Numeric columns of a run's summary that the multi-seed summary averages.
SUMMARY_FIELDS = ("test_acc", "best_test_acc", "test_loss", "train_loss", "last_norm", "min_norm", "final_stage", "final_b",
                  "final_eta", "steps", "epochs", "train_samples", "check_samples", "sfo_total", "wall_s",
                  "check_s", "samples_per_s")
_TABLES_FIXED_ON_RESUME = ("data", "model", "optimizer", "schedule", "monitor")
#: the [monitor] keys each kind reads: only these are held fixed on --resume (a default of a key the
#: run's monitor never read, e.g. stats_every for an exact monitor, may change between versions)
_MONITOR_KEYS = {"exact": ("kind", "batch_size"),
                 "subsampled": ("kind", "batch_size", "sample_size", "fresh", "bound", "confidence", "micro_batches"),
                 "sequential": ("kind", "batch_size", "initial_size", "blocks", "confidence"),
                 "debiased": ("kind", "micro_batches", "beta", "confidence", "stats_every", "variance_source")}


# -- environment -----------------------------------------------------------------------------------

def versions() -> dict:
    """python, torch, this package and the git commit of its source tree (``None`` where unknown)."""
    try:
        package = importlib.metadata.version("sfo-schedulers")
    except importlib.metadata.PackageNotFoundError:
        package = None
    commit = None
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "sfo_schedulers": package,
            "git_commit": commit}


def resolve_device(cfg: dict) -> dict:
    """Device and its options from ``[run]``: ``{device, threads, amp, channels_last, on_device}``."""
    run, where = cfg["run"], f"the config {cfg.get('_source', '<text>')}"
    cuda = torch.cuda.is_available()
    if run["device"] == "cuda" and not cuda:
        fail("run.device", where, "'auto' or 'cpu' on a machine without CUDA", "cuda")
    device = torch.device("cuda" if (run["device"] == "cuda" or (run["device"] == "auto" and cuda)) else "cpu")
    on_gpu = device.type == "cuda"
    # 1 thread on CPU: at the small batches of Algorithm 2's first stages a step is dispatch-bound, and
    # on a busy 2-core machine a second thread was measured to slow b = 8 steps down (benchmarks/).
    threads = run["threads"] or (torch.get_num_threads() if on_gpu else 1)
    amp = run["amp"] if run["amp"] != "auto" else ("bf16" if on_gpu else "off")
    channels_last = run["channels_last"] == "on" or (run["channels_last"] == "auto" and on_gpu)
    on_device = on_gpu and cfg["data"]["on_device"] != "off"
    return {"device": device, "threads": threads, "amp": amp, "channels_last": channels_last,
            "on_device": on_device}


def _to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _autocast_forward(model: torch.nn.Module, device_type: str) -> None:
    """Run ``model``'s forward under bf16 autocast and return float32 outputs (state_dict unchanged)."""
    inner = model.forward

    def forward(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = inner(*args, **kwargs)
        return out.float()

    model.forward = forward


class _BatchView(torch.utils.data.Dataset):
    """An :class:`~sfotorch.datasets.ImageDataset` whose batched fetch returns ``(images, labels)``
    directly (one gather and one augmentation call per batch, no per-sample collation); on CUDA
    with host-side data the batch is pinned and copied with ``non_blocking=True``."""

    def __init__(self, data, device: torch.device | None = None):
        self.data = data
        self.device = device

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]

    def __getitems__(self, indices):
        x, y = self.data.get_batch(torch.as_tensor(indices, dtype=torch.int64))
        if self.device is not None and self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        return x, y


def _as_is(batch):
    return batch


class _TimedMonitor:
    """Forwards to a monitor and adds up the wall time of its measurements (for the summary)."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.name = monitor.name
        self.seconds = 0.0

    def measure(self, **kwargs):         # threshold=ε_m for a monitor with uses_threshold
        t = time.perf_counter()
        try:
            return self.monitor.measure(**kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - t

    def __getattr__(self, name):          # state_dict / load_state_dict / update of the wrapped monitor
        return getattr(self.monitor, name)


# -- log -------------------------------------------------------------------------------------------

class RunLog:
    """The run's JSON-lines log (and TensorBoard scalars): scheduler records, loop events, evals.

    ``write(record)`` is what :class:`~sfotorch.scheduler.StageScheduler` and
    :class:`~sfotorch.loop.TrainingLoop` call; records without a ``kind`` are the scheduler's and
    get ``kind = "check"``. Every record gets ``epoch`` (training samples / n) and ``time``
    (seconds of this run, summed over resumes).
    """

    def __init__(self, path: str):
        self.path = path
        self.n = 0
        self._writer = None
        self._t0 = time.perf_counter()
        self.last_check: dict | None = None
        self.checks_seen = 0
        self.tb = None

    def open(self, n: int, *, mode: str = "w", tensorboard_dir: str | None = None, purge_step: int | None = None,
             time_offset: float = 0.0) -> None:
        """Open the file (``mode`` "w" for a new run, "a" to continue one) and, if asked, TensorBoard."""
        self.n = n
        self._writer = SFOLogWriter(self.path, mode=mode)
        self._t0 = time.perf_counter() - time_offset
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir=tensorboard_dir, purge_step=purge_step)

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def write(self, record: dict) -> None:
        rec = self.prepare(record)
        self.emit(rec, SFOLogWriter.encode(rec))

    def prepare(self, record: dict) -> dict:
        """The record as it will be written: ``kind`` (default "check"), ``epoch`` and ``time`` added."""
        if self._writer is None:
            raise RuntimeError(f"RunLog({self.path!r}) written before open()")
        rec = dict(record)
        rec.setdefault("kind", "check")
        if "samples" in rec and self.n:
            rec.setdefault("epoch", rec["samples"] / self.n)
        rec.setdefault("time", round(self.elapsed(), 3))
        return rec

    def offset(self) -> int:
        """Bytes in the log file now (:meth:`SFOLogWriter.offset`)."""
        return self._writer.offset()

    def emit(self, rec: dict, line: bytes) -> None:
        """Write a prepared record (``line`` = its encoding) and pass it on to TensorBoard."""
        self._writer.write_line(line)
        if rec["kind"] == "check":
            self.last_check = rec
            self.checks_seen += 1
        if self.tb is not None:
            self._tensorboard(rec)

    def _tensorboard(self, rec: dict) -> None:
        x = int(rec.get("samples", 0))
        if rec["kind"] == "check":
            if rec.get("norm") is not None and math.isfinite(rec["norm"]):
                self.tb.add_scalar("grad_norm/norm", rec["norm"], x)
                self.tb.add_scalar("grad_norm/eps_m", rec["eps_m"], x)
            self.tb.add_scalar("schedule/batch_size", rec["b_next"], x)
            self.tb.add_scalar("schedule/lr", rec["eta_next"], x)
            self.tb.add_scalar("schedule/stage", rec["stage_next"], x)
            self.tb.add_scalar("sfo/measurement", rec["check_samples"], x)
        elif rec["kind"] == "eval":
            for key in ("test_acc", "test_loss", "train_loss"):
                if rec.get(key) is not None:
                    self.tb.add_scalar(f"eval/{key}", rec[key], x)
        self.tb.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.tb is not None:
            self.tb.close()


# -- progress --------------------------------------------------------------------------------------

class Progress(StatusLine):
    """A plain progress line on ``stream`` every ``every`` seconds (``\\r``-rewritten on a terminal).

    Shows step, epoch, stage m, b_m, η_m, the latest measured ‖∇f‖ against ε_m, training and
    measurement SFO, and training samples per second over the last interval (time spent measuring
    ‖∇f‖ left out; it is reported as check_s in the summary). No dependency:
    tqdm is not installed here, and a bar with a known end does not fit a run whose length in
    steps depends on when the stages change (its end is fixed in samples; the line shows that %).
    """

    def __init__(self, stream=None, every: float = 2.0, label: str = ""):
        self.stream = sys.stderr if stream is None else stream
        self.every = every
        self.label = label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_t = time.perf_counter()
        self._last_samples = None
        self._last_step = None
        self._last_check_s = 0.0
        self._wrote = False

    def update(self, info: dict, *, force: bool = False) -> None:
        if self.every <= 0:
            return
        now = time.perf_counter()
        if (not force and now - self._last_t < self.every) or info["step"] == self._last_step:
            return
        self._last_step = info["step"]
        samples, check_s = info["samples"], info.get("check_s", 0.0)
        if self._last_samples is not None:   # training samples per second of the time not spent measuring ‖∇f‖
            rate = (samples - self._last_samples) / max(now - self._last_t - (check_s - self._last_check_s), 1e-9)
        else:
            rate = info.get("samples_per_s", 0.0)
        self._last_t, self._last_samples, self._last_check_s = now, samples, check_s
        norm = "-" if info.get("norm") is None else f"{info['norm']:.4g}"
        done = f" {100 * info['fraction']:.0f}%" if info.get("fraction") is not None else ""
        line = (f"{self.label}step {info['step']} ep {info['epoch']:.2f} | stage {info['stage']} b {info['b']} "
                f"lr {info['eta']:.4g} | norm {norm} eps {info['eps']:.3g} | SFO {_k(samples)}+{_k(info['check'])} "
                f"| {rate:.0f} samples/s{done}")
        write_status_line(self.stream, line, self.tty)
        self._wrote = True


def _k(x: int) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else (f"{x / 1e3:.1f}k" if x >= 1e4 else str(x))


# -- evaluation ------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, data, *, batch_size: int, device, transform=None) -> dict:
    """Mean cross-entropy and accuracy of ``model`` on ``data`` (an ImageDataset), in eval mode.

    The model's train/eval flags are restored; nothing else is touched (no RNG is drawn).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    loss_sum, correct, n = 0.0, 0, len(data)
    try:
        for start in range(0, n, batch_size):
            x, y = data.get_batch(slice(start, min(start + batch_size, n)))
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if transform is not None:
                x = transform(x)
            logits = model(x).float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    finally:
        for m, was in modes:
            m.training = was
    return {"test_loss": loss_sum / n, "test_acc": correct / n}


# -- one seed --------------------------------------------------------------------------------------

@dataclass
class Components:
    """The objects of one seed's run, as :func:`build_components` wires them."""

    train_data: object
    test_data: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loader: object
    loop: object
    monitor: object
    transform: object
    max_micro_batch: int


def build_components(cfg: dict, seed: int, env: dict, checkpoint_path: str | None = None, log=None) -> Components:
    """Data, model, optimizer, loader, monitor, scheduler and TrainingLoop of one seed of ``cfg``
    (``env`` from :func:`resolve_device`); what :func:`train_seed` runs and the benchmark times."""
    from .datasets import DATASETS, load_dataset
    from .loop import TrainingLoop
    from .models import build_model
    from .monitors import DebiasedMonitor, ExactMonitor, SequentialMonitor, SubsampledMonitor
    from .monitors.per_sample_norms import unsupported_modules
    from .sampler import ResizableLoader
    from .scheduler import StageScheduler

    data, mon, train_cfg = cfg["data"], cfg["monitor"], cfg["train"]
    device = env["device"]
    root = data["root"] or None
    torch.manual_seed(seed)
    train_data = load_dataset(data["dataset"], root=root, train=True, augment=data["augment"],
                              subset=data["subset"] or None, seed=seed, subset_mode=data["subset_mode"])
    test_data = load_dataset(data["dataset"], root=root, train=False,
                             subset=cfg["eval"]["test_subset"] or None)
    if env["on_device"]:
        train_data, test_data = train_data.to(device), test_data.to(device)
    info = DATASETS[data["dataset"]]
    model = build_model(cfg["model"]["name"], num_classes=info.num_classes, in_channels=info.in_channels,
                        **cfg["model"]["options"]).to(device)
    transform = None
    if env["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        transform = _to_channels_last
    if env["amp"] == "bf16":
        _autocast_forward(model, device.type)
    if cfg["run"]["compile"]:
        model.compile(backend=cfg["run"]["compile_backend"])
    opt_cfg = cfg["optimizer"]
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["schedule"]["eta0"], momentum=opt_cfg["momentum"],
                                weight_decay=opt_cfg["weight_decay"], nesterov=opt_cfg["nesterov"])
    loss_fn = torch.nn.CrossEntropyLoss()
    unaugmented = train_data.without_augmentation()
    n = len(train_data)
    b0 = cfg["schedule"]["b0"]
    if b0 > n:          # the loader would refuse it, naming its own batch_size
        where = f"the config {cfg.get('_source', '<text>')}"
        why = "a batch of b0 samples is drawn without replacement from one epoch"
        if data["subset"]:
            fail("data.subset", where, f">= schedule.b0 = {b0}", data["subset"], reason=why)
        fail("schedule.b0", where, f"<= the {n} training samples of {data['dataset']}", b0, reason=why)
    debiased = None
    if mon["kind"] == "exact":
        monitor = ExactMonitor(model, unaugmented, loss_fn, batch_size=mon["batch_size"], device=device,
                               transform=transform)
    elif mon["kind"] == "subsampled":
        monitor = SubsampledMonitor(model, unaugmented, loss_fn, sample_size=min(mon["sample_size"], n),
                                    fresh=mon["fresh"], seed=seed, confidence=mon["confidence"], bound=mon["bound"],
                                    micro_batches=mon["micro_batches"], batch_size=mon["batch_size"], device=device,
                                    transform=transform)
    elif mon["kind"] == "sequential":
        monitor = SequentialMonitor(model, unaugmented, loss_fn, initial_size=mon["initial_size"], blocks=mon["blocks"],
                                    confidence=mon["confidence"], seed=seed, batch_size=mon["batch_size"],
                                    device=device, transform=transform)
    else:
        source = mon["variance_source"]
        if source == "auto":
            model.train()
            supported = not unsupported_modules(model, [p for p in model.parameters() if p.requires_grad])
            source = "per_sample_norms" if supported else "micro_batches"
        # 25: hooks on one step in 25 cost +4.5% wall on the MLP of benchmarks/bench_monitors.py (τ = 1000)
        r = mon["stats_every"] or min(25, cfg["schedule"]["tau"] or 25)
        monitor = DebiasedMonitor(model, loss_fn, micro_batches=mon["micro_batches"], variance_source=source,
                                  beta=mon["beta"] or None, population=n, confidence=mon["confidence"],
                                  stats_every=r, stats_phase=r - 1, plain_step_norms=False)
        debiased = monitor
    monitor = _TimedMonitor(monitor)
    loader = ResizableLoader(_BatchView(train_data, device), batch_size=cfg["schedule"]["b0"], seed=seed,
                             collate_fn=_as_is)
    scheduler = StageScheduler(optimizer, cfg["schedule"]["policy"], loader=loader, monitor=monitor,
                               check_order=cfg["schedule"]["check_order"], on_nonfinite="warn", log=log,
                               **schedule_kwargs(cfg))
    cap = train_cfg["max_micro_batch"]
    if cap == 0:
        cap = int(scheduler.schedule.b_max)
        if device.type == "cuda":
            from .accumulate import find_max_micro_batch
            x, y = train_data.get_batch(slice(0, min(n, 8)))
            cap = find_max_micro_batch(model, loss_fn, x.to(device), y.to(device), device=device, limit=cap,
                                       transform=transform)
    rollback = train_cfg["on_nonfinite"] == "rollback"
    loop = TrainingLoop(model, optimizer, scheduler, loader, loss_fn, max_micro_batch=cap,
                        device=device,
                        transform=transform, checkpoint_path=checkpoint_path,
                        checkpoint_every=cfg["run"]["checkpoint_every"] if rollback else 0,
                        on_nonfinite=train_cfg["on_nonfinite"], debiased=debiased, log=log)
    return Components(train_data, test_data, model, optimizer, scheduler, loader, loop, monitor, transform, cap)


def _tensorboard_dir(cfg: dict, run_dir: str) -> str | None:
    mode = cfg["run"]["tensorboard"]
    if mode == "off":
        return None
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        if mode == "on":
            fail("run.tensorboard", f"the config {cfg.get('_source', '<text>')}",
                 "'auto' or 'off' when the tensorboard package is not installed", "on",
                 reason="pip install tensorboard to write event files")
        return None
    return os.path.join(run_dir, "tb")


def _max_samples(cfg: dict, n: int) -> int | None:
    limits = []
    if cfg["train"]["epochs"]:
        limits.append(math.ceil(cfg["train"]["epochs"] * n))
    if cfg["train"]["max_samples"]:
        limits.append(cfg["train"]["max_samples"])
    return min(limits) if limits else None


def train_seed(cfg: dict, seed: int, run_dir: str, *, resume: bool = False, progress_stream=None,
               on_step=None) -> dict:
    """Train one seed of ``cfg`` into ``run_dir``; return its summary row (also written as CSV).

    ``resume``: continue from ``run_dir/checkpoint.pt`` if it exists (else start afresh).
    ``on_step(info)`` is called after every step with the progress fields (step, samples, stage,
    b, eta, …); an exception raised there stops the run as a crash would (the tests use it).
    The process's torch thread count is set for the run (``run.threads``) and restored after it.
    """
    env = resolve_device(cfg)
    with _torch_threads(env["threads"]):
        prepared = _prepare_seed(cfg, seed, run_dir, env, resume=resume)
        return _train_seed(cfg, seed, prepared, env, progress_stream=progress_stream, on_step=on_step)


@contextlib.contextmanager
def _torch_threads(threads: int):
    """The process's torch thread count set to ``threads`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _PreparedSeed:
    """One seed's run, built and (on --resume) loaded from its checkpoint; nothing written yet."""

    run_dir: str
    built: Components
    log: RunLog
    extra: dict
    resuming: bool
    tensorboard_dir: str | None


def _prepare_seed(cfg: dict, seed: int, run_dir: str, env: dict, *, resume: bool) -> _PreparedSeed:
    """Everything that can refuse one seed's run, done before anything is written: a folder that
    holds a run (without ``resume``), TensorBoard, the data, the model and the checkpoint's fit."""
    log_path = os.path.join(run_dir, "log.jsonl")
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    if not resume and os.path.exists(log_path):
        fail("--out", "sfo train", "a folder without a previous run (or pass --resume to continue it)", run_dir,
             reason=f"{log_path} exists")
    tensorboard_dir = _tensorboard_dir(cfg, run_dir)
    log = RunLog(log_path)
    built = build_components(cfg, seed, env, ckpt, log)
    extra = {"window_loss": 0.0, "window_samples": 0, "last_eval_step": -1, "last_eval": {}, "time": 0.0,
             "check_s": 0.0}
    # the log is cut when the run starts, after every seed has been checked
    resuming = resume and built.loop.resume(ckpt, cut_log=False)
    if resuming:
        extra.update(built.loop.checkpoint_extra or {})
    return _PreparedSeed(run_dir, built, log, extra, resuming, tensorboard_dir)


def _train_seed(cfg: dict, seed: int, prepared: _PreparedSeed, env: dict, *, progress_stream, on_step) -> dict:
    from .loop import DivergedError

    run_dir, built, log, extra = prepared.run_dir, prepared.built, prepared.log, prepared.extra
    resuming = prepared.resuming
    n = len(built.train_data)
    sched, loop, loader = built.scheduler, built.loop, built.loader
    start_step = loop.steps
    os.makedirs(run_dir, exist_ok=True)
    if resuming:
        dropped = loop.rewind_log() or 0
    log.open(n, mode="a" if resuming else "w", tensorboard_dir=prepared.tensorboard_dir,
             purge_step=int(sched.state.samples) if resuming else None, time_offset=extra["time"])
    built.monitor.seconds = extra["check_s"]
    info_env = {"device": str(env["device"]), "threads": env["threads"], "amp": env["amp"],
                "channels_last": env["channels_last"], "data_on_device": env["on_device"],
                "compile": cfg["run"]["compile"], "max_micro_batch": built.max_micro_batch}
    vers = versions()
    if resuming:
        log.write({"kind": "resume", "step": start_step, "samples": int(sched.state.samples),
                   "dropped_records": dropped, **info_env, "versions": vers})
    else:
        log.write({"kind": "start", "step": 0, "samples": 0, "seed": seed, "n": n,
                   "n_test": len(built.test_data), "model": cfg["model"]["name"],
                   "dataset": cfg["data"]["dataset"], "schedule": sched.schedule.to_dict(),
                   "monitor": built.monitor.name, **info_env, "versions": vers,
                   "config": {k: v for k, v in cfg.items() if k in SCHEMA}})
    max_samples = _max_samples(cfg, n)
    max_steps = cfg["train"]["max_steps"] or None
    every, every_epochs = cfg["eval"]["every"], cfg["eval"]["epochs"]
    progress = Progress(progress_stream, cfg["run"]["progress_every"],
                        label=f"[seed {seed}] " if len(cfg["run"]["seeds"]) > 1 else "")
    status, message = "finished", ""

    def do_eval():
        res = evaluate(built.model, built.test_data, batch_size=cfg["eval"]["batch_size"], device=env["device"],
                       transform=built.transform)
        train_loss = extra["window_loss"] / extra["window_samples"] if extra["window_samples"] else None
        st = sched.state
        rec = {"kind": "eval", "step": loop.steps, "samples": int(st.samples), "check_samples": int(st.check_samples),
               "sfo_total": int(st.samples) + int(st.check_samples), "stage": int(st.stage), **res,
               "train_loss": train_loss, "n_test": len(built.test_data)}
        log.write(rec)
        extra.update(window_loss=0.0, window_samples=0, last_eval_step=loop.steps,
                     last_eval={k: rec[k] for k in ("test_acc", "test_loss", "train_loss")})

    def run_state() -> dict:
        extra["time"] = log.elapsed()
        extra["check_s"] = built.monitor.seconds
        return extra

    def info() -> dict:
        st = sched.state
        return {"step": loop.steps, "samples": int(st.samples), "check": int(st.check_samples),
                "epoch": int(st.samples) / n, "stage": int(st.stage), "b": int(st.batch_size), "eta": float(st.lr),
                "eps": float(st.threshold), "norm": None if log.last_check is None else log.last_check["norm"],
                "fraction": (int(st.samples) / max_samples) if max_samples else
                            (loop.steps / max_steps if max_steps else None),
                "check_s": built.monitor.seconds,
                "samples_per_s": int(st.samples) / max(log.elapsed() - built.monitor.seconds, 1e-9)}

    try:
        # every checkpoint (with rollback also the loop's periodic ones) holds the run's own state
        loop.run_state = run_state
        ckpt_every = cfg["run"]["checkpoint_every"] if cfg["train"]["on_nonfinite"] != "rollback" else 0
        while not sched.stopped:
            if max_steps is not None and loop.steps >= max_steps:
                break
            if max_samples is not None and int(sched.state.samples) >= max_samples:
                break
            # the augmentation stream of the epoch the next batch comes from (a pure function of (seed, epoch, i))
            built.train_data.set_epoch(loader.epoch + (1 if loader.position >= loader.n else 0))
            checks_before = log.checks_seen
            result = loop.step()
            if not result.skipped and not result.rolled_back and math.isfinite(result.loss):
                extra["window_loss"] += result.loss * result.samples
                extra["window_samples"] += result.samples
            epoch_done = loader.position >= loader.n
            if (every == "check" and log.checks_seen > checks_before) or \
                    (every == "epoch" and epoch_done and (loader.epoch + 1) % every_epochs == 0):
                do_eval()
            if ckpt_every and loop.steps % ckpt_every == 0:
                loop.save()
            step_info = info()
            progress.update(step_info)
            if on_step is not None:
                on_step(step_info)
    except DivergedError as exc:
        status, message = "diverged", str(exc)
    except BaseException:
        progress.close()
        log.close()
        raise
    if status == "finished":
        if sched.stopped:
            status = "stopped"
        if extra["last_eval_step"] != loop.steps:
            do_eval()
        if loop.checkpointed_at != loop.steps:
            loop.save()
    summary = _seed_summary(cfg, seed, run_dir, built, log, extra, status, message, n, vers, env)
    log.write({"kind": "end", "step": loop.steps, "samples": int(sched.state.samples), "status": status,
               "message": message, "summary": {k: summary[k] for k in SUMMARY_FIELDS}})
    log.close()
    _write_csv(os.path.join(run_dir, "summary.csv"), [summary])
    progress.update(info(), force=True)
    progress.close()
    return summary


def _seed_summary(cfg, seed, run_dir, built, log, extra, status, message, n, vers, env) -> dict:
    sched = built.scheduler
    st = sched.state
    records = read_log(log.path)
    checks = [r for r in records if r.get("kind") == "check" and r.get("norm") is not None]
    norms = [r["norm"] for r in checks if isinstance(r["norm"], float) and math.isfinite(r["norm"])]
    accs = [r["test_acc"] for r in records if r.get("kind") == "eval"]
    wall = log.elapsed()
    last = extra.get("last_eval") or {}
    row = {
        "seed": seed, "status": status, "steps": built.loop.steps, "epochs": round(int(st.samples) / n, 4),
        "train_samples": int(st.samples), "check_samples": int(st.check_samples),
        "sfo_total": int(st.samples) + int(st.check_samples), "final_stage": int(st.stage),
        "final_b": int(st.batch_size), "final_eta": float(st.lr), "stage_changes": len(sched.transitions),
        "last_norm": norms[-1] if norms else None, "min_norm": min(norms) if norms else None,
        "test_acc": last.get("test_acc"), "best_test_acc": max(accs) if accs else None, "test_loss": last.get("test_loss"), "train_loss": last.get("train_loss"),
        "wall_s": round(wall, 2), "check_s": round(built.monitor.seconds, 2),
        "samples_per_s": round(int(st.samples) / max(wall - built.monitor.seconds, 1e-9), 1),
        "skipped_steps": built.loop.skipped, "n_train": n, "device": str(env["device"]), "threads": env["threads"],
        "amp": env["amp"], "channels_last": env["channels_last"], "message": message, **vers,
        "config_file": cfg.get("_source"), "run_dir": run_dir,
    }
    row.update(flatten_config(cfg))
    return row


def _write_csv(path: str, rows: list[dict]) -> None:
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


# -- many seeds ------------------------------------------------------------------------------------

def _mean_std(values: list) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _check_resumable(cfg: dict, out_dir: str) -> None:
    path = os.path.join(out_dir, "config.toml")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        saved = load_config_text(fh.read(), path)
    def keys(table):
        return _MONITOR_KEYS[saved["monitor"]["kind"]] if table == "monitor" else SCHEMA[table]

    diffs = {f"{t}.{k}": {"saved": saved[t].get(k), "now": cfg[t].get(k)}
             for t in _TABLES_FIXED_ON_RESUME for k in keys(t) if saved[t].get(k) != cfg[t].get(k)}
    if diffs:
        fail("--resume", "sfo train", f"given the configuration the run in {out_dir} was started with "
             f"(tables {', '.join(_TABLES_FIXED_ON_RESUME)} must not change; [run], [train] and [eval] may)",
             diffs)


def train(cfg: dict, *, out_dir: str | None = None, seeds=None, resume: bool = False, progress_stream=None,
          on_step=None) -> dict:
    """Train every seed of ``cfg`` (``seeds`` overrides ``run.seeds``) into ``out_dir``.

    Returns ``{"out_dir", "runs": [summary rows], "mean": {...}, "std": {...}}``; writes
    ``out_dir/config.toml`` and ``out_dir/summary.csv`` (one row per seed, then 'mean' and 'std').
    A refused run writes nothing: the folder, the configuration, the data, TensorBoard and (with
    ``resume``) every seed's checkpoint are checked before the first file is written.
    """
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}
    cfg["run"] = dict(cfg["run"])
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            fail("--seeds", "sfo train", "distinct integers >= 0", seeds)
        cfg["run"]["seeds"] = seeds
    out_dir = out_dir or cfg["run"]["out_dir"] or os.path.join("runs", cfg["run"]["name"])
    cfg["run"]["out_dir"] = out_dir
    seeds = cfg["run"]["seeds"]
    run_dirs = [os.path.join(out_dir, f"seed{seed}") for seed in seeds]
    # Refused work writes nothing: every seed is built (and loaded from its checkpoint on --resume)
    # before the first file is written. The later seeds' builds are checks only, made before the
    # first seed's, whose build then runs (building seeds the RNGs, so each run starts as built).
    if resume:
        _check_resumable(cfg, out_dir)
    env = resolve_device(cfg)
    rows = []
    with _torch_threads(env["threads"]):
        for seed, run_dir in list(zip(seeds, run_dirs))[1:]:
            _prepare_seed(cfg, seed, run_dir, env, resume=resume)
        prepared = _prepare_seed(cfg, seeds[0], run_dirs[0], env, resume=resume)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.toml"), "w", encoding="utf-8") as fh:
            fh.write(config_to_toml(cfg, header=f"resolved from {cfg.get('_source')} by sfo train"))
        if cfg.get("_source") and os.path.isfile(cfg["_source"]):
            shutil.copyfile(cfg["_source"], os.path.join(out_dir, "config.source.toml"))
        for i, (seed, run_dir) in enumerate(zip(seeds, run_dirs)):
            if i:
                prepared = _prepare_seed(cfg, seed, run_dir, env, resume=resume)
            rows.append(_train_seed(cfg, seed, prepared, env, progress_stream=progress_stream, on_step=on_step))
            prepared = None          # this seed's model and data go before the next seed's are built
    mean, std = {}, {}
    for key in SUMMARY_FIELDS:
        mean[key], std[key] = _mean_std([r.get(key) for r in rows])
    table = [{k: r.get(k) for k in ("seed", "status", *SUMMARY_FIELDS)} for r in rows]
    table.append({"seed": "mean", "status": "", **mean})
    table.append({"seed": "std", "status": "", **std})
    _write_csv(os.path.join(out_dir, "summary.csv"), table)
    return {"out_dir": out_dir, "runs": rows, "mean": mean, "std": std}


def format_summary(result: dict) -> str:
    """The multi-seed summary as text lines ``key: mean ± std (n seeds)``."""
    n = len(result["runs"])
    lines = [f"{result['out_dir']}: {n} seed(s) "
             f"({', '.join(str(r['seed']) + ':' + r['status'] for r in result['runs'])})"]
    for key in SUMMARY_FIELDS:
        m, s = result["mean"][key], result["std"][key]
        if m is None:
            continue
        lines.append(f"  {key:<14} {m:.6g}" + (f" ± {s:.3g}" if s is not None else ""))
    return "\n".join(lines)
