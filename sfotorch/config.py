r"""``sfo train`` configurations: one TOML file per run, validated eagerly, with ``--set key=value`` overrides.

A configuration has seven tables; every key, its type, default and rule is listed once, in
:data:`SCHEMA` (the table below is generated from it by :func:`schema_table`). Units: steps are
optimizer steps, samples are training samples (SFO), epochs are passes over the training set.

===========  ==================================================================================
table        what it sets
===========  ==================================================================================
[run]        name, output folder, seeds, device, threads, bf16/channels_last/compile, progress,
             checkpoints, TensorBoard
[data]       data set, its folder, training subset, augmentation, a text data set's options
[model]      architecture (``sfotorch.models.build_model``) and its keyword options
[optimizer]  plain SGD (momentum and weight decay default to 0, as in the paper)
[schedule]   the policy of :data:`sfotorch.scheduler.POLICIES` and the keyword arguments of its
             :mod:`sfotheory.rule` constructor (b0, eta0, eps0, delta, gamma, tau, b_max, …)
[monitor]    how ‖∇f(θ)‖ is measured on check steps: exact, subsampled, sequential or debiased
[train]      length (epochs, or steps / samples), micro-batch cap, non-finite policy
[eval]       test-set evaluation: at every check or every k epochs
===========  ==================================================================================

Overrides use dotted keys and TOML values; a value that is not valid TOML is taken as a string::

    --set schedule.tau=200 --set run.seeds=[0,1,2] --set data.root=/data/cifar

Every error names the key, the rule and the value received, in the project's one format
(:mod:`sfotheory.validation`):

>>> cfg = load_config_text('[run]\nname = "x"\n[data]\ndataset = "fashion_mnist"\n[model]\nname = "small_cnn"\n'
...                        '[schedule]\npolicy = "constant"\nb0 = 32\neta0 = 0.1\ntau = 100\n[train]\nepochs = 1')
>>> cfg["schedule"]["b0"], cfg["optimizer"]["momentum"], cfg["monitor"]["kind"]
(32, 0.0, 'exact')
>>> apply_overrides(cfg, ["schedule.b0=0"])
Traceback (most recent call last):
...
sfotheory.validation.ParameterError: The 'schedule.b0' parameter of the config <text> must be >= 1 (a batch holds at least one sample). Got schedule.b0=0 instead.
>>> apply_overrides(cfg, ["schedule.tua=5"])["schedule"]
Traceback (most recent call last):
...
sfotheory.validation.ParameterError: The 'schedule.tua' parameter of the config <text> must be a key of [schedule] (known keys: policy, check_order, b0, eta0, eps0, delta, gamma, increment, tau, b_max, eta_max, period, horizon, eta_min, stall_limit, stall_action, allow_unstable). Got schedule.tua=5 instead.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import tomllib
from dataclasses import dataclass
from typing import Any

from sfotheory import rule
from sfotheory.validation import ParameterError, fail

__all__ = [
    "Key",
    "SCHEMA",
    "apply_overrides",
    "config_to_toml",
    "flatten_config",
    "load_config",
    "load_config_text",
    "parse_override",
    "schema_table",
    "validate_config",
]

_REQUIRED = object()

#: policy name → its :mod:`sfotheory.rule` constructor (the names of ``sfotorch.scheduler.POLICIES``).
_POLICIES = {name: getattr(rule, name) for name in
             ("adaptive_exponential", "adaptive_linear", "constant", "periodic", "cosine")}
_MODELS = ("densenet", "resnet18", "small_cnn", "tiny_gpt")
_DATASETS = ("cifar10", "cifar100", "fashion_mnist", "fortunes")
_TEXT_DATASETS = ("fortunes",)        # sequences of token ids: no augmentation, no channels


@dataclass(frozen=True)
class Key:
    """One configuration key: its kind, default (``_REQUIRED`` if none), rule and a one-line help.

    ``kind`` is ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"choice"``, ``"ints"`` (a list of
    ints) or ``"table"`` (a TOML table of keyword options); ``low``/``high`` bound numbers
    (inclusive), ``choices`` lists the strings a ``choice`` accepts (for a ``float``: the named
    values it accepts besides numbers, e.g. ``"auto"`` for ``schedule.eps0``).
    """

    kind: str
    default: Any = _REQUIRED
    help: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    reason: str | None = None


#: Every key of a configuration, by table (the only place defaults live).
SCHEMA: dict[str, dict[str, Key]] = {
    "run": {
        "name": Key("str", help="the run's name (default folder runs/NAME)"),
        "description": Key("str", "", help="one line saying what the run shows"),
        "out_dir": Key("str", "", help="output folder; empty: runs/NAME (relative to the working directory)"),
        "seeds": Key("ints", [0], help="seeds run one after another, each in OUT/seedS/", low=0),
        "device": Key("choice", "auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA if present, else CPU"),
        "threads": Key("int", 0, low=0, help="torch CPU threads; 0: 1 on CPU (fastest here for small batches), "
                                             "torch's default with CUDA"),
        "amp": Key("choice", "auto", choices=("auto", "bf16", "off"),
                   help="bf16 autocast of the forward pass; auto: bf16 on CUDA, off on CPU"),
        "channels_last": Key("choice", "auto", choices=("auto", "on", "off"),
                             help="channels_last memory format; auto: on for CUDA"),
        "compile": Key("bool", False, help="torch.compile the model (CUDA mainly; needs a compiler)"),
        "compile_backend": Key("str", "inductor", help="the torch.compile backend"),
        "progress_every": Key("float", 2.0, low=0.0, help="least seconds between redraws of the progress bar on stderr (drawn on a terminal only); 0: none"),
        "checkpoint_every": Key("int", 0, low=0, help="steps between checkpoints (0: only at the end)"),
        "tensorboard": Key("choice", "auto", choices=("auto", "on", "off"),
                           help="TensorBoard event files in OUT/seedS/tb; auto: when tensorboard is installed"),
    },
    "data": {
        "dataset": Key("choice", choices=_DATASETS, help="the training data set"),
        "root": Key("str", "", help="its folder; empty: Debian's Fashion-MNIST or fortunes folder (CIFAR needs one)"),
        "subset": Key("int", 0, low=0, help="keep this many training images (0: all)"),
        "subset_mode": Key("choice", "first", choices=("first", "random"), help="the first k or k seeded draws"),
        "augment": Key("bool", True, help="random crop (padding 4) + flip on training batches only"),
        "on_device": Key("choice", "auto", choices=("auto", "on", "off"),
                         help="keep the uint8 images on the GPU (auto: on with CUDA); off: pinned host memory"),
        "options": Key("table", {}, help="keyword options of a text data set's loader, e.g. "
                                         "{ context = 64, level = \"byte\" } for fortunes"),
    },
    "model": {
        "name": Key("choice", choices=_MODELS, help="sfotorch.models.build_model name"),
        "options": Key("table", {}, help="keyword options of the model, e.g. { batch_norm = true }"),
    },
    "optimizer": {
        "name": Key("choice", "sgd", choices=("sgd",), help="plain SGD (the paper's)"),
        "momentum": Key("float", 0.0, low=0.0, high=1.0, help="0 in the paper"),
        "weight_decay": Key("float", 0.0, low=0.0, help="0 in the paper"),
        "nesterov": Key("bool", False),
    },
    "schedule": {
        "policy": Key("choice", choices=tuple(_POLICIES), help="the schedule (sfotheory.rule constructor)"),
        "check_order": Key("choice", "after_update", choices=("after_update", "before_update"),
                           help="measure ‖∇f‖ after the update, or before it as the authors' code does"),
        "b0": Key("int", low=1, reason="a batch holds at least one sample", help="b_0, samples"),
        "eta0": Key("float", low=0.0, help="η_0"),
        "eps0": Key("float", None, low=0.0, choices=("auto",),
                    help="ε_0, the stage-0 threshold on ‖∇f‖; \"auto\": √(2C₂/b₀) with C₂ = Lσ²η₀/(2 − Lη₀) from L "
                         "and σ² measured at θ₀ (sfotorch.calibrate), kept on --resume"),
        "delta": Key("float", None, low=1.0, help="δ, batch growth per stage"),
        "gamma": Key("float", None, low=1.0, help="γ, learning-rate growth per stage (γ < √δ)"),
        "increment": Key("float", None, low=0.0, help="a, linear batch growth per stage (adaptive_linear)"),
        "tau": Key("int", None, low=1, help="τ, steps between checks of ‖∇f‖"),
        "b_max": Key("int", None, low=1, help="the largest batch, samples (capped at n)"),
        "eta_max": Key("float", None, low=0.0, help="cap on η"),
        "period": Key("int", None, low=1, help="steps per stage of the periodic schedule"),
        "horizon": Key("int", None, low=1, help="cosine: steps of the annealing"),
        "eta_min": Key("float", None, low=0.0, help="cosine: the final η"),
        "stall_limit": Key("int", None, low=0, help="steps a stage may last before stall_action"),
        "stall_action": Key("choice", None, choices=("none", "advance", "stop", "warn")),
        "allow_unstable": Key("bool", None, help="allow γ ≥ √δ"),
    },
    "monitor": {
        "kind": Key("choice", "exact", choices=("exact", "subsampled", "sequential", "debiased"),
                    help="exact: n evaluations per check; subsampled: sample_size; sequential: initial_size "
                         "doubled until ‖∇f‖ ≤ eps_m or > eps_m is decided (at most n); debiased: 0"),
        "batch_size": Key("int", 256, low=1, help="chunk of the measuring pass (memory and speed: benchmarks/bench_exact_chunk.py)"),
        "sample_size": Key("int", 0, low=0, help="subsampled: samples per check (s)"),
        "fresh": Key("bool", True, help="subsampled: a new subset at every check"),
        "bound": Key("choice", "gaussian", choices=("markov", "gaussian"), help="subsampled: margin bound"),
        "confidence": Key("float", 0.95, low=0.0, high=1.0, help="level of the reported interval (sequential: "
                          "the probability of a right decision)"),
        "initial_size": Key("int", 256, low=1, help="sequential: s_0, the samples of the first look"),
        "blocks": Key("int", 16, low=3, help="sequential: k blocks of the subset for the jackknife standard error"),
        "tolerance": Key("float", 0.0, low=0.0, high=1.0,
                         help="sequential: ρ, the relative half-width of the indifference zone around eps_m (a check "
                              "stops once its interval's half-width is at most ρ·eps_m and decides by its "
                              "estimate); 0: none"),
        "confirm": Key("choice", "sequential", choices=("sequential", "none"),
                       help="debiased: sequential — the window rules checks out for free and the sequential test "
                            "(initial_size, blocks, confidence, tolerance) decides the others, so that no stage "
                            "advances on the window alone; none — the window decides alone"),
        "micro_batches": Key("int", 4, low=2, help="debiased/subsampled: k micro-batches for tr Σ̂"),
        "beta": Key("float", 0.0, low=0.0, high=1.0, help="debiased: EMA decay (0: window mean since the last check)"),
        "stats_every": Key("int", 0, low=0, help="debiased: tr Σ̂ on one step in stats_every, at most tau "
                           "(the last one on each check step when it divides tau); 0: min(25, tau), its wall-time cost "
                           "in benchmarks/bench_monitors.py"),
        "variance_source": Key("choice", "auto", choices=("auto", "per_sample_norms", "micro_batches"),
                               help="debiased: where tr Σ̂ comes from on a batch that is one micro-batch; auto: "
                                    "per-sample-norm hooks when every layer supports them, else micro_batches"),
    },
    "train": {
        "epochs": Key("float", 0.0, low=0.0, help="passes over the training set (0: use max_steps/max_samples)"),
        "max_steps": Key("int", 0, low=0, help="stop after this many steps (0: no limit)"),
        "max_samples": Key("int", 0, low=0, help="stop after this many training samples (0: no limit)"),
        "max_micro_batch": Key("int", 0, low=0, help="memory cap c per forward; 0: found on CUDA, b_max on CPU"),
        "on_nonfinite": Key("choice", "stop", choices=("stop", "skip", "rollback"), help="TrainingLoop policy"),
    },
    "eval": {
        "every": Key("choice", "epoch", choices=("epoch", "check", "end"),
                     help="evaluate the test set every `epochs` epochs, at every check, or at the end only"),
        "epochs": Key("int", 1, low=1, help="with every = 'epoch': every this many epochs"),
        "test_subset": Key("int", 0, low=0, help="evaluate on the first k test images (0: all)"),
        "batch_size": Key("int", 1024, low=1, help="evaluation batch"),
    },
}
_REQUIRED_TABLES = ("run", "data", "model", "schedule", "train")


def schema_table() -> str:
    """The keys of :data:`SCHEMA` as text: ``table.key  kind  default  help``."""
    lines = []
    for table, keys in SCHEMA.items():
        for name, k in keys.items():
            default = "required" if k.default is _REQUIRED else ("-" if k.default is None else json.dumps(k.default))
            lines.append(f"{table}.{name:<18} {k.kind:<7} {default:<14} {k.help}")
    return "\n".join(lines)


# -- one value -----------------------------------------------------------------------------------

def _check_value(value, key: Key, name: str, where: str):
    """``value`` checked against ``key`` (ints accepted where floats are; returned converted)."""
    kind = key.kind
    if kind == "bool":
        if not isinstance(value, bool):
            fail(name, where, "true or false", value)
        return value
    if kind in ("str", "choice"):
        if not isinstance(value, str):
            fail(name, where, "a string" if kind == "str" else f"one of {', '.join(map(repr, key.choices))}", value)
        if kind == "choice" and value not in key.choices:
            fail(name, where, f"one of {', '.join(map(repr, key.choices))}", value)
        return value
    if kind == "table":
        if not isinstance(value, dict):
            fail(name, where, "a TOML table, e.g. { batch_norm = true }", value)
        return dict(value)
    if kind == "ints":
        if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                               for v in value):
            fail(name, where, "a non-empty list of integers, e.g. [0, 1, 2]", value)
        if key.low is not None and any(v < key.low for v in value):
            fail(name, where, f"a list of integers >= {key.low:g}", value)
        if len(set(value)) != len(value):
            fail(name, where, "a list without repeats", value)
        return list(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail(name, where, "an integer", value)
    elif kind == "float":
        if key.choices and isinstance(value, str) and value in key.choices:   # a named value: eps0 = "auto"
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(name, where, "a number" + "".join(f" or {c!r}" for c in key.choices), value)
        value = float(value)
        if math.isnan(value):
            fail(name, where, "a number", value)
    else:  # pragma: no cover - schema error
        raise AssertionError(kind)
    if key.low is not None and value < key.low:
        fail(name, where, f">= {key.low:g}", value, reason=key.reason)
    if key.high is not None and value > key.high:
        fail(name, where, f"<= {key.high:g}", value, reason=key.reason)
    return value


# -- a whole config ------------------------------------------------------------------------------

def validate_config(raw: dict, source: str = "<text>") -> dict:
    """The resolved configuration: ``raw`` checked key by key, defaults filled in, cross-checks done.

    ``source`` names the file in messages. Schedule keys not given stay ``None`` (the rule
    constructor's default applies) and are left out of what :func:`schedule_kwargs` passes on.
    """
    where = f"the config {source}"
    if not isinstance(raw, dict):
        fail("config", where, "a TOML document of tables", raw)
    unknown = [t for t in raw if t not in SCHEMA]
    if unknown:
        fail(unknown[0], where, f"one of the tables [{'], ['.join(SCHEMA)}]", raw[unknown[0]])
    missing = [t for t in _REQUIRED_TABLES if t not in raw]
    if missing:
        fail(missing[0], where, "present (a config needs the tables "
             f"[{'], ['.join(_REQUIRED_TABLES)}])", None)
    out: dict[str, dict] = {}
    for table, keys in SCHEMA.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            fail(table, where, "a table", given)
        for k in given:
            if k not in keys:
                fail(f"{table}.{k}", where, f"a key of [{table}] (known keys: {', '.join(keys)})", given[k])
        section = {}
        for k, spec in keys.items():
            name = f"{table}.{k}"
            if k in given:
                section[k] = _check_value(given[k], spec, name, where)
            elif spec.default is _REQUIRED:
                fail(name, where, "given (it has no default)", None)
            else:
                section[k] = copy.deepcopy(spec.default)
        out[table] = section
    _cross_check(out, where)
    return out


def schedule_kwargs(cfg: dict) -> dict:
    """The keyword arguments of the schedule's rule constructor (the keys given, without policy/check_order)."""
    return {k: v for k, v in cfg["schedule"].items() if k not in ("policy", "check_order") and v is not None}


def _cross_check(cfg: dict, where: str) -> None:
    sched = cfg["schedule"]
    policy = sched["policy"]
    ctor = _POLICIES[policy]
    params = inspect.signature(ctor).parameters
    kwargs = schedule_kwargs(cfg)
    for k in kwargs:
        if k not in params:
            fail(f"schedule.{k}", where, f"left out for policy {policy!r} (it takes {', '.join(params)})", kwargs[k])
    for k, p in params.items():
        if p.default is inspect.Parameter.empty and k not in kwargs:
            fail(f"schedule.{k}", where, f"given for policy {policy!r}", None)
    try:   # eps0 = "auto" is measured when the run is built (sfotorch.components); any ε₀ > 0 checks the rest
        schedule = ctor(**({**kwargs, "eps0": 1.0} if kwargs.get("eps0") == "auto" else kwargs))
    except ParameterError as exc:
        raise type(exc)(f"[schedule] of {where.removeprefix('the config ')}: {exc}") from None
    if "tau" in params and "tau" not in kwargs:
        fail("schedule.tau", where, f"given for policy {policy!r}: the steps between measurements of ‖∇f‖ "
             "(each costs what the monitor costs; for a baseline they are only logged)", None)
    train = cfg["train"]
    if train["on_nonfinite"] == "rollback" and cfg["run"]["checkpoint_every"] < 1:
        fail("run.checkpoint_every", where, ">= 1 with train.on_nonfinite = 'rollback' (it rolls back to a "
             "checkpoint)", cfg["run"]["checkpoint_every"])
    if not (train["epochs"] or train["max_steps"] or train["max_samples"]):
        fail("train.epochs", where, "> 0, or train.max_steps or train.max_samples given (the run needs an end)",
             train["epochs"])
    mon = cfg["monitor"]
    if schedule.trigger == "norm" and mon["kind"] == "subsampled" and mon["sample_size"] < 2:
        fail("monitor.sample_size", where, ">= 2 with monitor.kind = 'subsampled'", mon["sample_size"])
    tested = mon["kind"] == "sequential" or (mon["kind"] == "debiased" and mon["confirm"] == "sequential")
    with_test = "with monitor.kind = 'sequential' (or 'debiased' confirmed by it)"
    if tested and not 0.0 < mon["confidence"] < 1.0:
        fail("monitor.confidence", where, f"> 0 and < 1 {with_test}", mon["confidence"])
    if tested and mon["initial_size"] < mon["blocks"]:
        fail("monitor.initial_size", where, f">= monitor.blocks = {mon['blocks']} (every block holds a sample at "
             "the first look)", mon["initial_size"])
    if tested and mon["tolerance"] >= 1.0:
        fail("monitor.tolerance", where, f"< 1 {with_test}: ρ, the relative half-width of the indifference zone",
             mon["tolerance"])
    if mon["kind"] == "debiased" and mon["beta"] >= 1.0:
        fail("monitor.beta", where, "< 1 (0 for the window mean)", mon["beta"])
    tau = getattr(schedule, "tau", None)
    if mon["kind"] == "debiased" and tau is not None and mon["stats_every"] > tau:
        fail("monitor.stats_every", where, f"<= schedule.tau = {tau} (0: min(25, tau))", mon["stats_every"],
             reason="a check interval without a statistics step has no estimate")
    data = cfg["data"]
    if data["dataset"] in _TEXT_DATASETS:
        if data["augment"]:
            fail("data.augment", where, f"false for the text data set {data['dataset']!r} (text has no crop/flip "
                 "augmentation)", True)
        if cfg["run"]["channels_last"] == "on":
            fail("run.channels_last", where, f"'auto' or 'off' for the text data set {data['dataset']!r} (token "
                 "ids have no channels)", "on")
    elif data["options"]:
        key = next(iter(data["options"]))
        fail(f"data.options.{key}", where, f"left out for the image data set {data['dataset']!r} (it takes no "
             "options)", data["options"][key])
    if cfg["run"]["device"] == "cpu" and cfg["data"]["on_device"] == "on":
        fail("data.on_device", where, "'auto' or 'off' with run.device = 'cpu'", "on")


def load_config_text(text: str, source: str = "<text>") -> dict:
    """Parse and validate TOML text (see :func:`validate_config`)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        fail("config", f"sfo train ({source})", "a valid TOML document", source, reason=str(exc))
    cfg = validate_config(raw, source)
    cfg["_source"] = source
    return cfg


def load_config(path, overrides=()) -> dict:
    """Read the TOML file at ``path``, apply ``overrides`` (``"table.key=value"`` strings), validate."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        fail("config", "sfo train", "an existing TOML file", path)
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    cfg = load_config_text(text, path)
    return apply_overrides(cfg, overrides) if overrides else cfg


# -- overrides -----------------------------------------------------------------------------------

def parse_override(text: str, source: str = "<text>") -> tuple[str, str, Any]:
    """``"table.key=value"`` → ``(table, key, value)``; the value is read as TOML, else as a string.

    >>> parse_override("schedule.tau=200"), parse_override("data.root=/data/cifar")
    (('schedule', 'tau', 200), ('data', 'root', '/data/cifar'))
    >>> parse_override("run.seeds=[0, 1]")
    ('run', 'seeds', [0, 1])
    """
    where = f"--set (config {source})"
    if not isinstance(text, str) or "=" not in text:
        fail("--set", where, "of the form table.key=value", text)
    dotted, value_text = text.split("=", 1)
    dotted = dotted.strip()
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        fail("--set", where, f"a dotted key table.key with a table among {', '.join(SCHEMA)}", dotted)
    table, key = parts
    if table not in SCHEMA:
        fail(dotted, where, f"a key of one of the tables [{'], ['.join(SCHEMA)}]", value_text)
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return table, key, value


def apply_overrides(cfg: dict, overrides) -> dict:
    """A new resolved config with ``overrides`` applied and everything validated again."""
    source = cfg.get("_source", "<text>")
    raw = {t: dict(v) for t, v in cfg.items() if t in SCHEMA}
    for text in overrides:
        table, key, value = parse_override(text, source)
        if key not in SCHEMA[table]:
            fail(f"{table}.{key}", f"the config {source}",
                 f"a key of [{table}] (known keys: {', '.join(SCHEMA[table])})", value)
        raw[table][key] = value
        if table == "schedule" and key == "policy":  # the old policy's keys would not fit the new one
            params = inspect.signature(_POLICIES.get(value, rule.constant)).parameters
            for k in list(raw["schedule"]):
                if k not in params and k not in ("policy", "check_order"):
                    raw["schedule"][k] = None
    raw = {t: {k: v for k, v in s.items() if v is not None} for t, s in raw.items()}
    out = validate_config(raw, source)
    out["_source"] = source
    return out


# -- writing -------------------------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def config_to_toml(cfg: dict, header: str = "") -> str:
    r"""The resolved configuration as TOML text (keys left unset are omitted); reads back equal.

    >>> cfg = load_config_text('[run]\nname = "x"\n[data]\ndataset = "cifar10"\n[model]\nname = "resnet18"\n'
    ...                        '[schedule]\npolicy = "constant"\nb0 = 128\neta0 = 0.1\ntau = 1000\n[train]\nepochs = 200')
    >>> load_config_text(config_to_toml(cfg)) == cfg
    True
    """
    lines = [f"# {line}" for line in header.splitlines()]
    for table in SCHEMA:
        if table not in cfg:
            continue
        lines.append(f"\n[{table}]")
        for k, v in cfg[table].items():
            if v is not None:
                lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def flatten_config(cfg: dict) -> dict:
    """``{"table.key": value}`` for every key set (tables and lists as JSON text).

    >>> flatten_config({"run": {"seeds": [0, 1]}, "schedule": {"b0": 8, "tau": None}})
    {'run.seeds': '[0, 1]', 'schedule.b0': 8}
    """
    out = {}
    for table, keys in cfg.items():
        if table.startswith("_") or not isinstance(keys, dict):
            continue
        for k, v in keys.items():
            if v is None:
                continue
            out[f"{table}.{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out
