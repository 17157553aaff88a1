"""What every scheduler shell does to torch objects: check the optimizer, loader and log it is given;
write η into the param groups and b into the loader; append a record to the log.

:class:`~sfotorch.scheduler.StageScheduler` (Algorithm 2 and its baselines) and
:class:`~sfotorch.policy_scheduler.PolicyScheduler` (any policy of :mod:`sfotheory.policies`)
share these, so that both refuse the same input with the same message and apply a decision the
same way.
"""

from __future__ import annotations

import os
import warnings

import torch

from sfotheory.validation import fail

from .sfolog import SFOLogWriter

__all__ = ["apply_decision", "check_loader", "check_optimizer", "dataset_size", "open_log", "report_nonfinite",
           "write_record"]


def check_optimizer(optimizer, where: str):
    """``optimizer`` if it is a torch optimizer whose param groups all hold ``'lr'``; else a ParameterError."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups:
        fail("optimizer", where, "a torch optimizer with a non-empty list of param_groups", type(optimizer).__name__)
    for i, g in enumerate(groups):
        if not isinstance(g, dict) or "lr" not in g:
            fail("optimizer", where, "an optimizer whose param groups all hold 'lr'", type(optimizer).__name__,
                 reason=f"param group {i} has keys {sorted(g) if isinstance(g, dict) else type(g).__name__}")
    return optimizer


def dataset_size(loader) -> int | None:
    """n, the number of samples the loader draws from (None when it cannot tell)."""
    n = getattr(loader, "n", None)
    if n is None and hasattr(loader, "dataset"):
        try:
            n = len(loader.dataset)
        except TypeError:
            n = None
    return n


def check_loader(loader, where: str) -> int | None:
    """The dataset size n of a batch source whose ``batch_size`` can be set (a ResizableLoader)."""
    if isinstance(loader, torch.utils.data.DataLoader):
        fail("loader", where, "a ResizableLoader (a DataLoader's batch size is fixed when it is built)",
             type(loader).__name__)
    if not hasattr(loader, "batch_size"):
        fail("loader", where, "a batch source with a settable batch_size", type(loader).__name__)
    return dataset_size(loader)


def open_log(log, where: str):
    """A path opens an :class:`~sfotorch.sfolog.SFOLogWriter` (JSON lines, appended); a list or an
    object with ``write(dict)`` is used as it is; None is no log."""
    if isinstance(log, (str, os.PathLike)):
        return SFOLogWriter(log)
    if log is not None and not (callable(getattr(log, "write", None)) or isinstance(log, list)):
        fail("log", where, "a path, a list or an object with write(dict)", type(log).__name__)
    return log


def write_record(log, record: dict) -> None:
    """Append ``record`` to a list log, or ``log.write`` it."""
    if isinstance(log, list):
        log.append(record)
    else:
        log.write(record)


def apply_decision(optimizer, loader, lr: float, batch_size: int) -> None:
    """η into every param group (in place when ``lr`` is a tensor), b into the loader (next batch on)."""
    lr = float(lr)
    for g in optimizer.param_groups:
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr
    if loader is not None and loader.batch_size != int(batch_size):
        loader.batch_size = int(batch_size)


def report_nonfinite(name: str, where: str, value, *, reason: str, action: str, error_cls) -> None:
    """A non-finite ``name`` = ``value``: raise ``error_cls`` (``action="raise"``) or warn (``"warn"``),
    with one message naming the value, where it was read and ``reason``."""
    try:
        fail(name, where, "finite", value, cls=error_cls, reason=reason)
    except error_cls as err:
        if action == "raise":
            raise
        warnings.warn(str(err), RuntimeWarning, stacklevel=5)
