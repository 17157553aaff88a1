r"""The training-step engine: batch → micro-batch accumulation → fault policy → update → rule → checkpoint.

One call of :meth:`TrainingLoop.step` is one optimizer step of Algorithm 2:

1. the next batch from the resizable loader (under DDP, this rank's shard of the global batch:
   :class:`~sfotorch.distributed.ShardedLoader`), at the b the scheduler last set;
2. its gradient as micro-batches of at most c samples, summed in float64
   (:class:`~sfotorch.accumulate.GradientAccumulator`) and all-reduced over ranks, so
   g_B = Σ_j S_j / b is the exact mean over the b global samples (on one process with b ≤ c this
   is one ordinary ``backward()`` into ``.grad``:
   :meth:`~sfotorch.accumulate.GradientAccumulator.backward_single`);
3. the **non-finite policy**: a NaN/inf loss Σf_i/b or gradient norm ‖g_B‖ (or, on a check
   step, a NaN/inf measured ‖∇f‖, or non-finite parameters at a checkpoint) never advances a
   stage; by ``on_nonfinite``:

   * ``"skip"`` — no update and no scheduler step: θ, the optimizer state, the stage and the
     rule's step count stay as they were. The batch *is* consumed (the sampler moves on, so the
     same bad batch is not retried forever); its b gradient evaluations are reported in
     ``skipped_samples``, apart from the scheduler's SFO (which counts updates only);
   * ``"stop"`` — raise :class:`DivergedError` naming what, the value and the step;
   * ``"rollback"`` — restore the last checkpoint (model, optimizer, rule, sampler position,
     RNG) and replay from there; the step that diverged is skipped when the replay reaches it
     (replay is deterministic, so it would diverge again; for a model without random layers the
     run then ends exactly as with ``"skip"`` — with dropout the replay does not draw the skipped
     step's random numbers, so the two differ by RNG only). After ``max_rollbacks`` rollbacks
     without a checkpoint in between, or with no checkpoint written yet, it stops as ``"stop"``;
   (for a NaN measured norm the update has already happened: ``skip`` keeps it and the stage,
   ``stop`` raises, ``rollback`` restores the checkpoint);
4. ``optimizer.step()`` and ``scheduler.step(loss=…, samples=b)`` — or, for a scheduler built with
   ``check_order="before_update"``, ``scheduler.before_update(…)`` first, as the scheduler documents;
5. every ``checkpoint_every`` steps, :func:`~sfotorch.checkpoint.save_checkpoint` (atomic; it
   refuses a non-finite state, so nothing saved is ever overwritten by a diverged one).

**Steps.** :attr:`TrainingLoop.steps` counts batches taken (updates + skipped steps); checkpoints
are written when it is a multiple of ``checkpoint_every``. The stall limit is the rule's
(``stall_limit``/``stall_action`` of the Schedule); the loop writes a ``"stall"`` record saying
what the rule did, and :meth:`TrainingLoop.run` ends when the rule stops the run.

**Log.** ``log`` (a list, a path for JSON lines, or an object with ``write(dict)``; rank 0 only)
receives one record per loop event: ``nonfinite``, ``skip``, ``rollback``, ``stall``, ``stop``,
``checkpoint``, each with ``step``, ``samples``, ``stage`` and ``event``. The per-check records
are the scheduler's.

**Checkpoint and resume.** The loop writes every checkpoint (:meth:`TrainingLoop.save`, also
the periodic ones) and reads it back (:meth:`TrainingLoop.resume`). When its log is a JSON-lines
file, a checkpoint stores its own 'checkpoint' record and the byte offset where that record
starts (the *log mark*); resuming cuts the log back to the end of that record
(:meth:`TrainingLoop.rewind_log`), so the replayed steps write their records once. The next step
continues bit-exactly: a run killed at any moment and resumed ends with the same parameters and
stage transitions as an uninterrupted one (tested by replay in ``tests/torch/test_checkpoint.py``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass

import torch

from sfotheory.rule import Event
from sfotheory.validation import ParameterTypeError, check_choice, check_integer, fail

from .accumulate import GradientAccumulator
from .checkpoint import load_checkpoint, save_checkpoint, state_digest
from .distributed import DistributedContext, all_reduce_accumulated, check_ranks_agree
from .scheduler import NonFiniteError
from .sfolog import SFOLogWriter, cut_log_after_step, rewind_log

__all__ = ["NONFINITE_POLICIES", "DivergedError", "StepResult", "TrainingLoop"]

NONFINITE_POLICIES = ("skip", "stop", "rollback")
_STALL_EVENTS = (Event.STALL_ADVANCED, Event.STALL_STOPPED, Event.STALL_WARNED)


class DivergedError(NonFiniteError):
    """A non-finite loss, gradient norm, measured norm or parameter stopped the run."""


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`TrainingLoop.step` did. ``samples`` is the global batch length."""

    step: int
    samples: int
    loss: float
    grad_norm: float
    event: Event | None = None
    skipped: bool = False
    rolled_back: bool = False
    checkpointed: bool = False


class TrainingLoop:
    """The training-step engine over explicit objects (see the module docstring).

    Parameters
    ----------
    model, optimizer : the torch model and optimizer.
    scheduler : a :class:`~sfotorch.scheduler.StageScheduler` driving ``loader`` (its monitor is
        called on check steps; under DDP use a collective one such as
        :class:`~sfotorch.distributed.DistributedExactMonitor`); the loop's ``on_nonfinite`` decides
        what a NaN/inf measured norm does, whichever ``on_nonfinite`` the scheduler was built with.
    loader : a :class:`~sfotorch.sampler.ResizableLoader` yielding ``(inputs, targets)``, or under
        DDP a :class:`~sfotorch.distributed.ShardedLoader` with the same world size as ``context``.
    loss_fn : reduction ``"mean"`` or ``"sum"``.
    max_micro_batch : c ≥ 1, the memory cap (:mod:`sfotorch.accumulate`).
    min_micro_batches : split every batch into at least this many micro-batches (≥ 2 gives the
        debiased monitor its tr Σ̂ at small b).
    context : :class:`~sfotorch.distributed.DistributedContext` (default: the current process group).
    checkpoint_path, checkpoint_every : where and every how many steps to checkpoint (0: never).
    on_nonfinite : ``"skip"``, ``"stop"`` or ``"rollback"``.
    max_rollbacks : rollbacks allowed without a new checkpoint in between.
    debiased : a monitor with ``update(sq_norm, trace_cov, b)`` (the debiased monitor). A step
        split into micro-batches (or run on several ranks) feeds it the all-reduced ‖g_B‖² and the
        tr Σ̂ of all the micro-batches, which that step computed anyway; a step of one micro-batch on
        one process runs the monitor's own ``backward(x, y)`` instead (per-sample-norm hooks or
        micro-batches on its statistics steps only, a plain backward on the others).
    on_micro_batch : ``f(step, j, k)`` called after micro-batch j of k of step ``step`` (0-based).
    log : a list, a path for JSON lines, or an object with ``write(dict)``. An object that also has
        ``path``, ``offset()``, ``prepare(record)`` and ``emit(record, line)`` (an
        :class:`~sfotorch.sfolog.SFOLogWriter`, or ``sfo train``'s run log) is a *file log*: its
        checkpoints store the log mark.
    verify_ranks : at each checkpoint, check that every rank holds the same rule state and θ.
    run_state : ``run_state()`` returns the caller's own plain content, saved as ``extra`` with
        every checkpoint the loop writes (``sfo train``'s evaluation window and clock); the log
        mark is then kept in that content, else with the loop's counters. :meth:`resume` gives it
        back in :attr:`checkpoint_extra` and reads the log mark from either place.
    """

    def __init__(self, model, optimizer, scheduler, loader, loss_fn, *, max_micro_batch: int,
                 min_micro_batches: int = 1, reduction: str | None = None, device=None, transform=None,
                 context: DistributedContext | None = None, checkpoint_path=None, checkpoint_every: int = 0,
                 on_nonfinite: str = "stop", max_rollbacks: int = 3, debiased=None, on_micro_batch=None,
                 log=None, verify_ranks: bool = True, run_state=None):
        where = "TrainingLoop"
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loader = loader
        self.context = context if context is not None else DistributedContext.current()
        if self.context.is_distributed and getattr(loader, "world_size", 1) != self.context.world_size:
            fail("loader", where, f"a ShardedLoader over world_size = {self.context.world_size} ranks",
                 f"{type(loader).__name__} with world_size={getattr(loader, 'world_size', 1)}")
        self.accumulator = GradientAccumulator(model, loss_fn, max_micro_batch=max_micro_batch, reduction=reduction,
                                               device=device, transform=transform,
                                               min_micro_batches=min_micro_batches)
        self.checkpoint_every = check_integer(checkpoint_every, "checkpoint_every", where, minimum=0)
        self.checkpoint_path = None if checkpoint_path is None else os.fspath(checkpoint_path)
        if self.checkpoint_every and self.checkpoint_path is None:
            fail("checkpoint_path", where, "given when checkpoint_every > 0", None)
        self.on_nonfinite = check_choice(on_nonfinite, NONFINITE_POLICIES, "on_nonfinite", where)
        if self.on_nonfinite == "rollback" and not self.checkpoint_every:
            fail("checkpoint_every", where, ">= 1 with on_nonfinite='rollback' (there must be checkpoints)", 0)
        self.max_rollbacks = check_integer(max_rollbacks, "max_rollbacks", where, minimum=1)
        if debiased is not None and not callable(getattr(debiased, "update", None)):
            fail("debiased", where, "None or a monitor with update(sq_norm, trace_cov, batch_size)",
                 type(debiased).__name__)
        self.debiased = debiased
        self.on_micro_batch = on_micro_batch
        self.verify_ranks = bool(verify_ranks)
        if run_state is not None and not callable(run_state):
            fail("run_state", where, "None or a callable that returns the content to save with a checkpoint",
                 type(run_state).__name__, cls=ParameterTypeError)
        self.run_state = run_state
        self._log = SFOLogWriter(log) if isinstance(log, (str, os.PathLike)) else log
        # explicit loop state (saved in checkpoints)
        self.steps = 0
        self.skipped = 0
        self.skipped_samples = 0
        self.rollbacks = 0
        self.skip_steps: set[int] = set()
        self._rollbacks_since_checkpoint = 0
        self._stop_recorded = False
        self._iterator = None
        self.checkpoint_extra: dict | None = None
        #: ``steps`` when the last checkpoint was written or loaded (None: none yet)
        self.checkpointed_at: int | None = None
        self._log_mark: tuple[int, str] | None = None     # of the checkpoint the last resume loaded

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The loop's counters (plain ints and a list)."""
        return {"steps": self.steps, "skipped": self.skipped, "skipped_samples": self.skipped_samples,
                "rollbacks": self.rollbacks, "skip_steps": sorted(self.skip_steps)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters (the ``log_start``/``log_record`` keys :meth:`save` adds are accepted)."""
        keys = {"steps", "skipped", "skipped_samples", "rollbacks", "skip_steps"}
        if not isinstance(state, dict) or set(state) - {"log_start", "log_record"} != keys:
            fail("state", "TrainingLoop.load_state_dict", f"a dict with the keys {sorted(keys)}", state)
        self.steps = int(state["steps"])
        self.skipped = int(state["skipped"])
        self.skipped_samples = int(state["skipped_samples"])
        self.rollbacks = int(state["rollbacks"])
        self.skip_steps = {int(s) for s in state["skip_steps"]}
        self._iterator = None

    def save(self, path=None, *, extra: dict | None = None) -> str:
        """Write a checkpoint of the whole run now (refused if θ is not finite).

        ``extra``: plain content saved with it (default: ``run_state()`` when given; :meth:`resume`
        gives it back in :attr:`checkpoint_extra`). With a file log, the checkpoint also stores its
        'checkpoint' record and the byte offset where it starts, and the record is written after
        the checkpoint (see the module docstring).
        """
        path = self.checkpoint_path if path is None else os.fspath(path)
        if path is None:
            fail("path", "TrainingLoop.save", "given (or checkpoint_path set)", None)
        if self.verify_ranks and self.context.is_distributed:
            check_ranks_agree(self.context, self.scheduler.state_dict()["state"], "the scheduler's rule state")
            check_ranks_agree(self.context, state_digest(self.model.state_dict()), "the model state")
        loop_state = self.state_dict()
        if extra is None and self.run_state is not None:
            extra = self.run_state()
        if self.run_state is not None:
            extra = dict(extra)
        record = self._make_record("checkpoint", path=path)
        line = None
        if record is not None and self._is_file_log():
            record = self._log.prepare(record)
            line = SFOLogWriter.encode(record)
            mark = {"log_start": self._log.offset(), "log_record": line.decode("utf-8")}
            (extra if self.run_state is not None else loop_state).update(mark)
        save_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                        loader=self.loader, loop_state=loop_state, extra=extra, context=self.context)
        self._rollbacks_since_checkpoint = 0
        self.checkpointed_at = self.steps
        if line is not None:
            self._log.emit(record, line)
        elif record is not None:
            self._write(record)
        return path

    def resume(self, path=None, *, cut_log: bool = True, **kwargs) -> bool:
        """Load the checkpoint at ``path`` (default ``checkpoint_path``) if it exists; True if loaded.

        Its ``extra`` content is in :attr:`checkpoint_extra`; with ``cut_log`` a file log is cut
        back to the checkpoint's own record (:meth:`rewind_log`) when the checkpoint holds its log
        mark. A rollback does not cut: the log keeps the divergence and the 'rollback' record, and
        the replayed steps follow it. ``kwargs`` go to :func:`~sfotorch.checkpoint.load_checkpoint`,
        which checks everything before it changes anything.
        """
        path = self.checkpoint_path if path is None else os.fspath(path)
        if path is None or not os.path.exists(path):
            return False
        content = load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                  loader=self.loader, context=self.context, **kwargs)
        loop_state = content.get("loop")
        if loop_state is not None:
            self.load_state_dict(loop_state)
        self.checkpoint_extra = content.get("extra")
        self._log_mark = None
        for holder in (loop_state, self.checkpoint_extra):
            if isinstance(holder, dict) and holder.get("log_start") is not None:
                self._log_mark = (int(holder["log_start"]), holder["log_record"])
                break
        self.checkpointed_at = self.steps
        self._iterator = None
        if cut_log and self._log_mark is not None:
            self.rewind_log()
        return True

    def rewind_log(self) -> int | None:
        """Cut the file log back to the checkpoint the last :meth:`resume` loaded; return how many
        records were dropped (None: nothing cut — no file log, another rank than 0, or a file that
        does not hold the checkpoint's record, :func:`~sfotorch.sfolog.rewind_log`).

        The cut is at the end of the checkpoint's own record, exact whatever the records' step
        fields say (the scheduler's records carry the rule's step, which lags the loop's by the
        skipped steps). A checkpoint without a log mark keeps the records of steps ≤ :attr:`steps`
        except 'end' (:func:`~sfotorch.sfolog.cut_log_after_step`).
        """
        if not self._is_file_log() or self.context.rank != 0 or not os.path.exists(self._log.path):
            return None
        if isinstance(self._log, SFOLogWriter):
            self._log.offset()                    # flush what this writer holds before the cut
        if self._log_mark is None:
            return cut_log_after_step(self._log.path, self.steps)
        start, record = self._log_mark
        return rewind_log(self._log.path, start, record.encode("utf-8"))

    def _is_file_log(self) -> bool:
        return all(callable(getattr(self._log, name, None)) for name in ("offset", "prepare", "emit")) \
            and getattr(self._log, "path", None) is not None

    # -- one step --------------------------------------------------------------------------------

    def _next_batch(self):
        while True:
            if self._iterator is None:
                self._iterator = iter(self.loader)
            try:
                return next(self._iterator)
            except StopIteration:
                self._iterator = None

    def step(self) -> StepResult:
        """Take one step (see the module docstring)."""
        t = self.steps
        batch = self._next_batch()
        b_global = int(self.loader.last_batch_len)
        self.steps += 1
        if t in self.skip_steps:        # replay after a rollback reached the step that diverged
            self.skip_steps.discard(t)
            result = self._skip(t, b_global, math.nan, math.nan, reason="diverged before the rollback")
            return self._maybe_checkpoint(result)
        inputs, targets = (None, None) if batch is None else batch
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.accumulator.params:          # also trainable parameters the optimizer does not hold
            if p.grad is not None:
                p.grad = None
        hook, acc, own, before = None, None, None, None
        if self.on_micro_batch is not None:
            def hook(j, k, _t=t):
                self.on_micro_batch(_t, j, k)
        if not self.context.is_distributed and inputs is not None and self.accumulator.is_single(int(inputs.shape[0])):
            # one micro-batch on one process: a plain backward already gives g_B in .grad
            b = int(inputs.shape[0])
            own = getattr(self.debiased, "backward", None)     # it records its own statistics
            before = self.debiased.state_dict() if own is not None and hasattr(self.debiased, "load_state_dict") else None
            loss, sq_norm = self.accumulator.backward_single(inputs, targets, backward=own)
            trace_cov = None
            if hook is not None:
                hook(0, 1)
        else:
            acc = all_reduce_accumulated(self.accumulator.accumulate(inputs, targets, on_micro_batch=hook),
                                         self.context)
            b = acc.samples
            loss, sq_norm = acc.loss_mean(b), acc.sq_norm(b)
            trace_cov = acc.trace_cov() if acc.micro_batches >= 2 else None
        grad_norm = math.sqrt(sq_norm) if math.isfinite(sq_norm) else math.nan
        if not math.isfinite(loss) or not math.isfinite(grad_norm):
            if before is not None:     # as on the split path: the monitor does not see a step that is not taken
                self.debiased.load_state_dict(before)
            what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", grad_norm)
            result = self._nonfinite(t, b, what, value, loss, grad_norm)
            return result if result.rolled_back else self._maybe_checkpoint(result)
        if acc is not None:
            acc.write_grad(self.accumulator.params, b)
        if self.debiased is not None and own is None:
            self.debiased.update(sq_norm, trace_cov, b)
        if self.scheduler.check_order == "before_update":
            event = self._apply_rule(self.scheduler.before_update, loss=loss, samples=b)
            self.optimizer.step()
            self.scheduler.step()
        else:
            self.optimizer.step()
            event = self._apply_rule(self.scheduler.step, loss=loss, samples=b)
        if event == Event.NONFINITE:
            result = self._nonfinite(t, b, "measured norm", self.scheduler.last_norm, loss, grad_norm, updated=True)
            return result if result.rolled_back else self._maybe_checkpoint(result)
        if event in _STALL_EVENTS:
            sched = self.scheduler.schedule
            self._record("stall", rule_event=event.name, stall_limit=sched.stall_limit, action=sched.stall_action,
                         stopped=self.scheduler.stopped,
                         message=f"a stage reached the stall limit of {sched.stall_limit} steps without "
                                 f"‖∇f‖ <= eps_m; the rule's action (stall_action={sched.stall_action!r}): "
                                 f"{event.name}")
        result = StepResult(step=t + 1, samples=b, loss=loss, grad_norm=grad_norm, event=event)
        return self._maybe_checkpoint(result)

    @staticmethod
    def _apply_rule(call, **kwargs) -> Event:
        """The scheduler's step; a NaN/inf measured norm comes back as ``Event.NONFINITE`` for the
        loop's policy whatever the scheduler's ``on_nonfinite``: its error (raised once the rule has
        counted the step) becomes the warning that ``on_nonfinite="warn"`` gives."""
        try:
            return call(**kwargs)
        except NonFiniteError as err:
            warnings.warn(str(err), RuntimeWarning, stacklevel=4)
            return Event.NONFINITE

    def _maybe_checkpoint(self, result: StepResult) -> StepResult:
        if not (self.checkpoint_every and self.steps % self.checkpoint_every == 0):
            return result
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return self._nonfinite(self.steps - 1, result.samples, "parameters", math.nan, result.loss,
                                   result.grad_norm, updated=True)
        self.save()
        return dataclasses.replace(result, checkpointed=True)

    # -- faults ----------------------------------------------------------------------------------

    def _skip(self, t: int, b: int, loss: float, grad_norm: float, *, reason: str) -> StepResult:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        self.skipped_samples += b
        self._record("skip", reason=reason)
        return StepResult(step=t + 1, samples=b, loss=loss, grad_norm=grad_norm, skipped=True)

    def _nonfinite(self, t: int, b: int, what: str, value, loss: float, grad_norm: float, *,
                   updated: bool = False) -> StepResult:
        self._record("nonfinite", what=what, value=value, policy=self.on_nonfinite)
        message = (f"TrainingLoop step {t + 1}: the {what} is {value!r} (stage {self.scheduler.stage}, "
                   f"b = {b}, lr = {self.scheduler.lr:g}); a non-finite value never advances a stage")
        saved = self.checkpoint_path if self.checkpoint_path and os.path.exists(self.checkpoint_path) else None
        if self.on_nonfinite == "skip":
            if updated:   # the update happened before the measurement: keep it, the rule kept the stage
                return StepResult(step=t + 1, samples=b, loss=loss, grad_norm=grad_norm, event=Event.NONFINITE)
            return self._skip(t, b, loss, grad_norm, reason=what)
        if self.on_nonfinite == "rollback" and saved is not None \
                and self._rollbacks_since_checkpoint < self.max_rollbacks:
            skip = self.skip_steps | {t}
            rollbacks = self.rollbacks + 1
            since = self._rollbacks_since_checkpoint + 1
            self.resume(saved, cut_log=False)
            self.skip_steps = skip | self.skip_steps
            self.rollbacks = rollbacks
            self._rollbacks_since_checkpoint = since
            self._record("rollback", to_step=self.steps, path=saved, diverged_step=t + 1)
            return StepResult(step=t + 1, samples=b, loss=loss, grad_norm=grad_norm, rolled_back=True)
        if self.on_nonfinite == "rollback":
            why = ("no checkpoint written yet" if saved is None
                   else f"{self.max_rollbacks} rollbacks without a new checkpoint")
            message += f"; no rollback possible ({why})"
        self._record("stop", what=what, value=value)
        raise DivergedError(message + (f"; the last checkpoint {saved!r} is untouched" if saved else ""))

    def _record(self, kind: str, **fields) -> None:
        rec = self._make_record(kind, **fields)
        if rec is not None:
            self._write(rec)

    def _make_record(self, kind: str, **fields) -> dict | None:
        """The loop event as a log record (None when there is no log, or on ranks other than 0)."""
        if self._log is None or self.context.rank != 0:
            return None
        st = self.scheduler.state
        rec = {"kind": kind, "step": self.steps, "samples": int(st.samples), "stage": int(st.stage), **fields}
        for k, v in rec.items():
            if isinstance(v, float) and not math.isfinite(v):
                rec[k] = repr(v)
        return rec

    def _write(self, rec: dict) -> None:
        if isinstance(self._log, list):
            self._log.append(rec)
        else:
            self._log.write(rec)

    # -- many steps ------------------------------------------------------------------------------

    def run(self, *, max_steps: int | None = None, max_samples: int | None = None) -> list[StepResult]:
        """Step until ``steps`` reaches ``max_steps``, the rule's samples reach ``max_samples``,
        or the rule stops the run (stall limit with ``stall_action="stop"``)."""
        if max_steps is None and max_samples is None:
            fail("max_steps", "TrainingLoop.run", "given (or max_samples)", None)
        results = []
        while not self.scheduler.stopped:
            if max_steps is not None and self.steps >= max_steps:
                break
            if max_samples is not None and int(self.scheduler.state.samples) >= max_samples:
                break
            results.append(self.step())
        if self.scheduler.stopped and not self._stop_recorded:
            self._stop_recorded = True
            self._record("stop", what="stall limit", rule_event="STALL_STOPPED",
                         message="the rule stopped the run: the stall limit was reached with stall_action='stop'")
        return results

    def close(self) -> None:
        if isinstance(self._log, SFOLogWriter):
            self._log.close()
