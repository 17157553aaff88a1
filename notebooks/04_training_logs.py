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
import os
import pathlib

from IPython.display import Image

from sfotorch.config import load_config
from sfotorch.plots import find_runs, plot_runs
from sfotorch.sfolog import log_table, read_log
from sfotorch.train import train

SMALL = os.environ.get("SFO_NOTEBOOK_SMALL") == "1"
OUT = pathlib.Path(os.environ.get("SFO_NOTEBOOK_OUT", "runs"))
CONFIG = pathlib.Path("..") / "configs" / "fashion_mnist_adaptive_cpu.toml"
overrides = ["data.subset=1000", "train.epochs=2", "schedule.tau=40", "eval.test_subset=200"] if SMALL else []
cfg = load_config(CONFIG, overrides)
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
# ‖∇f‖ against SFO, steps and epochs with the stage boundaries; b and η against SFO; losses and accuracy:

# %%
files = plot_runs([RUN], str(OUT / "overview"), formats=("png",))
Image(filename=files[0])
