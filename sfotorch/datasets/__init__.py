r"""Real image data sets, read from local files (nothing is ever downloaded), as in-memory batches.

=================  =======  ========  =======  ==============================================
name               classes  channels  size     source
=================  =======  ========  =======  ==============================================
``cifar10``        10       3         32×32    ``root`` in torchvision's layout (:mod:`.cifar`)
``cifar100``       100      3         32×32    ``root`` in torchvision's layout (:mod:`.cifar`)
``fashion_mnist``  10       1         28×28    Debian's ``/usr/share/datasets/fashion-mnist`` or
                                               ``root`` (:mod:`.fashion_mnist`)
=================  =======  ========  =======  ==============================================

and one text data set, for a language model (:data:`TEXT_DATASETS`): ``fortunes``, Debian's
``/usr/share/games/fortunes`` or ``root`` (:mod:`.fortunes`), cut into sequences of ``context``
tokens, byte-level (V = 256) or character-level, as a :class:`TextDataset` (:mod:`.text`).

:func:`load_dataset` returns an :class:`ImageDataset`: uint8 storage, float32 normalised images on
access, ``dataset[index_tensor]`` → a whole batch, crop/flip augmentation only when
``augment=True`` (training batches), and :meth:`ImageDataset.without_augmentation` for the
un-augmented view of the same training images (‖∇f‖ measurement, evaluation).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     _ = write_cifar(tmp, "cifar10", train_size=10, test_size=5)
...     train = load_dataset("cifar10", root=tmp, train=True, augment=True, seed=3)
...     x, y = train[torch.tensor([0, 1, 2])]
>>> tuple(x.shape), x.dtype, y.dtype, train.num_classes, train.in_channels, train.image_size
((3, 3, 32, 32), torch.float32, torch.int64, 10, 3, (32, 32))
>>> DATASETS["fashion_mnist"].image_size
(28, 28)
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch

from sfotheory.validation import check_choice, check_integer, fail

from .augment import augmentation_params, crop_flip, random_params
from .cifar import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, CIFAR_LAYOUT, load_cifar,
                    read_cifar_pickle)
from .fashion_mnist import (DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                            load_fashion_mnist, read_idx)
from .fortunes import DEBIAN_FORTUNES, load_fortunes, read_fortunes, split_fortunes
from .images import DatasetNotFoundError, ImageDataset, MalformedDatasetError
from .synthetic import make_images, write_cifar, write_fashion_mnist, write_idx
from .text import TextDataset

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR_LAYOUT",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "DEBIAN_FORTUNES",
    "DatasetInfo",
    "DatasetNotFoundError",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "ImageDataset",
    "MalformedDatasetError",
    "TEXT_DATASETS",
    "TextDataset",
    "augmentation_params",
    "crop_flip",
    "load_cifar",
    "load_dataset",
    "load_fashion_mnist",
    "load_fortunes",
    "make_images",
    "random_params",
    "read_cifar_pickle",
    "read_fortunes",
    "read_idx",
    "select_subset",
    "split_fortunes",
    "write_cifar",
    "write_fashion_mnist",
    "write_idx",
]


class DatasetInfo(NamedTuple):
    """What a model builder needs before any file is read."""

    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS = {
    "cifar10": DatasetInfo(10, 3, (32, 32), CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": DatasetInfo(100, 3, (32, 32), CIFAR100_MEAN, CIFAR100_STD),
    "fashion_mnist": DatasetInfo(10, 1, (28, 28), FASHION_MNIST_MEAN, FASHION_MNIST_STD),
}

#: text data set name → its loader; keyword options (``context``, ``level``, ``val_fraction``) go to it.
TEXT_DATASETS = {"fortunes": load_fortunes}


def select_subset(n: int, subset: int, mode: str = "first", seed: int = 0) -> torch.Tensor:
    """Indices of a subset of size ``subset`` out of n: the first k, or k drawn without replacement.

    ``mode="random"`` draws with ``torch.randperm`` from a generator seeded with ``seed`` and returns
    the chosen indices in increasing order (the data keep their file order).

    >>> select_subset(10, 3).tolist()
    [0, 1, 2]
    >>> a = select_subset(10, 4, "random", seed=5); b = select_subset(10, 4, "random", seed=5)
    >>> bool(torch.equal(a, b)), len(set(a.tolist()))
    (True, 4)
    """
    where = "select_subset"
    n = check_integer(n, "n", where, minimum=0)
    check_choice(mode, ("first", "random"), "subset_mode", where)
    subset = check_integer(subset, "subset", where, minimum=1)
    if subset > n:
        fail("subset", where, f"<= the number of samples ({n})", subset)
    if mode == "first":
        return torch.arange(subset)
    gen = torch.Generator().manual_seed(check_integer(seed, "seed", where, minimum=0))
    return torch.randperm(n, generator=gen)[:subset].sort().values


def load_dataset(name: str, root=None, train: bool = True, augment: bool = False, subset: int | None = None,
                 seed: int = 0, *, subset_mode: str = "first", padding: int = 4,
                 **options) -> ImageDataset | TextDataset:
    """Load data set ``name`` (one of :data:`DATASETS` or :data:`TEXT_DATASETS`) from local files as an
    :class:`ImageDataset` (images) or a :class:`TextDataset` (text).

    Parameters
    ----------
    name : ``"cifar10"``, ``"cifar100"``, ``"fashion_mnist"`` or ``"fortunes"``.
    root : the folder (required for CIFAR; Fashion-MNIST and fortunes default to Debian's locations).
    train : training split (True) or test split (for fortunes: the held-out validation split).
    augment : crop (``padding`` pixels of zeros) + horizontal flip on access; training images only
        (text has no augmentation: False).
    subset : keep only this many samples (e.g. 10 000 Fashion-MNIST images for a CPU run).
    seed : seeds the augmentation stream and, with ``subset_mode="random"``, the subset draw.
    subset_mode : ``"first"`` (the first k in file order) or ``"random"`` (k seeded draws).
    options : keyword options of a text data set's loader (fortunes: ``context``, ``level``,
        ``val_fraction``, see :func:`load_fortunes`); image data sets take none.
    """
    where = "load_dataset"
    check_choice(name, tuple(DATASETS) + tuple(TEXT_DATASETS), "name", where)
    if not isinstance(train, bool):
        fail("train", where, "a bool", train)
    if not isinstance(augment, bool):
        fail("augment", where, "a bool", augment)
    if augment and not train:
        fail("augment", where, "False for the test split (augmentation is for training batches only)", augment)
    seed = check_integer(seed, "seed", where, minimum=0)
    padding = check_integer(padding, "padding", where, minimum=0)
    check_choice(subset_mode, ("first", "random"), "subset_mode", where)
    if subset is not None:
        check_integer(subset, "subset", where, minimum=1)
    if name in TEXT_DATASETS:
        if augment:
            fail("augment", where, f"False for the text data set {name!r} (text has no crop/flip augmentation)",
                 augment)
        loader = TEXT_DATASETS[name]
        accepted = [p for p in inspect.signature(loader).parameters if p not in ("root", "train")]
        for key in options:
            if key not in accepted:
                fail(key, where, f"one of the options data set {name!r} accepts ({', '.join(accepted)})",
                     options[key])
        data = loader(root, train=train, **options)
    elif options:
        key = next(iter(options))
        fail(key, where, f"left out for the image data set {name!r} (it takes no options)", options[key])
    elif name == "fashion_mnist":
        data = load_fashion_mnist(root, train=train, augment=augment, padding=padding, seed=seed)
    else:
        data = load_cifar(name, root, train=train, augment=augment, padding=padding, seed=seed)
    if subset is not None:
        if subset > len(data):
            fail("subset", where, f"<= the number of {'training' if train else 'test'} samples ({len(data)})",
                 subset)
        data = data.subset(select_subset(len(data), subset, subset_mode, seed))
    return data
