r"""The run log of ``sfo train``: one JSON-lines file per seed, mirrored to TensorBoard.

Every record the run writes goes through :class:`RunLog`: the scheduler's per-check records
(``kind = "check"``), the training loop's events (``nonfinite``, ``skip``, ``rollback``,
``checkpoint``, …) and ``sfo train``'s own ('start'/'resume', 'eval', 'end'). Each gets ``epoch``
(training samples / n) and ``time`` (seconds of this run, summed over resumes). It is a *file
log* for :class:`~sfotorch.loop.TrainingLoop` (``path``, ``offset()``, ``prepare()``, ``emit()``), so
checkpoints store where their own record starts and ``--resume`` cuts the file back to it.

TensorBoard receives ‖∇f‖ against ε_m, b_m, η_m, the stage and the measurement SFO of every check,
and the evaluations, all against training samples (progress is counted in samples).
"""

from __future__ import annotations

import math
import os
import time

from sfotheory.validation import fail

from .sfolog import SFOLogWriter

__all__ = ["RunLog", "tensorboard_dir"]


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


def tensorboard_dir(cfg: dict, run_dir: str) -> str | None:
    """``run_dir/tb`` when ``run.tensorboard`` asks for event files and the package is there, else None.

    ``run.tensorboard = "on"`` without the tensorboard package is refused (before anything is
    written); ``"auto"`` then writes no event files.
    """
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
