# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reading and plotting `sfo train` logs
#
# A run folder holds the resolved `config.toml`, `summary.csv`, and per seed a JSON-lines `log.jsonl`
# (one record per ‖∇f‖ check, plus start, evaluation, checkpoint and end records). This notebook trains
# a short run of the CPU Fashion-MNIST configuration (shortened further with `SFO_NOTEBOOK_SMALL=1`),
# then reads its log back as a table and draws it. Point `RUN` at any `sfo train` output to do the same.

# %%
import math
import os
import pathlib

from IPython.display import Image

from sfotheory.rule import schedule_from_dict, stage_values
from sfotorch.config import load_config
from sfotorch.plots import find_runs, plot_runs
from sfotorch.sfolog import log_table, read_log
from sfotorch.train import train

SMALL = os.environ.get("SFO_NOTEBOOK_SMALL") == "1"
OUT = pathlib.Path(os.environ.get("SFO_NOTEBOOK_OUT", "runs"))
CONFIG = pathlib.Path("..") / "configs" / "fashion_mnist_adaptive_cpu.toml"
overrides = ["data.subset=1000", "train.epochs=2", "schedule.tau=40", "eval.test_subset=200"] if SMALL else []
# the exact monitor (the config's default is the sequential one): n samples a check, the accounting shown below
cfg = load_config(CONFIG, [*overrides, "monitor.kind=exact"])
RUN = OUT / "fashion_mnist_adaptive_cpu"
summary = train(cfg, out_dir=str(RUN), progress_stream=open(os.devnull, "w"))
{k: summary["runs"][0][k] for k in ("final_stage", "final_b", "train_samples", "check_samples", "best_test_acc")}

# %% [markdown]
# The check records, as a table (step, samples, stage, b, η, ε_m, the measured ‖∇f‖, the event):

# %%
seed_dir = find_runs([RUN])[0]
records = [r for r in read_log(pathlib.Path(seed_dir) / "log.jsonl") if r.get("kind") == "check"]
print(log_table(records, ["step", "samples", "check_samples", "stage", "b", "eta", "eps_m", "norm", "event"]))

# %% [markdown]
# What the folder and the table show, asserted below: the files named above and those five kinds of
# record; a check after every τ-th step (docs/theory.md, "Order of events"); the stage moves exactly
# at the checks where ‖∇f‖ ≤ ε_m (while b_m < b_max), with (b, η, ε_m) the stage law's values and
# ε_m = ε₀√(b₀/b_m) (docs/theory.md, "Algorithm 2"); and the SFO counts each training sample once
# per epoch and n samples per exact check (docs/theory.md, "SFO accounting").

# %%
log, run = read_log(pathlib.Path(seed_dir) / "log.jsonl"), summary["runs"][0]
n, tau = run["n_train"], cfg["schedule"]["tau"]
schedule = schedule_from_dict(log[0]["schedule"])          # as the run resolved it (b_max capped at n)
assert (RUN / "config.toml").is_file() and (RUN / "summary.csv").is_file()
assert log[0]["kind"] == "start" and log[-1]["kind"] == "end"
assert {r.get("kind") for r in log} == {"start", "check", "eval", "checkpoint", "end"}
assert [r["step"] for r in records] == list(range(tau, run["steps"] + 1, tau))
for r, after in zip(records, records[1:] + [None]):
    # rel_tol 1e-12: JSON keeps floats exactly, so only the order of float operations can differ.
    assert all(math.isclose(x, y, rel_tol=1e-12) for x, y in zip((r["b"], r["eta"], r["eps_m"]),
                                                                  stage_values(schedule, r["stage"])))
    assert math.isclose(r["eps_m"], schedule.eps0 * math.sqrt(schedule.b0 / r["b"]), rel_tol=1e-12)
    moved = r["norm"] <= r["eps_m"] and r["b"] < schedule.b_max
    assert (r["event"] == "ADVANCED") == moved, r
    assert after is None or after["stage"] == r["stage"] + moved, (r, after)
assert run["final_stage"] == sum(r["event"] == "ADVANCED" for r in records)
assert all(math.isclose(x, y, rel_tol=1e-12) for x, y in zip((run["final_b"], run["final_eta"]),
                                                              stage_values(schedule, run["final_stage"])))
# Exact counts: the run stops at epochs·n training samples and no batch straddles an epoch (a short
# last batch counts what it holds); the exact monitor is one pass over the n training samples.
assert run["train_samples"] == math.ceil(cfg["train"]["epochs"] * n)
assert cfg["monitor"]["kind"] == "exact" and run["check_samples"] == len(records) * n

# %% [markdown]
# ‖∇f‖ against SFO, steps and epochs with the stage boundaries; b and η against SFO; losses and accuracy:

# %%
files = plot_runs([RUN], str(OUT / "overview"), formats=("png",))
Image(filename=files[0])
