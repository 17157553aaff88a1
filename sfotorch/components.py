r"""One seed's run built from a configuration: data, model, optimizer, loader, monitor, scheduler, loop.

Everything is handed to the project's own pieces — nothing here re-implements them: data
(:func:`sfotorch.datasets.load_dataset`), model (:func:`sfotorch.models.build_model`), batches
(:class:`~sfotorch.sampler.ResizableLoader`), the stage rule (:class:`~sfotorch.scheduler.StageScheduler`
over :mod:`sfotheory.rule`), ‖∇f‖ on check steps (:mod:`sfotorch.monitors`, in eval mode on
un-augmented data), the step itself (:class:`~sfotorch.loop.TrainingLoop`: micro-batches, non-finite
policy, checkpoints). The device options come from :func:`sfotorch.device.resolve_device`.

:func:`build_components` is what ``sfo train`` runs and what the throughput benchmarks time; it
refuses a configuration the pieces cannot run (b₀ above the training samples, named by the
configuration key) before anything is written.
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass

import torch

from sfotheory.validation import ParameterError, fail

from .config import schedule_kwargs
from .device import BatchView, autocast_forward, to_channels_last

__all__ = ["Components", "TimedMonitor", "build_components"]


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
    #: the measurement behind ``schedule.eps0 = "auto"`` (:class:`sfotorch.calibrate.Calibration`) when
    #: this build made one; None otherwise, also on a resumed run (its ε₀ comes from the checkpoint)
    calibration: object = None


class TimedMonitor:
    """Forwards to a monitor and adds up the wall time of its measurements (for the summary)."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.name = monitor.name
        self.seconds = 0.0

    def measure(self, **kwargs):         # eps_m=ε_m for a monitor with uses_eps_m
        t = time.perf_counter()
        try:
            return self.monitor.measure(**kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - t

    def __getattr__(self, name):          # state_dict / load_state_dict / update of the wrapped monitor
        return getattr(self.monitor, name)


def build_components(cfg: dict, seed: int, env: dict, checkpoint_path: str | None = None, log=None, *,
                     resume: bool = False) -> Components:
    """Data, model, optimizer, loader, monitor, scheduler and TrainingLoop of one seed of ``cfg``
    (``env`` from :func:`~sfotorch.device.resolve_device`); what ``sfo train`` runs and the
    benchmarks time. ``log`` receives the scheduler's and the loop's records; ``checkpoint_path``
    is where the loop writes its checkpoints. ``resume``: the run will continue from the checkpoint
    at ``checkpoint_path`` if it exists (then ``schedule.eps0 = "auto"`` takes the checkpoint's ε₀
    instead of measuring one)."""
    from .loop import TrainingLoop
    from .sampler import ResizableLoader
    from .scheduler import StageScheduler

    device = env["device"]
    torch.manual_seed(seed)
    train_data, test_data = _load_data(cfg, seed, env)
    model, transform = _build_model(cfg, env, train_data)
    opt_cfg = cfg["optimizer"]
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["schedule"]["eta0"], momentum=opt_cfg["momentum"],
                                weight_decay=opt_cfg["weight_decay"], nesterov=opt_cfg["nesterov"])
    loss_fn = _loss_fn(train_data)
    n = len(train_data)
    _check_first_batch_fits(cfg, n)
    monitor, debiased = _build_monitor(cfg, seed, model, train_data.without_augmentation(), loss_fn, device,
                                       transform)
    monitor = TimedMonitor(monitor)
    loader = ResizableLoader(BatchView(train_data, device), batch_size=cfg["schedule"]["b0"], seed=seed,
                             collate_fn=BatchView.as_is)
    kwargs, calibration = _schedule_arguments(cfg, seed, model, train_data.without_augmentation(), loss_fn, device,
                                              transform, checkpoint_path if resume else None)
    scheduler = StageScheduler(optimizer, cfg["schedule"]["policy"], loader=loader, monitor=monitor,
                               check_order=cfg["schedule"]["check_order"], on_nonfinite="warn", log=log,
                               **kwargs)
    cap = _max_micro_batch(cfg, scheduler, model, loss_fn, train_data, device, transform)
    train_cfg = cfg["train"]
    rollback = train_cfg["on_nonfinite"] == "rollback"
    loop = TrainingLoop(model, optimizer, scheduler, loader, loss_fn, max_micro_batch=cap,
                        device=device,
                        transform=transform, checkpoint_path=checkpoint_path,
                        checkpoint_every=cfg["run"]["checkpoint_every"] if rollback else 0,
                        on_nonfinite=train_cfg["on_nonfinite"], debiased=debiased, log=log)
    return Components(train_data, test_data, model, optimizer, scheduler, loader, loop, monitor, transform, cap,
                      calibration)


def _schedule_arguments(cfg: dict, seed: int, model, unaugmented, loss_fn, device, transform, resume_from):
    """The rule constructor's keyword arguments, with ``schedule.eps0 = "auto"`` replaced by a number,
    and the calibration that gave it (else None).

    On a run that resumes from ``resume_from`` (a checkpoint that exists) ε₀ is the checkpoint's, never
    measured again, so the resumed run continues exactly; otherwise it is measured now, at θ₀
    (:func:`sfotorch.calibrate.calibrate_eps0` on the un-augmented training set, seeded by the run's seed).
    """
    kwargs = schedule_kwargs(cfg)
    if kwargs.get("eps0") != "auto":
        return kwargs, None
    where = f"the config {cfg.get('_source', '<text>')}"
    if resume_from is not None and os.path.exists(resume_from):
        from .checkpoint import read_checkpoint

        saved = (read_checkpoint(resume_from).get("scheduler") or {}).get("schedule", {}).get("eps0")
        if saved is None:
            fail("schedule.eps0", where, "a number when the checkpoint holds no schedule eps0 to resume with",
                 "auto", reason=f"{resume_from} has none")
        return {**kwargs, "eps0": float(saved)}, None
    from .calibrate import calibrate_eps0

    try:
        cal = calibrate_eps0(model, unaugmented, loss_fn, eta=cfg["schedule"]["eta0"], b0=cfg["schedule"]["b0"],
                             seed=seed, batch_size=cfg["monitor"]["batch_size"], device=device, transform=transform)
    except ParameterError as exc:
        raise type(exc)(f"schedule.eps0 = 'auto' of {where}: {exc}") from None
    return {**kwargs, "eps0": cal.eps0}, cal


def _load_data(cfg: dict, seed: int, env: dict):
    """The training set (augmented as configured, subset drawn by ``seed``) and the test set (for a
    text data set: its held-out validation split); ``data.options`` go to a text data set's loader."""
    from .datasets import load_dataset

    data = cfg["data"]
    root = data["root"] or None
    options = data.get("options") or {}
    train_data = load_dataset(data["dataset"], root=root, train=True, augment=data["augment"],
                              subset=data["subset"] or None, seed=seed, subset_mode=data["subset_mode"], **options)
    test_data = load_dataset(data["dataset"], root=root, train=False,
                             subset=cfg["eval"]["test_subset"] or None, **options)
    if env["on_device"]:
        train_data, test_data = train_data.to(env["device"]), test_data.to(env["device"])
    return train_data, test_data


def _loss_fn(train_data):
    """Cross-entropy per sample: of the label for images, the mean over the tokens of a sequence for text
    (:class:`~sfotorch.losses.SequenceCrossEntropy`: a sample is a sequence)."""
    from .datasets import TextDataset
    from .losses import SequenceCrossEntropy

    return SequenceCrossEntropy() if isinstance(train_data, TextDataset) else torch.nn.CrossEntropyLoss()


def _build_model(cfg: dict, env: dict, train_data):
    """The model on the device with the device's options applied, and the batch transform they need.

    Classes and input channels are the training data's (for text: the vocabulary V and 1); a text
    data set's context length is the model's ``context`` unless ``model.options`` sets one, which
    must then be at least that long."""
    from .datasets import TextDataset
    from .models import MODELS, build_model

    device = env["device"]
    options = dict(cfg["model"]["options"])
    if isinstance(train_data, TextDataset) and "context" in inspect.signature(MODELS[cfg["model"]["name"]]).parameters:
        given = options.setdefault("context", train_data.context)
        if isinstance(given, int) and given < train_data.context:
            fail("model.options.context", f"the config {cfg.get('_source', '<text>')}",
                 f">= the data's context length ({train_data.context} tokens, data.options.context)", given)
    model = build_model(cfg["model"]["name"], num_classes=train_data.num_classes, in_channels=train_data.in_channels,
                        **options).to(device)
    transform = None
    if env["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        transform = to_channels_last
    if env["amp"] == "bf16":
        autocast_forward(model, device.type)
    if cfg["run"]["compile"]:
        model.compile(backend=cfg["run"]["compile_backend"])
    return model, transform


def _check_first_batch_fits(cfg: dict, n: int) -> None:
    """b₀ ≤ n, refused under the configuration key (the loader would name its own batch_size)."""
    b0, data = cfg["schedule"]["b0"], cfg["data"]
    if b0 <= n:
        return
    where = f"the config {cfg.get('_source', '<text>')}"
    why = "a batch of b0 samples is drawn without replacement from one epoch"
    if data["subset"]:
        fail("data.subset", where, f">= schedule.b0 = {b0}", data["subset"], reason=why)
    fail("schedule.b0", where, f"<= the {n} training samples of {data['dataset']}", b0, reason=why)


def _build_monitor(cfg: dict, seed: int, model, unaugmented, loss_fn, device, transform):
    """The ‖∇f‖ monitor of ``[monitor]``, and the same monitor again when the loop must feed it
    (the debiased one, which reads the training batches), else None."""
    from .monitors import DebiasedMonitor, ExactMonitor, ScreenedMonitor, SequentialMonitor, SubsampledMonitor
    from .monitors.per_sample_norms import unsupported_modules

    mon, n = cfg["monitor"], len(unaugmented)
    if mon["kind"] == "exact":
        return ExactMonitor(model, unaugmented, loss_fn, batch_size=mon["batch_size"], device=device,
                            transform=transform), None
    if mon["kind"] == "subsampled":
        return SubsampledMonitor(model, unaugmented, loss_fn, sample_size=min(mon["sample_size"], n),
                                 fresh=mon["fresh"], seed=seed, confidence=mon["confidence"], bound=mon["bound"],
                                 micro_batches=mon["micro_batches"], batch_size=mon["batch_size"], device=device,
                                 transform=transform), None
    def sequential():
        return SequentialMonitor(model, unaugmented, loss_fn, initial_size=mon["initial_size"], blocks=mon["blocks"],
                                 confidence=mon["confidence"], tolerance=mon["tolerance"], seed=seed,
                                 batch_size=mon["batch_size"], device=device, transform=transform)

    if mon["kind"] == "sequential":
        return sequential(), None
    source = mon["variance_source"]
    if source == "auto":
        model.train()
        supported = not unsupported_modules(model, [p for p in model.parameters() if p.requires_grad])
        source = "per_sample_norms" if supported else "micro_batches"
    # statistics on one step in 25 by default (at most one per check interval τ); their cost is
    # what benchmarks/bench_monitors.py measures
    r = mon["stats_every"] or min(25, cfg["schedule"]["tau"] or 25)
    monitor = DebiasedMonitor(model, loss_fn, micro_batches=mon["micro_batches"], variance_source=source,
                              beta=mon["beta"] or None, population=n, confidence=mon["confidence"],
                              stats_every=r, stats_phase=r - 1, plain_step_norms=False)
    if mon["confirm"] == "sequential":   # no advance on the window alone (benchmarks/bench_decisions.py)
        return ScreenedMonitor(monitor, sequential()), monitor
    return monitor, monitor


def _max_micro_batch(cfg: dict, scheduler, model, loss_fn, train_data, device, transform) -> int:
    """c of ``train.max_micro_batch``; 0 means b_max, or on CUDA the largest micro-batch that fits."""
    cap = cfg["train"]["max_micro_batch"]
    if cap != 0:
        return cap
    cap = int(scheduler.schedule.b_max)
    if device.type == "cuda":
        from .accumulate import find_max_micro_batch
        x, y = train_data.get_batch(slice(0, min(len(train_data), 8)))
        cap = find_max_micro_batch(model, loss_fn, x.to(device), y.to(device), device=device, limit=cap,
                                   transform=transform)
    return cap
