"""Benchmark: should ``tqdm`` replace the toolkit's own progress lines?

Question (issue: "Progress and logs"): a training step of ``sfo train`` on the small CNN at b = 8
takes a few milliseconds; what does drawing progress cost per step with the toolkit's own line
(:class:`sfotorch.progress.Progress`, :class:`sfotheory.progress.Progress`) and with ``tqdm``,
what does importing ``tqdm`` add to the start of an ``sfo`` command, and what does each write when
the output is not a terminal?

Setup, all in one run, on a stream that discards what it is given (``isatty()`` True or False as
the row says):

* per-step cost: ``steps`` calls, as ``sfo train`` makes them after every step, each with the same
  status (step, stage, b, η, ‖∇f‖, ε_m, SFO). "own line": :class:`OwnLine` below, the toolkit's
  former line (a status line formatted and written every 2 s, ``\r``-rewritten on a terminal, a new
  line elsewhere); "tqdm": the shipped :class:`sfotorch.progress.Progress` (a tqdm bar in samples,
  the status in its postfix, redrawn at most every 2 s; off when the stream is not a terminal).
  Rows alternate in blocks (ABAB…); the median of the blocks' ns per call is reported.
* import: ``python -c "import tqdm"`` minus ``python -c "pass"`` in fresh interpreters, median of
  ``repeats``.
* not a terminal: the characters each writes over a simulated 60 s run (clock advanced by hand).

Run: ``python benchmarks/bench_progress.py [--steps 200000] [--blocks 10] [--repeats 7] [--out FILE]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time

from sfotheory.progress import is_terminal
from sfotorch.progress import Progress

from _report import emit  # benchmarks/_report.py: run as python benchmarks/<name>.py

try:
    import tqdm
except ImportError:  # the decision needs tqdm to measure it
    sys.exit("bench_progress: tqdm is not installed (pip install tqdm)")

INFO = {"step": 0, "samples": 0, "check": 0, "epoch": 0.0, "stage": 1, "b": 8, "eta": 0.1, "eps_m": 0.25,
        "norm": 0.3, "fraction": 0.5, "samples_per_s": 1.0e3}


class Sink(io.TextIOBase):
    """A text stream that counts and drops what it is given; ``isatty`` as constructed."""

    def __init__(self, tty: bool):
        self.tty, self.chars = tty, 0

    def isatty(self):
        return self.tty

    def write(self, s):
        self.chars += len(s)
        return len(s)


class OwnLine:
    """The line of our own that tqdm is measured against: the status formatted and written every
    ``every`` seconds, rewritten in place with ``\r`` on a terminal, appended as a line elsewhere."""

    def __init__(self, stream, every=2.0):
        self.stream, self.every, self.tty = stream, every, is_terminal(stream)
        self._last = time.perf_counter()

    def update(self, info):
        now = time.perf_counter()
        if now - self._last < self.every:
            return
        self._last = now
        line = (f"step {info['step']} ep {info['epoch']:.2f} | stage {info['stage']} b {info['b']} "
                f"lr {info['eta']:.4g} | norm {info['norm']:.4g} eps_m {info['eps_m']:.3g} | "
                f"SFO {info['samples']}+{info['check']} | {info['samples_per_s']:.0f} samples/s")
        self.stream.write(("\r" + line.ljust(120)) if self.tty else line + "\n")
        self.stream.flush()

    def close(self):
        pass


def per_step_ns(kind, steps, sink):
    p = OwnLine(sink) if kind == "own" else Progress(sink, every=2.0, total=8 * steps)
    info = dict(INFO)
    t = time.perf_counter_ns()
    for i in range(steps):
        info["step"], info["samples"] = i, 8 * i
        p.update(info)
    ns = (time.perf_counter_ns() - t) / steps
    p.close()
    return ns


def import_ms(repeats):
    def run(code):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t
    return 1e3 * (statistics.median(run("import tqdm") for _ in range(repeats))
                  - statistics.median(run("pass") for _ in range(repeats)))


def chars_not_a_terminal(seconds=60, per_second=200):
    """Characters written to a non-terminal over a simulated run of ``seconds`` (own line; the shipped tqdm bar)."""
    clock = [0.0]
    real = time.perf_counter
    time.perf_counter = lambda: clock[0]          # the own line and tqdm's timer both read perf_counter / time
    real_time = time.time
    time.time = lambda: clock[0]
    try:
        out = {}
        for name in ("own line", "tqdm"):
            sink = Sink(tty=False)
            clock[0] = 0.0
            p = OwnLine(sink) if name == "own line" else Progress(sink, every=2.0, total=8 * seconds * per_second)
            for i in range(seconds * per_second):
                clock[0] += 1.0 / per_second
                p.update(dict(INFO, step=i, samples=8 * i))
            p.close()
            out[name] = sink.chars
        return out
    finally:
        time.perf_counter, time.time = real, real_time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = {"own line (terminal)": lambda: per_step_ns("own", args.steps, Sink(True)),
            "tqdm (terminal)": lambda: per_step_ns("tqdm", args.steps, Sink(True)),
            "own line (not a terminal)": lambda: per_step_ns("own", args.steps, Sink(False)),
            "tqdm (not a terminal: off)": lambda: per_step_ns("tqdm", args.steps, Sink(False))}
    ns = {k: [] for k in rows}
    for _ in range(args.blocks):
        for k, fn in rows.items():
            ns[k].append(fn())
    text = io.StringIO()
    print(f"bench_progress: tqdm {tqdm.__version__}, {args.steps} calls per block, {args.blocks} blocks "
          f"(ABAB…), median ns per step", file=text)
    for k, v in ns.items():
        print(f"  {k:36} {statistics.median(v):8.0f} ns/step  (blocks {min(v):.0f}–{max(v):.0f})", file=text)
    print(f"  ratio tqdm / own line on a terminal: "
          f"{statistics.median(ns['tqdm (terminal)']) / statistics.median(ns['own line (terminal)']):.2f}", file=text)
    print(f"import tqdm in a fresh interpreter: {import_ms(args.repeats):.0f} ms (median of {args.repeats})",
          file=text)
    chars = chars_not_a_terminal()
    print("characters written to a non-terminal over a simulated 60 s run at 200 steps/s: "
          + ", ".join(f"{k} {v}" for k, v in chars.items()), file=text)
    emit(text.getvalue(), args.out)


if __name__ == "__main__":
    main()
