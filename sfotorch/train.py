r"""The ``sfo train`` driver: one validated config (:mod:`sfotorch.config`) → a run folder per seed.

The parts, one module each: :mod:`sfotorch.device` (device and environment),
:mod:`sfotorch.components` (data, model, optimizer, loader, monitor, scheduler and
:class:`~sfotorch.loop.TrainingLoop` built from the configuration), :mod:`sfotorch.runlog` (the
JSON-lines log and TensorBoard), :mod:`sfotorch.progress` (the progress bar),
:mod:`sfotorch.evaluation` (the test evaluation) and :mod:`sfotorch.summary` (per-seed and
multi-seed summaries). This module checks a run, then drives its seeds through their steps.

Run folder (``OUT`` = ``run.out_dir``, default ``runs/NAME``)::

    OUT/config.toml            the resolved configuration (after --set overrides)
    OUT/summary.csv            one row per seed, then rows 'mean' and 'std' (sample std, n − 1)
    OUT/seedS/log.jsonl        JSON lines: 'start'/'resume', 'calibration' (schedule.eps0 = "auto":
                               the measured L, σ², C₂, ε₀), every scheduler record ('check'),
                               the loop's events, 'eval', 'checkpoint', 'end'
    OUT/seedS/summary.csv      one row: results, SFO, versions, seed and the flattened config
    OUT/seedS/checkpoint.pt    everything needed to continue bit-exactly (``--resume``)
    OUT/seedS/tb/              TensorBoard event files (when tensorboard is installed)

**Refused work writes nothing.** Every seed is built and, on ``--resume``, loaded from its
checkpoint before the first file is written.

**Progress is counted in samples.** Training SFO (Σ|B_t|) and measurement SFO (what the monitor
spent) are logged apart in every record, with ``epoch`` = training samples / n.

**Order within a step.** ``TrainingLoop.step()`` (which calls the scheduler and so writes the
'check' record), then the test evaluation if one is due ('eval'), then the checkpoint
('checkpoint'). A checkpoint at step S is therefore written after every record of step S; the
loop stores in it the byte offset at which its own 'checkpoint' record starts, so ``--resume``
cuts the log back to the end of that record (dropping the later records and a previous 'end')
and the replay writes them again: no record is lost or duplicated, also after skipped steps.
"""

from __future__ import annotations

import math
import os
import shutil
import tomllib
from dataclasses import dataclass

from sfotheory.validation import fail

from .components import Components, build_components
from .config import SCHEMA, config_to_toml, load_config_text
from .device import resolve_device, torch_threads, versions
from .evaluation import evaluate
from .progress import Progress
from .runlog import RunLog, tensorboard_dir
from .summary import SUMMARY_FIELDS, format_summary, seed_summary, seeds_table, summarize_seeds, write_csv

__all__ = ["Components", "Progress", "RunLog", "SUMMARY_FIELDS", "build_components", "evaluate", "format_summary",
           "resolve_device", "train", "train_seed", "versions"]

_TABLES_FIXED_ON_RESUME = ("data", "model", "optimizer", "schedule", "monitor")
#: the [monitor] keys each kind reads: only these are held fixed on --resume (a default of a key the
#: run's monitor never read, e.g. stats_every for an exact monitor, may change between versions)
_MONITOR_KEYS = {"exact": ("kind", "batch_size"),
                 "subsampled": ("kind", "batch_size", "sample_size", "fresh", "bound", "confidence", "micro_batches"),
                 "sequential": ("kind", "batch_size", "initial_size", "blocks", "confidence", "tolerance"),
                 "debiased": ("kind", "micro_batches", "beta", "confidence", "stats_every", "variance_source",
                              "confirm", "batch_size", "initial_size", "blocks", "tolerance")}
_SEQUENTIAL_ONLY = ("batch_size", "initial_size", "blocks", "tolerance")   # debiased: read by its test only


# -- many seeds ------------------------------------------------------------------------------------

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
    # The later seeds' builds are checks only, made before the first seed's, whose build then runs
    # (building seeds the RNGs, so each run starts as built).
    if resume:
        _check_resumable(cfg, out_dir)
    env = resolve_device(cfg)
    rows = []
    with torch_threads(env["threads"]):
        for seed, run_dir in list(zip(seeds, run_dirs))[1:]:
            _prepare_seed(cfg, seed, run_dir, env, resume=resume)
        prepared = _prepare_seed(cfg, seeds[0], run_dirs[0], env, resume=resume)
        _write_config(cfg, out_dir)
        for i, (seed, run_dir) in enumerate(zip(seeds, run_dirs)):
            if i:
                prepared = _prepare_seed(cfg, seed, run_dir, env, resume=resume)
            rows.append(_SeedRun(cfg, seed, prepared, env).run(progress_stream=progress_stream, on_step=on_step))
            prepared = None          # this seed's model and data go before the next seed's are built
    stats = summarize_seeds(rows)
    write_csv(os.path.join(out_dir, "summary.csv"), seeds_table(rows, stats["mean"], stats["std"]))
    return {"out_dir": out_dir, "runs": rows, **stats}


def _check_resumable(cfg: dict, out_dir: str) -> None:
    """``--resume`` keeps the tables that define the run as ``out_dir/config.toml`` has them."""
    path = os.path.join(out_dir, "config.toml")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    saved = load_config_text(text, path)
    if saved["monitor"]["kind"] == "debiased" and "confirm" not in tomllib.loads(text).get("monitor", {}):
        # started before [monitor] confirm existed: its debiased monitor decided alone, and so it continues
        saved["monitor"]["confirm"] = cfg["monitor"]["confirm"] = "none"

    def keys(table):
        if table != "monitor":
            return SCHEMA[table]
        kind = saved["monitor"]["kind"]
        if kind == "debiased" and saved["monitor"]["confirm"] == "none":     # no sequential test to hold fixed
            return tuple(k for k in _MONITOR_KEYS[kind] if k not in _SEQUENTIAL_ONLY)
        return _MONITOR_KEYS[kind]

    diffs = {f"{t}.{k}": {"saved": saved[t].get(k), "now": cfg[t].get(k)}
             for t in _TABLES_FIXED_ON_RESUME for k in keys(t) if saved[t].get(k) != cfg[t].get(k)}
    if diffs:
        fail("--resume", "sfo train", f"given the configuration the run in {out_dir} was started with "
             f"(tables {', '.join(_TABLES_FIXED_ON_RESUME)} must not change; [run], [train] and [eval] may)",
             diffs)


def _write_config(cfg: dict, out_dir: str) -> None:
    """``out_dir/config.toml`` (the resolved configuration) and a copy of the file it came from."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.toml"), "w", encoding="utf-8") as fh:
        fh.write(config_to_toml(cfg, header=f"resolved from {cfg.get('_source')} by sfo train"))
    if cfg.get("_source") and os.path.isfile(cfg["_source"]):
        shutil.copyfile(cfg["_source"], os.path.join(out_dir, "config.source.toml"))


# -- one seed --------------------------------------------------------------------------------------

def train_seed(cfg: dict, seed: int, run_dir: str, *, resume: bool = False, progress_stream=None,
               on_step=None) -> dict:
    """Train one seed of ``cfg`` into ``run_dir``; return its summary row (also written as CSV).

    ``resume``: continue from ``run_dir/checkpoint.pt`` if it exists (else start afresh).
    ``on_step(info)`` is called after every step with the progress fields (step, samples, stage,
    b, eta, …); an exception raised there stops the run as a crash would (the tests use it).
    The process's torch thread count is set for the run (``run.threads``) and restored after it.
    """
    env = resolve_device(cfg)
    with torch_threads(env["threads"]):
        prepared = _prepare_seed(cfg, seed, run_dir, env, resume=resume)
        return _SeedRun(cfg, seed, prepared, env).run(progress_stream=progress_stream, on_step=on_step)


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
    tb_dir = tensorboard_dir(cfg, run_dir)
    log = RunLog(log_path)
    built = build_components(cfg, seed, env, ckpt, log, resume=resume)
    # the run's own state, saved with every checkpoint: the training loss since the last evaluation,
    # that evaluation, and the clock of the run and of its measurements
    extra = {"window_loss": 0.0, "window_samples": 0, "last_eval_step": -1, "last_eval": {}, "time": 0.0,
             "check_s": 0.0}
    # the log is cut when the run starts, after every seed has been checked
    resuming = resume and built.loop.resume(ckpt, cut_log=False)
    if resuming:
        extra.update(built.loop.checkpoint_extra or {})
    return _PreparedSeed(run_dir, built, log, extra, resuming, tb_dir)


def _max_samples(cfg: dict, n: int) -> int | None:
    limits = []
    if cfg["train"]["epochs"]:
        limits.append(math.ceil(cfg["train"]["epochs"] * n))
    if cfg["train"]["max_samples"]:
        limits.append(cfg["train"]["max_samples"])
    return min(limits) if limits else None


class _SeedRun:
    """One prepared seed run to its end: the log opened, the steps with their evaluations and
    checkpoints, the last evaluation and checkpoint, the 'end' record and the summary."""

    def __init__(self, cfg: dict, seed: int, prepared: _PreparedSeed, env: dict):
        self.cfg, self.seed, self.env = cfg, seed, env
        self.run_dir, self.built, self.log = prepared.run_dir, prepared.built, prepared.log
        self.extra, self.resuming, self.tensorboard_dir = prepared.extra, prepared.resuming, prepared.tensorboard_dir
        self.n = len(self.built.train_data)
        self.max_samples = _max_samples(cfg, self.n)
        self.max_steps = cfg["train"]["max_steps"] or None
        self.versions = None

    def run(self, *, progress_stream, on_step) -> dict:
        from .loop import DivergedError

        cfg, loop = self.cfg, self.built.loop
        self.start()
        progress = Progress(progress_stream, cfg["run"]["progress_every"],
                            label=f"[seed {self.seed}] " if len(cfg["run"]["seeds"]) > 1 else "",
                            total=self.max_samples)
        if self.built.calibration is not None and progress.every > 0:
            print(f"{progress.label}{self.built.calibration.summary()}", file=progress.stream, flush=True)
        status, message = "finished", ""
        try:
            # every checkpoint (with rollback also the loop's periodic ones) holds the run's own state
            loop.run_state = self.run_state
            self.steps(progress, on_step)
        except DivergedError as exc:
            status, message = "diverged", str(exc)
        except BaseException:
            progress.close()
            self.log.close()
            raise
        if status == "finished":
            if self.built.scheduler.stopped:
                status = "stopped"
            if self.extra["last_eval_step"] != loop.steps:
                self.evaluate()
            if loop.checkpointed_at != loop.steps:
                loop.save()
        summary = self.finish(status, message)
        progress.update(self.info(), force=True)
        progress.close()
        return summary

    def start(self) -> None:
        """Cut the log back to the checkpoint (on resume), open it and write 'start' or 'resume'."""
        cfg, env, built, log = self.cfg, self.env, self.built, self.log
        sched, loop = built.scheduler, built.loop
        os.makedirs(self.run_dir, exist_ok=True)
        if self.resuming:
            dropped = loop.rewind_log() or 0
        log.open(self.n, mode="a" if self.resuming else "w", tensorboard_dir=self.tensorboard_dir,
                 purge_step=int(sched.state.samples) if self.resuming else None, time_offset=self.extra["time"])
        built.monitor.seconds = self.extra["check_s"]
        info_env = {"device": str(env["device"]), "threads": env["threads"], "amp": env["amp"],
                    "channels_last": env["channels_last"], "data_on_device": env["on_device"],
                    "compile": cfg["run"]["compile"], "max_micro_batch": built.max_micro_batch}
        self.versions = versions()
        if self.resuming:
            log.write({"kind": "resume", "step": loop.steps, "samples": int(sched.state.samples),
                       "dropped_records": dropped, **info_env, "versions": self.versions})
        else:
            log.write({"kind": "start", "step": 0, "samples": 0, "seed": self.seed, "n": self.n,
                       "n_test": len(built.test_data), "model": cfg["model"]["name"],
                       "dataset": cfg["data"]["dataset"], "schedule": sched.schedule.to_dict(),
                       "monitor": built.monitor.name, **info_env, "versions": self.versions,
                       "config": {k: v for k, v in cfg.items() if k in SCHEMA}})
            if built.calibration is not None:      # schedule.eps0 = "auto": what was measured (kept on --resume)
                log.write({"kind": "calibration", "step": 0, "samples": 0, **built.calibration.to_dict()})

    def steps(self, progress, on_step) -> None:
        """Step until the rule stops the run or ``train``'s limit is reached; evaluate and
        checkpoint as ``[eval]`` and ``run.checkpoint_every`` ask (in that order)."""
        cfg, built, log, extra = self.cfg, self.built, self.log, self.extra
        sched, loop, loader = built.scheduler, built.loop, built.loader
        every, every_epochs = cfg["eval"]["every"], cfg["eval"]["epochs"]
        ckpt_every = cfg["run"]["checkpoint_every"] if cfg["train"]["on_nonfinite"] != "rollback" else 0
        while not sched.stopped:
            if self.max_steps is not None and loop.steps >= self.max_steps:
                break
            if self.max_samples is not None and int(sched.state.samples) >= self.max_samples:
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
                self.evaluate()
            if ckpt_every and loop.steps % ckpt_every == 0:
                loop.save()
            step_info = self.info()
            progress.update(step_info)
            if on_step is not None:
                on_step(step_info)

    def evaluate(self) -> None:
        """The test evaluation now, with the mean training loss since the last one: an 'eval' record."""
        built, extra, loop = self.built, self.extra, self.built.loop
        res = evaluate(built.model, built.test_data, batch_size=self.cfg["eval"]["batch_size"],
                       device=self.env["device"], transform=built.transform)
        train_loss = extra["window_loss"] / extra["window_samples"] if extra["window_samples"] else None
        st = built.scheduler.state
        rec = {"kind": "eval", "step": loop.steps, "samples": int(st.samples), "check_samples": int(st.check_samples),
               "sfo_total": int(st.samples) + int(st.check_samples), "stage": int(st.stage), **res,
               "train_loss": train_loss, "n_test": len(built.test_data)}
        self.log.write(rec)
        extra.update(window_loss=0.0, window_samples=0, last_eval_step=loop.steps,
                     last_eval={k: rec[k] for k in ("test_acc", "test_loss", "train_loss")})

    def run_state(self) -> dict:
        """What a checkpoint saves beside the loop's own state (TrainingLoop's ``run_state``)."""
        self.extra["time"] = self.log.elapsed()
        self.extra["check_s"] = self.built.monitor.seconds
        return self.extra

    def info(self) -> dict:
        """The progress fields after a step (the progress bar's and ``on_step``'s)."""
        st, loop, log, monitor = self.built.scheduler.state, self.built.loop, self.log, self.built.monitor
        return {"step": loop.steps, "samples": int(st.samples), "check": int(st.check_samples),
                "epoch": int(st.samples) / self.n, "stage": int(st.stage), "b": int(st.batch_size),
                "eta": float(st.lr), "eps_m": float(st.eps_m),
                "norm": None if log.last_check is None else log.last_check["norm"],
                "fraction": (int(st.samples) / self.max_samples) if self.max_samples else
                            (loop.steps / self.max_steps if self.max_steps else None),
                "check_s": monitor.seconds,
                "samples_per_s": int(st.samples) / max(log.elapsed() - monitor.seconds, 1e-9)}

    def finish(self, status: str, message: str) -> dict:
        """The summary row, the 'end' record and ``run_dir/summary.csv``."""
        summary = seed_summary(self.cfg, self.seed, self.run_dir, self.built, self.log, self.extra, status, message,
                               self.n, self.versions, self.env)
        st = self.built.scheduler.state
        self.log.write({"kind": "end", "step": self.built.loop.steps, "samples": int(st.samples), "status": status,
                        "message": message, "summary": {k: summary[k] for k in SUMMARY_FIELDS}})
        self.log.close()
        write_csv(os.path.join(self.run_dir, "summary.csv"), [summary])
        return summary
