r"""Training runs for the torch paper checks: data, model, loader, scheduler, monitors, one loop.

Shared by :mod:`paper_checks.check_adaptive_vs_baselines`, :mod:`paper_checks.check_measurement_cost`
and :mod:`paper_checks.check_beyond_sgd`; nothing here re-implements the stage rule — the schedule is a
:class:`sfotheory.rule.Schedule` driven by :class:`sfotorch.scheduler.StageScheduler`, the batches come
from :class:`sfotorch.sampler.ResizableLoader` and ‖∇f(θ)‖ from :mod:`sfotorch.monitors`.

**What a run records.** On every check step (every τ-th step, for *every* schedule, baselines
included) the exact monitor measures G = ‖∇f(θ)‖ over the whole training subset, in eval mode on
un-augmented data; optional extra monitors (subsampled, debiased) measure at the same θ. One of
them — ``decide``, the exact one by default — is handed to the scheduler as its monitor, so its
norm is the one the rule compares with ε_m and its cost is what the scheduler counts as
measurement SFO. Each :class:`CheckRecord` holds the step, the training SFO Σ|B_t| so far (true
batch lengths), the deciding monitor's measurement SFO so far, the stage/b/η/ε_m the step ran
with, the rule's event, every monitor's norm, and the wall time spent training and measuring.

**Convention.** The scheduler's default ``check_order="after_update"``: the norm is measured at
θ_{t+1}, after ``optimizer.step()``, and a new (b, η) is used from the next step on.

**SFO to a threshold.** :meth:`RunResult.crossing` is the first check whose exact norm is ≤ ε
after one where it was > ε (reaching ε from above; see there why);
the SFO to reach ε is the training SFO at that check, plus — "with measurement counted" — the
gradient evaluations the schedule itself needed to measure until then (a norm-triggered schedule
needs its checks; a constant or periodic one needs none, its exact checks are observation only).

>>> import torch
>>> data = synthetic_data(64, seed=0)
>>> from sfotheory import rule
>>> s = rule.constant(b0=8, eta0=0.05, tau=4)
>>> run = train_run(s, data, seed=0, max_steps=8, widths=(4, 4, 4))
>>> [r.step for r in run.records], [r.train_samples for r in run.records]
([4, 8], [32, 64])
>>> run.records[-1].check_samples, run.stop_reason
(128, 'max_steps')
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch

from sfotheory.rule import Schedule
from sfotheory.validation import check_choice, check_integer, fail
from sfotorch.monitors import DebiasedMonitor, ExactMonitor, SubsampledMonitor
from sfotorch.sampler import ResizableLoader
from sfotorch.scheduler import StageScheduler

__all__ = [
    "AUTHORS",
    "OPTIMIZERS",
    "CheckRecord",
    "RunResult",
    "build_model",
    "build_optimizer",
    "fmt_mean_std",
    "mean_std",
    "scaled_to_subset",
    "synthetic_data",
    "torch_threads",
    "train_run",
    "training_data",
    "warm_start",
]

#: The authors' CIFAR settings the CPU runs are scaled from (``docs/theory.md``, "Algorithm 2"): training set
#: size, b₀, η₀, δ, γ, check interval τ (steps), constant-baseline batch, periodic period (steps).
AUTHORS = {"n": 50_000, "b0": 8, "eta0": 0.1, "delta": 2.0, "gamma": 1.4, "tau": 1000, "b_const": 128,
           "period": 20_000, "b_max": 4096}

#: Optimizer names accepted by :func:`build_optimizer`.
OPTIMIZERS = ("sgd", "momentum", "adam")


# -- environment ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with ``torch.set_num_threads(n)`` and restore the previous count (``None``: unchanged)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(check_integer(n, "torch_threads", "torch_threads", minimum=1))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# -- data and model -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def training_data(dataset: str = "fashion_mnist", n: int | None = 2048, data_dir: str | None = None):
    """The un-augmented training subset (the first ``n`` images) as an :class:`~sfotorch.datasets.ImageDataset`.

    Cached per process: the three checks share one copy. Fashion-MNIST is read from Debian's
    location unless ``data_dir`` is given; CIFAR needs ``data_dir``. No augmentation: f is the
    empirical loss over exactly these images, which the exact monitor measures.
    """
    from sfotorch.datasets import load_dataset

    root = None if data_dir is None else str(data_dir)
    data = load_dataset(dataset, root=root, train=True, augment=False, subset=n, seed=0)
    return data.without_augmentation()


def test_data(dataset: str = "fashion_mnist", n: int | None = 2000, data_dir: str | None = None):
    """The first ``n`` images of the test split (never augmented), for test loss and accuracy."""
    from sfotorch.datasets import load_dataset

    root = None if data_dir is None else str(data_dir)
    return load_dataset(dataset, root=root, train=False, augment=False, subset=n, seed=0)


def synthetic_data(n: int, seed: int = 0, image_size: int = 28):
    """A small random 10-class image set (1 channel) in the same :class:`ImageDataset` form, for tests."""
    from sfotorch.datasets import make_images
    from sfotorch.datasets.images import ImageDataset

    images, labels = make_images(n, (1, image_size, image_size), 10, seed)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), num_classes=10, mean=(0.5,), std=(0.25,), name="synthetic")


def build_model(name: str, seed: int, *, num_classes: int = 10, in_channels: int = 1, widths=None):
    """The model, initialised from ``torch.manual_seed(seed)`` (the global RNG is forked, not changed).

    ``name="small_cnn"`` with ``widths`` builds :class:`~sfotorch.models.SmallCNN` with those three
    channel counts (the default (32, 64, 128) is :func:`sfotorch.models.build_model`'s 94 k-parameter
    CNN); any other name goes to :func:`sfotorch.models.build_model`.
    """
    from sfotorch import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "small_cnn" and widths is not None:
            return models.SmallCNN(num_classes=num_classes, in_channels=in_channels, widths=tuple(widths))
        return models.build_model(name, num_classes, in_channels=in_channels)


def build_optimizer(name: str, params, lr: float, *, momentum: float = 0.9):
    """``"sgd"`` (plain, the paper's), ``"momentum"`` (heavy ball, β = ``momentum``) or ``"adam"`` (torch defaults)."""
    check_choice(name, OPTIMIZERS, "optimizer", "build_optimizer")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    return torch.optim.Adam(params, lr=lr)


def scaled_to_subset(n: int, b0: int = 8) -> dict:
    """The authors' CIFAR settings scaled to a training set of n samples by keeping them in epochs.

    τ = 1000 steps at b₀ = 8 is 0.16 epoch of CIFAR's 50 000 images → τ = 0.16 n / b₀ steps (the
    reference CPU run used the same: τ = 200 on 10 000); the periodic baseline's 20 000 steps at
    b₀ = 8 are 3.2 epochs → P = 3.2 n / b₀ steps; the constant baseline's b = 128 takes 390 steps an
    epoch → b = 128 n / 50 000, rounded to a power of two and kept ≥ b₀.

    >>> scaled_to_subset(10_000)
    {'tau': 200, 'period': 4000, 'b_const': 32}
    >>> scaled_to_subset(2048)
    {'tau': 41, 'period': 819, 'b_const': 8}
    """
    a = AUTHORS
    tau = max(1, round(a["tau"] * a["b0"] / a["n"] * n / b0))
    period = max(1, round(a["period"] * a["b0"] / a["n"] * n / b0))
    b_const = max(b0, 2 ** round(math.log2(a["b_const"] * n / a["n"])))
    return {"tau": tau, "period": period, "b_const": min(b_const, n)}


# -- records ---------------------------------------------------------------------------------------------

@dataclass
class CheckRecord:
    """One check step: where the run was, what every monitor measured at the same θ, and the time spent."""

    step: int
    train_samples: int
    check_samples: int
    stage: int
    b: int
    eta: float
    eps_m: float
    event: str
    norms: dict
    loss: float
    train_wall_s: float
    measure_wall_s: dict
    extra: dict = field(default_factory=dict)


@dataclass
class RunResult:
    """A finished run: its check records and totals. ``needs_measurement``: the schedule's trigger is the norm."""

    label: str
    seed: int
    schedule: dict
    optimizer: str
    n: int
    records: list[CheckRecord]
    transitions: list[dict]
    steps: int
    train_samples: int
    check_samples: int
    train_wall_s: float
    measure_wall_s: dict
    stop_reason: str
    batch_sizes: dict = field(default_factory=dict)
    backward_timing: dict = field(default_factory=dict)
    evaluations: dict = field(default_factory=dict)

    def debiased_overhead_s(self) -> float:
        """Wall seconds the debiased monitor's hooks added to training: Σ_b steps_b × (hooked − plain)_b."""
        return sum(self.batch_sizes.get(b, 0) * max(t["hooked"] - t["plain"], 0.0)
                   for b, t in self.backward_timing.items())

    @property
    def needs_measurement(self) -> bool:
        return self.schedule.get("trigger") == "norm"

    def crossing(self, eps: float, monitor: str = "exact", *, from_above: bool = True) -> CheckRecord | None:
        """The first check whose ``monitor`` norm is ≤ ε, after one that was > ε (None if never).

        ``from_above=True`` (the checks' definition of *reaching* ε): a network near its initialisation
        sits on a plateau whose gradient is small (measured here: ‖∇f(θ)‖ ≈ 0.1–0.4 at the first check,
        1–2 once it learns), so the plain first crossing of a threshold above that level happens at the
        first check for every schedule and says nothing about optimisation. A threshold counts as
        reached when the norm comes down to it. ``from_above=False``: the plain first crossing.
        """
        above = not from_above
        for r in self.records:
            v = r.norms.get(monitor, math.nan)
            if not math.isfinite(v):
                continue
            if v > eps:
                above = True
            elif above:
                return r
        return None

    def sfo_to(self, eps: float, *, counted: bool) -> float:
        """SFO to the first check with exact ‖∇f‖ ≤ ε (``inf`` if never); ``counted`` adds the schedule's own checks."""
        r = self.crossing(eps)
        if r is None:
            return math.inf
        return r.train_samples + (r.check_samples if counted and self.needs_measurement else 0)

    def steps_to(self, eps: float) -> float:
        """Steps to the first check with exact ‖∇f‖ ≤ ε (``inf`` if never)."""
        r = self.crossing(eps)
        return math.inf if r is None else r.step


# -- the composite monitor --------------------------------------------------------------------------------

class _Checks:
    """Measures every monitor at the same θ on a check step; hands the deciding one to the scheduler."""

    def __init__(self, monitors: dict, decide: str):
        self.monitors = monitors
        self.decide = decide
        self.name = decide
        self.last: dict = {}
        self.wall = dict.fromkeys(monitors, 0.0)
        self.last_wall = dict.fromkeys(monitors, 0.0)

    def measure(self):
        self.last = {}
        for name, mon in self.monitors.items():
            t0 = time.perf_counter()
            self.last[name] = mon.measure()
            dt = time.perf_counter() - t0
            self.wall[name] += dt
            self.last_wall[name] = dt
        return self.last[self.decide]


# -- the loop -------------------------------------------------------------------------------------------------

def train_run(schedule: Schedule, data, *, seed: int, max_steps: int, max_samples: int | None = None,
              stop_norm: float | None = None,
              optimizer: str = "sgd", momentum: float = 0.9, model: str = "small_cnn", widths=None,
              extra_monitors: dict | None = None, debiased: dict | None = None, decide: str = "exact",
              exact_batch: int = 256, label: str | None = None, tick=None, timing_reps: int = 5,
              init_state: dict | None = None, evaluate_at=(), test_data=None) -> RunResult:
    """Train one model under ``schedule`` and record every check (see the module docstring).

    Parameters
    ----------
    schedule : a :class:`~sfotheory.rule.Schedule`; η₀ is the optimizer's learning rate.
    data : the un-augmented training set (f is its empirical loss).
    seed : model initialisation, batch order (:class:`ResizableLoader`) and monitor subsets.
    max_steps : the step budget.
    max_samples : the training-SFO budget (the run ends at the first step that reaches it).
    stop_norm : stop once the exact ‖∇f‖ reaches this from above (the final threshold; :meth:`RunResult.crossing`).
    optimizer, momentum : see :func:`build_optimizer`.
    model, widths : see :func:`build_model`.
    extra_monitors : ``{name: dict(sample_size=s, ...)}`` → :class:`SubsampledMonitor` keywords.
    debiased : keywords of a :class:`DebiasedMonitor` named ``"debiased"``; training then calls its
        ``backward`` in place of ``loss.backward()`` (same ``.grad``).
    decide : the monitor whose norm the rule uses (``"exact"``, a name of ``extra_monitors`` or ``"debiased"``).
    tick : called as ``tick(step=…, stage=…)`` after each check.
    timing_reps : with ``debiased``, the repetitions of the paired backward timing after the run
        (:attr:`RunResult.backward_timing`, :meth:`RunResult.debiased_overhead_s`).
    init_state : the model's starting parameters (a ``state_dict``, e.g. from :func:`warm_start`), so that
        every schedule of a seed starts from the same θ₀; default: the seed's initialisation.
    evaluate_at, test_data : after each of these steps, f(θ) (the mean loss over ``data``) and, with
        ``test_data``, the test loss and accuracy (:func:`sfotorch.evaluation.evaluate`, eval mode, no
        random draw, not counted as SFO) go to :attr:`RunResult.evaluations` under the step.
    """
    where = "train_run"
    max_steps = check_integer(max_steps, "max_steps", where, minimum=1)
    n = len(data)
    net = build_model(model, seed, num_classes=data.num_classes, in_channels=data.in_channels, widths=widths)
    if init_state is not None:
        net.load_state_dict(init_state)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = build_optimizer(optimizer, net.parameters(), schedule.eta0, momentum=momentum)
    loader = ResizableLoader(data, batch_size=schedule.b0, seed=seed)
    checks, deb = _monitors(net, data, loss_fn, seed=seed, exact_batch=exact_batch, extra_monitors=extra_monitors,
                            debiased=debiased, decide=decide)
    # a diverging schedule is a result (stop_reason "diverged", censored by the checks), not an error
    sched = StageScheduler(opt, schedule, loader=loader, monitor=checks, on_nonfinite="warn")
    records: list[CheckRecord] = []
    batch_sizes: dict[int, int] = {}
    evaluate_at, evaluations = {int(k) for k in evaluate_at}, {}
    train_wall, loss_sum, loss_steps, stop_reason = 0.0, 0.0, 0, "max_steps"
    above_stop = False
    it = iter(loader)
    net.train()
    while sched.state.step < max_steps:
        if max_samples is not None and sched.state.samples >= max_samples:
            stop_reason = "max_samples"
            break
        t0 = time.perf_counter()
        try:
            inputs, targets = next(it)
        except StopIteration:
            it = iter(loader)
            inputs, targets = next(it)
        opt.zero_grad(set_to_none=True)
        if deb is not None:
            loss = deb.backward(inputs, targets)
        else:
            loss = loss_fn(net(inputs), targets)
            loss.backward()
        opt.step()
        value = float(loss.detach())
        due = sched.check_due
        before = sched.state
        measured_before = sum(checks.wall.values())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # the non-finite value ends the run below
            event = sched.step(loss=value, samples=int(inputs.shape[0]))
        train_wall += time.perf_counter() - t0 - (sum(checks.wall.values()) - measured_before)
        batch_sizes[int(inputs.shape[0])] = batch_sizes.get(int(inputs.shape[0]), 0) + 1
        loss_sum += value
        loss_steps += 1
        if sched.state.step in evaluate_at:
            evaluations[int(sched.state.step)] = _evaluate(net, data, test_data, exact_batch)
        if not math.isfinite(value):
            stop_reason = "diverged"
            break
        if due:
            records.append(_check_record(checks, sched.state, before, event, loss_sum / max(loss_steps, 1),
                                         train_wall))
            norms = records[-1].norms
            loss_sum, loss_steps = 0.0, 0
            if tick is not None:
                tick(step=int(sched.state.step), stage=int(sched.state.stage))
            if not math.isfinite(norms["exact"]):
                stop_reason = "diverged"
                break
            if stop_norm is not None:
                if norms["exact"] > stop_norm:
                    above_stop = True
                elif above_stop:            # reached from above (RunResult.crossing)
                    stop_reason = "reached"
                    break
    timing = _time_backward(net, loss_fn, deb, data, batch_sizes, reps=timing_reps) if deb is not None else {}
    st = sched.state
    return RunResult(label=label or schedule.name, seed=seed, schedule=schedule.to_dict(), optimizer=optimizer, n=n,
                     records=records, transitions=list(sched.transitions), steps=int(st.step),
                     train_samples=int(st.samples), check_samples=int(st.check_samples), train_wall_s=train_wall,
                     measure_wall_s=dict(checks.wall), stop_reason=stop_reason, batch_sizes=batch_sizes,
                     backward_timing=timing, evaluations=evaluations)


def _monitors(net, data, loss_fn, *, seed: int, exact_batch: int, extra_monitors, debiased, decide: str):
    """The monitors of :func:`train_run` behind one :class:`_Checks` (the exact one first), and the
    debiased monitor (or None) whose ``backward`` the training step then runs."""
    monitors = {"exact": ExactMonitor(net, data, loss_fn, batch_size=exact_batch)}
    for name, kw in (extra_monitors or {}).items():
        monitors[name] = SubsampledMonitor(net, data, loss_fn, **{"seed": seed, "batch_size": exact_batch, **kw},
                                           name=name)
    deb = None
    if debiased is not None:
        deb = DebiasedMonitor(net, loss_fn, **{"population": len(data), **debiased}, name="debiased")
        monitors["debiased"] = deb
    if decide not in monitors:
        fail("decide", "train_run", f"one of the monitors {sorted(monitors)}", decide)
    return _Checks(monitors, decide), deb


def _check_record(checks, st, before, event, loss: float, train_wall: float) -> CheckRecord:
    """One check of :func:`train_run`: every monitor's measurement at state ``st``, the stage values
    ``before`` the rule was applied, the rule's ``event`` and the mean training loss since the last check."""
    norms = {k: float(m.norm) for k, m in checks.last.items()}
    extra = {k: {"lower": float(m.lower), "upper": float(m.upper), "cost": int(m.cost),
                 "clamped": bool(m.clamped)} for k, m in checks.last.items()}
    return CheckRecord(
        step=int(st.step), train_samples=int(st.samples), check_samples=int(st.check_samples),
        stage=int(before.stage), b=int(before.batch_size), eta=float(before.lr),
        eps_m=float(before.eps_m), event=event.name, norms=norms, loss=loss,
        train_wall_s=train_wall, measure_wall_s=dict(checks.wall), extra=extra)


def _evaluate(net, data, test_data, batch_size: int) -> dict:
    """f(θ) over the training data and, with ``test_data``, test loss and accuracy (eval mode)."""
    from sfotorch.evaluation import evaluate

    out = {"train_loss": evaluate(net, data, batch_size=batch_size, device="cpu")["test_loss"]}
    if test_data is not None:
        out.update(evaluate(net, test_data, batch_size=batch_size, device="cpu"))
    return out


def warm_start(data, *, seed: int, steps: int, batch_size: int, lr: float, model: str = "small_cnn",
               widths=None, exact_batch: int = 256) -> tuple[dict, float]:
    """θ₀ shared by every schedule of a seed: ``steps`` plain SGD steps from the seed's initialisation.

    The batches follow a (seed, epoch) order of their own (:func:`sfotorch.sampler.epoch_permutation`
    with seed 10 000 + seed, so that the schedules' own batch order is not replayed). Returns
    ``(state_dict, ‖∇f(θ₀)‖)``, the exact full-gradient norm over ``data`` at the warm start. These
    steps are the common starting point of a comparison and are counted for no schedule.
    """
    from sfotorch.sampler import epoch_permutation

    net = build_model(model, seed, num_classes=data.num_classes, in_channels=data.in_channels, widths=widths)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    n = len(data)
    epoch, pos, perm = 0, 0, epoch_permutation(n, 10_000 + seed, 0)
    net.train()
    for _ in range(steps):
        if pos + batch_size > n:
            epoch, pos = epoch + 1, 0
            perm = epoch_permutation(n, 10_000 + seed, epoch)
        x, y = data[torch.as_tensor(perm[pos:pos + batch_size])]
        pos += batch_size
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
    norm = ExactMonitor(net, data, loss_fn, batch_size=exact_batch).measure().norm
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, float(norm)


def _time_backward(net, loss_fn, deb, data, batch_sizes: dict, *, reps: int) -> dict:
    """Paired timing at each batch size b the run used: plain forward+backward vs the debiased monitor's.

    Median of ``reps`` interleaved repetitions each, on the first b samples; the monitor's statistics
    are saved and restored, the gradients cleared, the parameters untouched.
    """
    out = {}
    saved = deb.state_dict()
    for b in sorted(batch_sizes):
        if b < 2:
            continue
        x, y = data[torch.arange(b)]
        plain, hooked = [], []
        for _ in range(reps):
            net.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss_fn(net(x), y).backward()
            plain.append(time.perf_counter() - t0)
            net.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            deb.backward(x, y)
            hooked.append(time.perf_counter() - t0)
        out[b] = {"plain": statistics.median(plain), "hooked": statistics.median(hooked)}
    net.zero_grad(set_to_none=True)
    deb.load_state_dict(saved)
    return out


# -- summaries ------------------------------------------------------------------------------------------------

def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; NaN for one value: it has no spread); ``inf`` if any is ``inf``.

    >>> mean_std([1.0, 3.0])
    (2.0, 1.4142135623730951)
    >>> mean_std([1.0, float("inf")])
    (inf, nan)
    >>> mean_std([2.0])
    (2.0, nan)
    """
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    if any(math.isinf(v) for v in values):
        return math.inf, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt_mean_std(values, unit: str = "", scale: float = 1.0, digits: int = 3) -> str:
    """``"12.3k ± 0.4k"``-style text of :func:`mean_std`; runs that never got there are counted.

    >>> fmt_mean_std([1000, 3000], scale=1e3, unit="k")
    '2k ± 1.41k'
    >>> fmt_mean_std([1000, float("inf")], scale=1e3, unit="k")
    'not reached in 1 of 2 runs (reached: 1k (n = 1))'
    >>> fmt_mean_std([1500], scale=1e3, unit="k")
    '1.5k (n = 1)'
    """
    values = [float(v) for v in values]
    missing = sum(math.isinf(v) for v in values)
    if missing:
        got = [v for v in values if not math.isinf(v)]
        inner = f" (reached: {fmt_mean_std(got, unit, scale, digits)})" if got else ""
        return f"not reached in {missing} of {len(values)} runs{inner}"
    m, s = mean_std(values)
    if len(values) == 1:
        return f"{m / scale:.{digits}g}{unit} (n = 1)"
    return f"{m / scale:.{digits}g}{unit} ± {s / scale:.{digits}g}{unit}"
