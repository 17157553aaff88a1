r"""Where and how ``sfo train`` computes: the device and its options, resolved from ``[run]``.

``run.device = "auto"`` picks CUDA when present. On CUDA by default: the forward pass under
``torch.autocast(dtype=torch.bfloat16)`` (the loss is computed in float32), channels_last, uint8
images kept on the GPU (a batch is gathered, augmented and normalised there, so the loader cannot
become the bottleneck), else pinned host batches copied with ``non_blocking=True``; optional
``torch.compile``. Each of these can be forced on CPU as well (``run.amp = "bf16"``,
``run.channels_last = "on"``), which is how the tests exercise those code paths without a GPU.

:func:`resolve_device` decides; :func:`to_channels_last`, :func:`autocast_forward` and
:class:`BatchView` apply the decisions to the model and the batches; :func:`torch_threads` holds
the process's thread count for a run; :func:`versions` names the software a run ran on.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess

import torch

from sfotheory.validation import fail

__all__ = ["BatchView", "autocast_forward", "resolve_device", "to_channels_last", "torch_threads", "versions"]


def versions() -> dict:
    """python, torch, this package and the git commit of its source tree (``None`` where unknown)."""
    try:
        package = importlib.metadata.version("sfo-schedulers")
    except importlib.metadata.PackageNotFoundError:
        package = None
    commit = None
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "sfo_schedulers": package,
            "git_commit": commit}


def resolve_device(cfg: dict) -> dict:
    """Device and its options from ``[run]``: ``{device, threads, amp, channels_last, on_device}``."""
    run, where = cfg["run"], f"the config {cfg.get('_source', '<text>')}"
    cuda = torch.cuda.is_available()
    if run["device"] == "cuda" and not cuda:
        fail("run.device", where, "'auto' or 'cpu' on a machine without CUDA", "cuda")
    device = torch.device("cuda" if (run["device"] == "cuda" or (run["device"] == "auto" and cuda)) else "cpu")
    on_gpu = device.type == "cuda"
    # 1 thread on CPU: at the small batches of Algorithm 2's first stages a step is dispatch-bound,
    # and a second thread can slow it down (benchmarks/bench_train_throughput.py --threads measures it)
    threads = run["threads"] or (torch.get_num_threads() if on_gpu else 1)
    amp = run["amp"] if run["amp"] != "auto" else ("bf16" if on_gpu else "off")
    from .datasets import TEXT_DATASETS      # token ids (B, T) have no channels: auto is off for text
    channels_last = run["channels_last"] == "on" or (run["channels_last"] == "auto" and on_gpu
                                                     and cfg["data"]["dataset"] not in TEXT_DATASETS)
    on_device = on_gpu and cfg["data"]["on_device"] != "off"
    return {"device": device, "threads": threads, "amp": amp, "channels_last": channels_last,
            "on_device": on_device}


@contextlib.contextmanager
def torch_threads(threads: int):
    """The process's torch thread count set to ``threads`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels_last memory format (the batch transform of a channels_last model)."""
    return x.contiguous(memory_format=torch.channels_last)


def autocast_forward(model: torch.nn.Module, device_type: str) -> None:
    """Run ``model``'s forward under bf16 autocast and return float32 outputs (state_dict unchanged)."""
    inner = model.forward

    def forward(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = inner(*args, **kwargs)
        return out.float()

    model.forward = forward


class BatchView(torch.utils.data.Dataset):
    """An :class:`~sfotorch.datasets.ImageDataset` whose batched fetch returns ``(images, labels)``
    directly (one gather and one augmentation call per batch, no per-sample collation; use it with
    ``collate_fn=`` :meth:`as_is`); on CUDA with host-side data the batch is pinned and copied with
    ``non_blocking=True``."""

    def __init__(self, data, device: torch.device | None = None):
        self.data = data
        self.device = device

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]

    def __getitems__(self, indices):
        x, y = self.data.get_batch(torch.as_tensor(indices, dtype=torch.int64))
        if self.device is not None and self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        return x, y

    @staticmethod
    def as_is(batch):
        """The collate function of a :class:`BatchView`: the batch is already collated."""
        return batch
