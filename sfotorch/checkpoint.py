r"""One file holds everything a run needs to continue bit-exactly; written atomically, checked on load.

A checkpoint is a ``torch.save`` file of one dict of plain content — tensors, dicts, lists,
strings, numbers, booleans, ``None`` — so ``torch.load(path, weights_only=True)`` reads it (and
:func:`load_checkpoint` reads it that way: loading never runs pickled code). It holds

============== =============================================================================
key            content
============== =============================================================================
``model``      ``model.state_dict()`` (parameters and buffers, e.g. BatchNorm statistics)
``optimizer``  ``optimizer.state_dict()`` (momentum buffers, Adam moments, param groups)
``scheduler``  ``StageScheduler.state_dict()``: the Schedule's arguments, the rule's state record
               (stage, b_m, η_m, ε_m, step, SFO counters), the SFO account and the transitions
``sampler``    the loader's state: (seed, epoch, position *in samples*, b, n, …)
``sfo``        training and measurement gradient evaluations so far (a copy, for reading a
               checkpoint without building a scheduler)
``monitor``    the monitor's ``state_dict()`` when it has one (e.g. the debiased monitor's window)
``loop``       the training loop's counters (:class:`sfotorch.loop.TrainingLoop`)
``rng``        one entry per rank: torch CPU, numpy, python ``random`` and CUDA generator states
``world_size`` W of the run that wrote it
``digest``     SHA-256 of everything above (tensor bytes included): a flipped bit is detected
============== =============================================================================

Writing (:func:`save_checkpoint`): the content goes to a temporary file in the *same folder*
(``.NAME.XXXX.tmp``), which is flushed and ``fsync``-ed, then ``os.replace``-d over ``NAME`` (atomic
on POSIX and Windows) and the folder is ``fsync``-ed. A crash at any moment leaves either the
previous checkpoint or the new one, never a partial file under ``NAME``; an exception removes the
temporary file, and the next save removes one left by a killed writer (one writer per path). A state with a NaN or infinite parameter, buffer or optimizer entry is refused
(``allow_nonfinite=True`` overrides), so a diverged run never overwrites a good checkpoint. Under
DDP every rank calls it (the RNG states are gathered), rank 0 writes, and all ranks wait for it.

Loading (:func:`load_checkpoint`) first checks everything, then changes anything — a refused
checkpoint leaves model, optimizer, scheduler and loader untouched. Refused, each with one
message naming what and which value: an unreadable, truncated or corrupted file (digest
mismatch), a file that is not an sfotorch checkpoint, another model (missing/unexpected keys or
shape mismatches, listed), other scheduler arguments (the differing Schedule fields, saved vs
here), another dataset size, another optimizer layout, and a world size other than the one
the checkpoint was written with (the per-rank RNG states and the micro-batch sums depend on it;
``allow_world_size_change=True`` resumes anyway, restoring no RNG state, and is then not exact).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile

import numpy as np
import torch

from sfotheory.validation import fail

from .distributed import DistributedContext

__all__ = [
    "FORMAT",
    "VERSION",
    "capture_rng_state",
    "load_checkpoint",
    "read_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "state_digest",
]

FORMAT = "sfotorch-checkpoint"
VERSION = 1


# -- RNG states -----------------------------------------------------------------------------------

def capture_rng_state() -> dict:
    """This process's generator states as plain tensors and numbers (``weights_only``-safe)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only where CUDA is present)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))


# -- digest -----------------------------------------------------------------------------------------

def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            h.update(f"K{type(k).__name__}:{k!r}".encode())
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())


def state_digest(obj) -> str:
    """SHA-256 of a nested structure of tensors (their dtype, shape and bytes), dicts, lists and scalars.

    >>> state_digest({"w": torch.zeros(2)}) == state_digest({"w": torch.zeros(2)})
    True
    >>> state_digest({"w": torch.zeros(2)}) == state_digest({"w": torch.tensor([0.0, 1e-30])})
    False
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _nonfinite_entries(named_tensors) -> list[str]:
    bad = []
    for name, t in named_tensors:
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and not bool(
                torch.isfinite(t).all()):
            bad.append(name)
    return bad


def _optimizer_tensors(state: dict):
    for pid, entry in state.get("state", {}).items():
        for key, value in entry.items():
            yield f"optimizer.state[{pid}][{key!r}]", value


# -- writing ----------------------------------------------------------------------------------------

def _atomic_save(obj, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = f".{os.path.basename(path)}."
    for name in os.listdir(directory):      # temporary files left by a writer that was killed
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def save_checkpoint(path, *, model, optimizer=None, scheduler=None, loader=None, monitor=None,
                    loop_state: dict | None = None, extra: dict | None = None,
                    context: DistributedContext | None = None, allow_nonfinite: bool = False) -> str:
    """Write one checkpoint atomically (see the module docstring); returns the path.

    ``monitor`` defaults to ``scheduler.monitor``; it is saved when it has ``state_dict()``.
    ``extra`` must be plain content (tensors, dicts, lists, str, numbers, bool, None).
    Under DDP (``context.world_size > 1``) every rank must call this.
    """
    where = "save_checkpoint"
    path = os.fspath(path)
    ctx = context if context is not None else DistributedContext.current()
    if monitor is None and scheduler is not None:
        monitor = getattr(scheduler, "monitor", None)
    model_state = model.state_dict()
    opt_state = optimizer.state_dict() if optimizer is not None else None
    if not allow_nonfinite:
        bad = _nonfinite_entries(model_state.items())
        if opt_state is not None:
            bad += _nonfinite_entries(_optimizer_tensors(opt_state))
        if bad:
            fail("model", where, "a state with finite parameters, buffers and optimizer entries", bad[:8],
                 reason=f"a diverged state is never written over {path!r}; pass allow_nonfinite=True to "
                        "write it anyway")
    sched_state = scheduler.state_dict() if scheduler is not None else None
    sfo = None
    if sched_state is not None:
        st = sched_state["state"]
        sfo = {"steps": int(st["step"]), "train": int(st["samples"]), "measure": int(st["check_samples"]),
               "total": int(st["samples"]) + int(st["check_samples"])}
    monitor_state = monitor.state_dict() if monitor is not None and callable(
        getattr(monitor, "state_dict", None)) else None
    rng = ctx.all_gather_object(capture_rng_state())
    content = {
        "format": FORMAT, "version": VERSION, "world_size": ctx.world_size,
        "model": model_state, "optimizer": opt_state, "scheduler": sched_state,
        "sampler": loader.state_dict() if loader is not None else None, "sfo": sfo,
        "monitor": monitor_state, "loop": loop_state, "rng": rng, "extra": extra,
    }
    content["digest"] = state_digest(content)
    if ctx.rank == 0:
        _atomic_save(content, path)
    ctx.barrier()
    return path


# -- reading ----------------------------------------------------------------------------------------

def read_checkpoint(path, *, map_location="cpu") -> dict:
    """The verified content of a checkpoint (``weights_only=True``); refuses unreadable or corrupted files."""
    path = os.fspath(path)
    where = "read_checkpoint"
    if not os.path.isfile(path):
        fail("path", where, "an existing checkpoint file", path)
    size = os.path.getsize(path)
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, … on damaged files
        fail("path", where, "a complete checkpoint written by save_checkpoint", path,
             reason=f"the file ({size} bytes) is truncated or corrupted: {type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}")
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        fail("path", where, f"a checkpoint written by save_checkpoint (format {FORMAT!r})", path,
             reason=f"it holds {type(content).__name__}"
                    + (f" with format {content.get('format')!r}" if isinstance(content, dict) else ""))
    if content.get("version") != VERSION:
        fail("path", where, f"a checkpoint of format version {VERSION}", path,
             reason=f"it has version {content.get('version')!r}")
    saved = content.pop("digest", None)
    actual = state_digest(content)
    if saved != actual:
        fail("path", where, "a checkpoint whose content matches its SHA-256 digest", path,
             reason=f"the file is corrupted: digest {str(saved)[:16]}… saved, {actual[:16]}… computed")
    return content


def _model_mismatch(saved: dict, here: dict) -> dict:
    missing = [k for k in here if k not in saved]
    unexpected = [k for k in saved if k not in here]
    shapes = {k: [list(saved[k].shape), list(here[k].shape)] for k in here
              if k in saved and tuple(saved[k].shape) != tuple(here[k].shape)}
    out = {}
    if missing:
        out["missing in checkpoint"] = missing[:8]
    if unexpected:
        out["not in model"] = unexpected[:8]
    if shapes:
        out["shape [checkpoint, model]"] = dict(list(shapes.items())[:8])
    return out


def load_checkpoint(path, *, model, optimizer=None, scheduler=None, loader=None, monitor=None,
                    context: DistributedContext | None = None, map_location="cpu", restore_rng: bool = True,
                    allow_world_size_change: bool = False) -> dict:
    """Check a checkpoint against the given objects, then restore them all; returns its content.

    The returned dict has ``loop``, ``extra``, ``sfo``, ``world_size`` (and everything else that
    was saved). Under DDP every rank calls this and restores its own RNG state.
    """
    path = os.fspath(path)
    where = f"load_checkpoint({path!r})"
    ctx = context if context is not None else DistributedContext.current()
    content = read_checkpoint(path, map_location=map_location)
    # -- check everything before changing anything --
    saved_w = content["world_size"]
    if saved_w != ctx.world_size and not allow_world_size_change:
        fail("world_size", where, f"the world size the checkpoint was written with, {saved_w}", ctx.world_size,
             reason="per-rank RNG states and the micro-batch split depend on it; pass "
                    "allow_world_size_change=True to resume anyway (then not bit-exact)")
    diff = _model_mismatch(content["model"], model.state_dict())
    if diff:
        fail("model", where, "the model the checkpoint was written for (same state_dict names and shapes)",
             diff, reason=f"the checkpoint holds {len(content['model'])} entries, this model "
                          f"{len(model.state_dict())}")
    if optimizer is not None:
        saved_opt = content["optimizer"]
        if saved_opt is None:
            fail("optimizer", where, "None (the checkpoint holds no optimizer state)", type(optimizer).__name__)
        layout_saved = [len(g["params"]) for g in saved_opt["param_groups"]]
        layout_here = [len(g["params"]) for g in optimizer.param_groups]
        if layout_saved != layout_here:
            fail("optimizer", where, f"an optimizer with the saved param-group sizes {layout_saved}", layout_here)
    if scheduler is not None:
        saved_sched = content["scheduler"]
        if saved_sched is None:
            fail("scheduler", where, "None (the checkpoint holds no scheduler state)", type(scheduler).__name__)
        here = scheduler.schedule.to_dict()
        there = saved_sched["schedule"]
        diffs = {k: {"saved": there.get(k), "here": here.get(k)} for k in sorted(set(there) | set(here))
                 if there.get(k) != here.get(k)}
        if diffs:
            fail("scheduler", where, "built with the Schedule arguments the checkpoint was written with", diffs,
                 reason="resuming with other arguments would mix two runs; rebuild the scheduler with the saved ones")
        if saved_sched.get("check_order", scheduler.check_order) != scheduler.check_order:
            fail("scheduler", where, f"built with check_order={saved_sched['check_order']!r} as saved",
                 scheduler.check_order)
    if loader is not None:
        saved_loader = content["sampler"]
        if saved_loader is None:
            fail("loader", where, "None (the checkpoint holds no sampler state)", type(loader).__name__)
        if saved_loader.get("n") != getattr(loader, "n", saved_loader.get("n")):
            fail("loader", where, f"a loader over a dataset of the saved size n = {saved_loader.get('n')}",
                 f"n = {loader.n}")
    if monitor is None and scheduler is not None:
        monitor = getattr(scheduler, "monitor", None)
    # -- restore --
    model.load_state_dict(content["model"])
    if optimizer is not None:
        optimizer.load_state_dict(content["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(content["scheduler"])
    if loader is not None:
        loader.load_state_dict(content["sampler"])
    if monitor is not None and content.get("monitor") is not None and callable(
            getattr(monitor, "load_state_dict", None)):
        monitor.load_state_dict(content["monitor"])
    if restore_rng and saved_w == ctx.world_size:
        restore_rng_state(content["rng"][ctx.rank])
    return content

