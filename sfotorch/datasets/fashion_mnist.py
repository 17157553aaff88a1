r"""Fashion-MNIST (Xiao et al. 2017) from its original idx files, read with NumPy (nothing downloaded).

Where it looks: ``root`` (default :data:`DEBIAN_FASHION_MNIST`, where Debian's package
``dataset-fashion-mnist`` installs the files), then ``root/FashionMNIST/raw`` (torchvision's
layout). Files, each gzipped (``.gz``) or not::

    train-images-idx3-ubyte   train-labels-idx1-ubyte   (60 000 images)
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte    (10 000 images)

idx format (big-endian): a 4-byte magic number — 2051 (0x00000803: unsigned bytes, 3 dimensions)
for images, 2049 (0x00000801: unsigned bytes, 1 dimension) for labels — then one 4-byte size per
dimension (N, 28, 28 or N), then exactly ∏ sizes bytes of data. Anything else (wrong magic,
truncated or over-long data, a broken gzip stream) raises :class:`MalformedDatasetError` naming
the file.

Normalisation: mean 0.2860, std 0.3530 (pixel values in [0, 1], training images; checked against
the real files in ``tests/torch/test_datasets.py``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from sfotheory.validation import fail

from .images import DatasetNotFoundError, ImageDataset, MalformedDatasetError

__all__ = ["DEBIAN_FASHION_MNIST", "FASHION_MNIST_CLASSES", "FASHION_MNIST_FILES", "FASHION_MNIST_MEAN",
           "FASHION_MNIST_STD", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "load_fashion_mnist", "read_idx"]

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: split → (images file, labels file), without the optional ``.gz``
FASHION_MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_WHERE = "load_dataset('fashion_mnist')"


def _layout_text(root: Path) -> str:
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    return (f"a folder holding Fashion-MNIST's idx files {', '.join(names)} (each optionally .gz), "
            f"directly or in FashionMNIST/raw/ (Debian's package dataset-fashion-mnist installs them in "
            f"{DEBIAN_FASHION_MNIST}; nothing is downloaded)")


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read one idx file (gzipped or not: detected from its first bytes) as a uint8 array.

    Raises ``ValueError`` with the problem (bad magic, truncated, trailing bytes, broken gzip);
    :func:`load_fashion_mnist` turns it into a :class:`MalformedDatasetError` naming the file.
    """
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        raw = fh.read()
    if head == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"broken gzip stream ({type(exc).__name__}: {exc})") from None
    if len(raw) < 4:
        raise ValueError(f"only {len(raw)} bytes, too short for an idx header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"truncated header ({len(raw)} bytes, expected {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != size:
        what = "truncated" if len(raw) - header < size else "has trailing bytes"
        raise ValueError(f"{what}: header says shape {shape} = {size} bytes of data, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_file(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def _missing(root: Path, files: list[str]):
    looked = f"{root} and {root / 'FashionMNIST' / 'raw'}"
    if not root.is_dir():
        why = f"looked in {looked}; {root} does not exist or is not a folder"
    else:
        why = f"looked in {looked}; missing: {', '.join(files)} (nor .gz)"
    fail("root", _WHERE, _layout_text(root), str(root), reason=why, cls=DatasetNotFoundError)


def load_fashion_mnist(root=None, train: bool = True, augment: bool = False, padding: int = 4,
                       seed: int = 0, mean=None, std=None) -> ImageDataset:
    """Fashion-MNIST's training (60 000) or test (10 000) split as an :class:`ImageDataset` of 1×28×28 images.

    ``root`` defaults to :data:`DEBIAN_FASHION_MNIST`. Both files of the split (images and labels)
    must be present; the image and label counts must agree and labels lie in 0…9.
    """
    root = Path(os.fspath(DEBIAN_FASHION_MNIST if root is None else root)).expanduser()
    stems = FASHION_MNIST_FILES[bool(train)]
    paths = [_find_file(root, s) for s in stems]
    missing = [s for s, p in zip(stems, paths) if p is None]
    if missing:
        _missing(root, missing)
    arrays = []
    for path, magic in zip(paths, (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC)):
        try:
            arrays.append(read_idx(path, magic))
        except ValueError as exc:
            fail("root", _WHERE, _layout_text(root), str(root), reason=f"file {path} is malformed: {exc}",
                 cls=MalformedDatasetError)
    images, labels = arrays
    if images.shape[0] != labels.shape[0]:
        fail("root", _WHERE, _layout_text(root), str(root),
             reason=f"{paths[0]} holds {images.shape[0]} images but {paths[1]} holds {labels.shape[0]} labels",
             cls=MalformedDatasetError)
    if labels.size and labels.max() >= 10:
        fail("root", _WHERE, _layout_text(root), str(root),
             reason=f"file {paths[1]} is malformed: labels span [{labels.min()}, {labels.max()}], expected [0, 10)",
             cls=MalformedDatasetError)
    return ImageDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                        num_classes=10,
                        mean=FASHION_MNIST_MEAN if mean is None else mean,
                        std=FASHION_MNIST_STD if std is None else std,
                        name="fashion_mnist", train=train, augment=augment, padding=padding, seed=seed,
                        classes=FASHION_MNIST_CLASSES, source=str(paths[0].parent))
