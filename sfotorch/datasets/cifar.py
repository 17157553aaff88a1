r"""CIFAR-10 and CIFAR-100 from a local folder in torchvision's on-disk layout (nothing is downloaded).

Layout (what ``torchvision.datasets.CIFAR10/100(root, download=True)`` leaves on disk, and what the
``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` archives of Krizhevsky's page unpack to)::

    ROOT/cifar-10-batches-py/   data_batch_1 … data_batch_5, test_batch, batches.meta
    ROOT/cifar-100-python/      train, test, meta

Each data file is a pickled dict with ``b'data'``: uint8 array N×3072 (per image 1024 red, then
1024 green, then 1024 blue values, each 32×32 row-major, so it reshapes to N×3×32×32) and
``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100): N ints. ``batches.meta`` holds
``b'label_names'``, ``meta`` holds ``b'fine_label_names'``. ``ROOT`` may also be the
``cifar-10-batches-py`` / ``cifar-100-python`` folder itself.

The pickles are read with a restricted unpickler that only accepts the NumPy array
reconstruction and byte-string objects these files contain, so a tampered file cannot run code.

Normalisation constants (per-channel mean and standard deviation of the training images,
pixel values in [0, 1])::

    CIFAR-10   mean (0.4914, 0.4822, 0.4465)   std (0.2470, 0.2435, 0.2616)
    CIFAR-100  mean (0.5071, 0.4865, 0.4409)   std (0.2673, 0.2564, 0.2762)

(Several public training scripts use std (0.2023, 0.1994, 0.2010) for CIFAR-10, which is not the
pixel standard deviation; pass ``mean``/``std`` to :func:`load_cifar` to match such a run.)
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from sfotheory.validation import check_choice, fail

from .images import DatasetNotFoundError, ImageDataset, MalformedDatasetError

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "CIFAR_LAYOUT",
           "load_cifar", "read_cifar_pickle"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

#: name → (folder, training files, test files, meta file, label key, label-names key, classes)
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                "batches.meta", b"labels", b"label_names", 10),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names", 100),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a CIFAR pickle needs."""

    def find_class(self, module, name):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        if target[0] == "numpy._core.multiarray" and not hasattr(np, "_core"):  # NumPy < 2
            target = ("numpy.core.multiarray", target[1])
        return super().find_class(*target)


def _layout_text(name: str, root: Path) -> str:
    folder, train, test, meta, label_key, names_key, _ = CIFAR_LAYOUT[name]
    files = ", ".join(train + test + (meta,))
    return (f"a folder in torchvision's {name.upper().replace('CIFAR', 'CIFAR-')} layout: "
            f"{root / folder}{os.sep} (or ROOT itself) holding {files}; each a pickled dict with "
            f"b'data' (uint8, N×3072) and {label_key!r} (N ints), the meta file with {names_key!r}. "
            "Nothing is downloaded: unpack the archive from https://www.cs.toronto.edu/~kriz/cifar.html there")


def _where(name: str) -> str:
    return f"load_dataset({name!r})"


def read_cifar_pickle(path: str | os.PathLike) -> dict:
    """Load one CIFAR pickle with the restricted unpickler; keys are returned as ``bytes``."""
    with open(path, "rb") as fh:
        obj = _RestrictedUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"expected a dict, found {type(obj).__name__}")
    return {(k.encode() if isinstance(k, str) else k): v for k, v in obj.items()}


def _find_folder(name: str, root: Path) -> tuple[Path, list[str]]:
    folder, train, test, meta, *_ = CIFAR_LAYOUT[name]
    wanted = train + test + (meta,)
    candidates = [root / folder, root]
    best_missing: list[str] | None = None
    for cand in candidates:
        missing = [f for f in wanted if not (cand / f).is_file()]
        if not missing:
            return cand, []
        if best_missing is None or len(missing) < len(best_missing):
            best_missing = missing
    looked = " and ".join(str(c) for c in candidates)
    if not root.is_dir():
        why = f"looked in {looked}; {root} does not exist or is not a folder"
    else:
        why = f"looked in {looked}; missing: {', '.join(best_missing)}"
    fail("root", _where(name), _layout_text(name, root), str(root), reason=why, cls=DatasetNotFoundError)
    raise AssertionError("unreachable")  # pragma: no cover


def _malformed(name: str, root: Path, path: Path, problem: str):
    fail("root", _where(name), _layout_text(name, root), str(root),
         reason=f"file {path} is malformed: {problem}", cls=MalformedDatasetError)


def _read_part(name: str, root: Path, path: Path, label_key: bytes, num_classes: int):
    try:
        d = read_cifar_pickle(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a malformed file
        _malformed(name, root, path, f"not a readable CIFAR pickle ({type(exc).__name__}: {exc})")
    if b"data" not in d or label_key not in d:
        _malformed(name, root, path, f"keys {sorted(d)} lack b'data' or {label_key!r}")
    data = d[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        _malformed(name, root, path, f"b'data' is a {desc}, expected uint8 N×3072")
    try:
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        _malformed(name, root, path, f"{label_key!r} is not a list of ints")
    if labels.shape != (data.shape[0],):
        _malformed(name, root, path, f"{label_key!r} has shape {labels.shape}, expected ({data.shape[0]},)")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        _malformed(name, root, path, f"labels span [{labels.min()}, {labels.max()}], expected [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), labels


def _read_names(name: str, root: Path, path: Path, names_key: bytes, num_classes: int) -> list[str]:
    try:
        meta = read_cifar_pickle(path)
    except Exception as exc:  # noqa: BLE001
        _malformed(name, root, path, f"not a readable CIFAR pickle ({type(exc).__name__}: {exc})")
    names = meta.get(names_key)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        _malformed(name, root, path, f"{names_key!r} is not a list of {num_classes} class names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(name: str, root, train: bool = True, augment: bool = False, padding: int = 4,
               seed: int = 0, mean=None, std=None) -> ImageDataset:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``) from ``root`` as an :class:`ImageDataset`.

    Training split: the five ``data_batch_*`` files in order (CIFAR-10) or ``train`` (CIFAR-100);
    test split: ``test_batch`` / ``test``. CIFAR-100 labels are the 100 fine labels. A missing
    folder or file raises :class:`DatasetNotFoundError`, a malformed one
    :class:`MalformedDatasetError`; either message names the paths looked at and the layout.
    """
    check_choice(name, tuple(CIFAR_LAYOUT), "name", "load_cifar")
    if root is None:
            fail("root", _where(name), _layout_text(name, Path("ROOT")), None,
             reason="CIFAR is never downloaded, so a folder must be given", cls=DatasetNotFoundError)
    root = Path(os.fspath(root)).expanduser()
    _, train_files, test_files, meta_file, label_key, names_key, num_classes = CIFAR_LAYOUT[name]
    folder, _ = _find_folder(name, root)
    classes = _read_names(name, root, folder / meta_file, names_key, num_classes)
    parts = [_read_part(name, root, folder / f, label_key, num_classes)
             for f in (train_files if train else test_files)]
    images = torch.from_numpy(np.ascontiguousarray(np.concatenate([p[0] for p in parts])))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    default_mean, default_std = ((CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10"
                                 else (CIFAR100_MEAN, CIFAR100_STD))
    return ImageDataset(images, labels, num_classes=num_classes,
                        mean=default_mean if mean is None else mean,
                        std=default_std if std is None else std,
                        name=name, train=train, augment=augment, padding=padding, seed=seed,
                        classes=classes, source=str(folder))
