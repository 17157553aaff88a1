r"""SFO accounting and the JSON-lines check log.

The SFO complexity of a run is the number of stochastic gradient evaluations,
N = Σ_t b_t (training) — counted here with the *true* size of every batch — plus,
reported separately, the evaluations spent measuring ‖∇f(θ)‖ on check steps
(the reference code left the second out):

.. math::

    N_{\mathrm{train}} = \sum_t |B_t|, \qquad
    N_{\mathrm{measure}} = \sum_{\text{checks } k} c_k, \qquad
    N = N_{\mathrm{train}} + N_{\mathrm{measure}},

with |B_t| the samples of step t and c_k the cost the monitor reported for check k.
:class:`SFOAccount` keeps both per stage m and in total.

A log has one JSON object per line (:data:`LOG_FIELDS`): one per check step and one
per stage change that happens off a check step (periodic schedules). Non-finite
norms are written as ``NaN``/``Infinity`` (Python's :mod:`json` reads them back).

>>> acc = SFOAccount()
>>> acc.add(stage=0, samples=8, check_cost=0)
>>> acc.add(stage=0, samples=8, check_cost=100, checked=True)
>>> acc.add(stage=1, samples=5, check_cost=0)
>>> acc.totals()
{'steps': 3, 'checks': 1, 'train': 21, 'measure': 100, 'total': 121}
>>> acc.stage(0)["measure"], acc.stage(1)["train"]
(100, 5)
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Iterable

from sfotheory.validation import check_choice, check_integer, fail

__all__ = ["LEGACY_KEYS", "LOG_FIELDS", "SFOAccount", "SFOLogWriter", "cut_log_after_step", "log_columns", "log_table", "plot_log",
           "read_log", "rewind_log", "truncate_log"]

#: The fields of one log record, in order. ``stage``, ``b``, ``eta``, ``eps_m`` are the values the
#: step ran with (the norm was compared with ``eps_m``); ``*_next`` those after the rule was applied.
#: ``samples``/``check_samples`` are the total training/measurement SFO after the step,
#: ``stage_samples``/``stage_check_samples`` the same within the stage the step ran in.
LOG_FIELDS = ("step", "samples", "check_samples", "sfo_total", "stage", "b", "eta", "eps_m", "norm", "monitor",
              "event", "check", "stage_samples", "stage_check_samples", "stage_next", "b_next", "eta_next",
              "eps_m_next")

#: Keys of logs written before ε_m had one name, and the name :func:`read_log` gives them.
LEGACY_KEYS = {"eps_next": "eps_m_next"}


class SFOAccount:
    """Training and measurement gradient evaluations per stage m and in total."""

    _KEYS = ("steps", "checks", "train", "measure")

    def __init__(self):
        self._stages: dict[int, dict[str, int]] = {}

    def add(self, *, stage: int, samples: int, check_cost: int = 0, checked: bool = False) -> None:
        """Count one step of ``stage`` that used ``samples`` training samples and ``check_cost`` to measure."""
        m = int(stage)
        row = self._stages.get(m)
        if row is None:
            row = self._stages[m] = dict.fromkeys(self._KEYS, 0)
        row["steps"] += 1
        row["checks"] += int(bool(checked))
        row["train"] += int(samples)
        row["measure"] += int(check_cost)

    def stage(self, m: int) -> dict[str, int]:
        """Counts of stage m (zeros for a stage not reached)."""
        return dict(self._stages.get(int(m), dict.fromkeys(self._KEYS, 0)))

    def per_stage(self) -> list[dict]:
        """One row per stage reached: ``{stage, steps, checks, train, measure, total}``."""
        return [{"stage": m, **row, "total": row["train"] + row["measure"]} for m, row in sorted(self._stages.items())]

    def totals(self) -> dict[str, int]:
        """``{steps, checks, train, measure, total}`` over all stages."""
        out = {k: sum(r[k] for r in self._stages.values()) for k in self._KEYS}
        out["total"] = out["train"] + out["measure"]
        return out

    def state_dict(self) -> dict:
        return {str(m): dict(row) for m, row in self._stages.items()}

    def load_state_dict(self, state: dict) -> None:
        stages = {}
        for m, row in state.items():
            if set(row) != set(self._KEYS):
                fail("state_dict", "SFOAccount.load_state_dict", f"rows with exactly the keys {list(self._KEYS)}",
                     sorted(row))
            stages[int(m)] = {k: int(row[k]) for k in self._KEYS}
        self._stages = stages


class SFOLogWriter:
    """Appends one JSON object per line to ``path`` (flushed per record; records are per check).

    The file is opened for appending (O_APPEND), so several writers of one path add whole lines
    in the order they write them. ``offset()`` is the file's length in bytes after the records so
    far; a checkpoint stores the offset at which its own record starts and that record, and a
    resume cuts the file back to the end of it (:func:`rewind_log`): the replayed steps then write
    their records once.
    """

    def __init__(self, path: str | os.PathLike, *, mode: str = "a"):
        check_choice(mode, ("a", "w"), "mode", "SFOLogWriter")
        self.path = os.fspath(path)
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if mode == "w":
            open(self.path, "wb").close()
        self._file = open(self.path, "ab")

    @staticmethod
    def encode(record: dict) -> bytes:
        """The record's line as written (UTF-8 JSON and a newline)."""
        return (json.dumps(record) + "\n").encode("utf-8")

    def write(self, record: dict) -> None:
        self.write_line(self.encode(record))

    def prepare(self, record: dict) -> dict:
        """The record as it will be written (unchanged here; a run log adds its own fields)."""
        return record

    def emit(self, record: dict, line: bytes) -> None:
        """Write ``record`` as ``line`` (its :meth:`encode`-ing, made before the write)."""
        self.write_line(line)

    def write_line(self, line: bytes) -> None:
        """Append a line made by :meth:`encode` (e.g. one whose end offset a checkpoint stored)."""
        self._file.write(line)
        self._file.flush()

    def offset(self) -> int:
        """Bytes in the file now (every writer's records included)."""
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def truncate_log(path: str | os.PathLike, offset: int) -> int:
    """Cut the log at ``path`` back to its first ``offset`` bytes; return how many records went.

    ``offset`` is one a checkpoint stored (:meth:`SFOLogWriter.offset`); it must fall at the end of
    a line within the file, else nothing is cut and the error says what was found.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if offset > 0:
            fh.seek(offset - 1)
            at_line_end = fh.read(1) == b"\n"
        else:
            at_line_end = True
        tail = fh.read() if offset <= size else b""
    if offset > size or not at_line_end:
        fail("offset", "truncate_log", f"the end of a line of {path} (a file of {size} bytes)", offset,
             reason="the log was changed after the checkpoint was written")
    os.truncate(path, offset)
    return sum(1 for line in tail.splitlines() if line.strip())


def rewind_log(path: str | os.PathLike, start: int, line: bytes) -> int | None:
    """Cut the log back to a checkpoint whose own record ``line`` was written at byte ``start``.

    Returns the number of records dropped after that record. If the process died between writing
    the checkpoint and its record (the file ends at ``start``), the record is appended and 0 is
    returned. If the file holds something else there (another or an edited log), nothing is cut:
    a warning says so and None is returned — a resume never fails on its log.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        fh.seek(max(start - 1, 0))
        before = fh.read(1) if start > 0 else b"\n"
        found = fh.read(len(line))
    if before == b"\n" and found == line:
        return truncate_log(path, start + len(line))
    if before == b"\n" and size == start:
        with open(path, "ab") as fh:
            fh.write(line)
        return 0
    warnings.warn(f"rewind_log: {path} does not hold the checkpoint's record at byte {start} (a file of {size} "
                  "bytes): the log was not cut, so records of the replayed steps may appear twice",
                  RuntimeWarning, stacklevel=2)
    return None


def cut_log_after_step(path: str | os.PathLike, step: int) -> int:
    """Keep the records of steps ≤ ``step`` except 'end'; return how many went.

    For a checkpoint that holds no log mark (no offset of its own record, :func:`rewind_log`):
    the records' step fields then decide.
    """
    records = read_log(path)
    kept = [r for r in records if r.get("step", 0) <= step and r.get("kind") != "end"]
    with open(path, "w", encoding="utf-8") as fh:
        for r in kept:
            fh.write(json.dumps(r) + "\n")
    return len(records) - len(kept)


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log, in order (blank lines skipped); a key of an older log is read
    under its current name (:data:`LEGACY_KEYS`)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                fail("path", "read_log", "a JSON-lines file", f"{os.fspath(path)}:{lineno}", reason=str(e))
            out.append(_current_keys(rec))
    return out


def _current_keys(rec):
    if isinstance(rec, dict) and not LEGACY_KEYS.keys().isdisjoint(rec):
        return {LEGACY_KEYS.get(k, k): v for k, v in rec.items()}
    return rec


def _records(path_or_records) -> list[dict]:
    if isinstance(path_or_records, (str, os.PathLike)):
        return read_log(path_or_records)
    return [_current_keys(r) for r in path_or_records]


def log_columns(path_or_records: str | os.PathLike | Iterable[dict]) -> dict[str, list]:
    """The log as columns: ``{field: [value per record]}`` (``None`` where a record lacks a field).

    >>> log_columns([{"step": 1, "norm": 0.5}, {"step": 2}])
    {'step': [1, 2], 'norm': [0.5, None]}
    """
    records = _records(path_or_records)
    names: list[str] = []
    for r in records:
        names.extend(k for k in r if k not in names)
    return {k: [r.get(k) for r in records] for k in names}


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def log_table(path_or_records, columns: Iterable[str] | None = None) -> str:
    """A printable fixed-width table of the log.

    >>> print(log_table([{"step": 10, "stage": 0, "norm": 0.61234, "event": "CHECKED"},
    ...                  {"step": 20, "stage": 1, "norm": 0.2, "event": "ADVANCED"}]))
    step  stage  norm    event
    10    0      0.6123  CHECKED
    20    1      0.2     ADVANCED
    """
    cols = log_columns(path_or_records)
    if columns is None:
        default = ("step", "samples", "check_samples", "stage", "b", "eta", "eps_m", "norm", "monitor", "event")
        columns = [c for c in default if c in cols] or list(cols)
    columns = list(columns)
    unknown = [c for c in columns if c not in cols]
    if unknown:
        fail("columns", "log_table", f"fields of the log, among {list(cols)}", unknown)
    cells = [[c] + [_cell(v) for v in cols[c]] for c in columns]
    widths = [max(len(s) for s in col) for col in cells]
    rows = zip(*cells)
    buf = io.StringIO()
    for row in rows:
        buf.write("  ".join(s.ljust(w) for s, w in zip(row, widths)).rstrip() + "\n")
    return buf.getvalue().rstrip("\n")


def plot_log(path_or_records, out_png: str | os.PathLike, *, x: str = "samples", dpi: int = 120) -> str:
    """Three panels against SFO: ‖∇f‖ with ε_m and the stage boundaries, b, and η. Returns the path.

    ``x`` is ``"samples"`` (training SFO) or ``"sfo_total"`` (training + measurement).
    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    check_choice(x, ("samples", "sfo_total"), "x", "plot_log")
    check_integer(dpi, "dpi", "plot_log", minimum=1)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = _records(path_or_records)
    if not records:
        fail("path_or_records", "plot_log", "a log with at least one record", records)
    xs = [r[x] for r in records]
    fig = Figure(figsize=(7, 8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_norm, ax_b, ax_eta = fig.subplots(3, 1, sharex=True)
    checked = [(xv, r["norm"]) for xv, r in zip(xs, records) if r.get("norm") is not None]
    if checked:
        ax_norm.plot(*zip(*checked), "o-", ms=3, lw=1, label="measured ‖∇f(θ)‖")
    # step lines start at x = 0 with the values in force before the first record
    x_steps = [0] + xs
    first = records[0]
    ax_norm.step(x_steps, [first["eps_m"]] + [r.get("eps_m_next", r["eps_m"]) for r in records], where="post",
                 color="k", lw=1, ls="--", label="ε_m")
    for xv, r in zip(xs, records):
        if r.get("stage_next", r["stage"]) != r["stage"]:
            for ax in (ax_norm, ax_b, ax_eta):
                ax.axvline(xv, color="tab:red", lw=0.8, alpha=0.6)
    ax_norm.set_yscale("log")
    ax_norm.set_ylabel("‖∇f(θ)‖")
    ax_norm.legend(loc="upper right", fontsize=8)
    ax_b.step(x_steps, [first["b"]] + [r.get("b_next", r["b"]) for r in records], where="post")
    ax_b.set_yscale("log", base=2)
    ax_b.set_ylabel("batch size b")
    ax_eta.step(x_steps, [first["eta"]] + [r.get("eta_next", r["eta"]) for r in records], where="post")
    ax_eta.set_ylabel("learning rate η")
    ax_eta.set_xlabel("training SFO (samples)" if x == "samples" else "SFO incl. measurement")
    ax_norm.set_title("stage boundaries in red")
    out = os.fspath(out_png)
    fig.savefig(out, dpi=dpi)
    return out
