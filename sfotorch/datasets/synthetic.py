r"""Write small data sets in the REAL on-disk formats, so tests and demos run the same loaders.

* :func:`write_cifar` writes torchvision's CIFAR-10 layout (``cifar-10-batches-py/`` with
  ``data_batch_1..5``, ``test_batch``, ``batches.meta``) or CIFAR-100 layout
  (``cifar-100-python/`` with ``train``, ``test``, ``meta``): pickled dicts (protocol 2, byte-string
  keys, as the originals) with ``b'data'`` uint8 N×3072 and ``b'labels'`` / ``b'fine_labels'``.
* :func:`write_fashion_mnist` writes the four idx files (magic 2051 / 2049, big-endian sizes),
  gzipped by default as distributed.

Images are learnable rather than pure noise: each class has a random template, and an image is
``0.6 · template + 0.4 · noise`` (uint8), labels are balanced. Everything is a function of ``seed``.

>>> import tempfile
>>> from sfotorch.datasets import load_dataset
>>> with tempfile.TemporaryDirectory() as tmp:
...     written = write_fashion_mnist(tmp, train_size=20, test_size=10, seed=1)
...     data = load_dataset("fashion_mnist", root=tmp)
...     bool((data.images[:, 0].numpy() == written["train_images"]).all()), len(data)
(True, 20)
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

from sfotheory.validation import check_choice, check_integer

from .cifar import CIFAR_LAYOUT
from .fashion_mnist import FASHION_MNIST_FILES

__all__ = ["make_images", "write_cifar", "write_fashion_mnist", "write_idx"]


def make_images(n: int, shape: tuple[int, ...], num_classes: int, seed: int = 0):
    """``(images, labels)``: n uint8 images of ``shape`` with balanced labels, class-template + noise."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(num_classes, *shape)).astype(np.float64)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    noise = rng.integers(0, 256, size=(n, *shape)).astype(np.float64)
    images = np.clip(np.rint(0.6 * templates[labels] + 0.4 * noise), 0, 255).astype(np.uint8)
    return images, labels


def write_cifar(root, name: str = "cifar10", train_size: int = 50, test_size: int = 20, seed: int = 0) -> dict:
    """Write a small CIFAR-10/100 folder under ``root`` in torchvision's layout; return the arrays.

    Returns ``{"folder", "train_images", "train_labels", "test_images", "test_labels", "classes"}``
    with images as uint8 N×3×32×32. CIFAR-10's training images are split over the five batch files
    in order (``np.array_split``), as the originals (10 000 each).
    """
    where = "write_cifar"
    check_choice(name, tuple(CIFAR_LAYOUT), "name", where)
    train_size = check_integer(train_size, "train_size", where, minimum=0)
    test_size = check_integer(test_size, "test_size", where, minimum=0)
    folder_name, train_files, test_files, meta_file, label_key, names_key, num_classes = CIFAR_LAYOUT[name]
    folder = Path(os.fspath(root)) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_images(train_size, (3, 32, 32), num_classes, seed)
    test_x, test_y = make_images(test_size, (3, 32, 32), num_classes, seed + 1)
    classes = [f"class_{i}" for i in range(num_classes)]

    def dump(path: Path, obj: dict):
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)

    def batch(x, y, label):
        d = {b"batch_label": label.encode(), b"data": x.reshape(len(x), 3072),
             label_key: [int(v) for v in y],
             b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(x))]}
        if name == "cifar100":
            d[b"coarse_labels"] = [int(v) // 5 for v in y]
        return d

    for fname, (x, y) in zip(train_files, zip(np.array_split(train_x, len(train_files)),
                                              np.array_split(train_y, len(train_files)))):
        dump(folder / fname, batch(x, y, f"training batch {fname}"))
    dump(folder / test_files[0], batch(test_x, test_y, "testing batch 1 of 1"))
    meta = {names_key: [c.encode() for c in classes]}
    if name == "cifar10":
        meta.update({b"num_cases_per_batch": 10000, b"num_vis": 3072})
    else:
        meta[b"coarse_label_names"] = [f"superclass_{i}".encode() for i in range(20)]
    dump(folder / meta_file, meta)
    return {"folder": folder, "train_images": train_x, "train_labels": train_y,
            "test_images": test_x, "test_labels": test_y, "classes": classes}


def write_idx(path, array: np.ndarray, compress: bool = True) -> Path:
    """Write a uint8 array as an idx file (magic 0x0000 08 ndim, big-endian int32 sizes), optionally gzipped."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload = header + array.tobytes()
    path = Path(os.fspath(path))
    if compress:
        payload = gzip.compress(payload, compresslevel=1, mtime=0)
    path.write_bytes(payload)
    return path


def write_fashion_mnist(root, train_size: int = 60, test_size: int = 20, seed: int = 0, compress: bool = True) -> dict:
    """Write the four Fashion-MNIST idx files (``.gz`` when ``compress``) into ``root``; return the arrays.

    Returns ``{"folder", "train_images", "train_labels", "test_images", "test_labels"}``, images as
    uint8 N×28×28 (the idx layout; the loader adds the channel axis).
    """
    where = "write_fashion_mnist"
    train_size = check_integer(train_size, "train_size", where, minimum=0)
    test_size = check_integer(test_size, "test_size", where, minimum=0)
    folder = Path(os.fspath(root))
    folder.mkdir(parents=True, exist_ok=True)
    out = {"folder": folder}
    suffix = ".gz" if compress else ""
    for train, n, s, key in ((True, train_size, seed, "train"), (False, test_size, seed + 1, "test")):
        x, y = make_images(n, (28, 28), 10, s)
        img_file, lab_file = FASHION_MNIST_FILES[train]
        write_idx(folder / (img_file + suffix), x, compress)
        write_idx(folder / (lab_file + suffix), y.astype(np.uint8), compress)
        out[f"{key}_images"], out[f"{key}_labels"] = x, y
    return out
