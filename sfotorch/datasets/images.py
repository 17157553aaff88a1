r"""An in-memory image classification data set: uint8 storage, float batches on access.

:class:`ImageDataset` keeps all N images as one uint8 tensor of shape (N, C, H, W) and the labels
as int64 (N,). Indexing converts on the fly:

* ``dataset[i]`` (an int) → ``(image, label)``: float32 (C, H, W) and a Python int;
* ``dataset[idx]`` with a 1-D integer tensor, list, NumPy array or slice → ``(images, labels)``:
  float32 (B, C, H, W) and int64 (B,), built with one gather (and one augmentation call) for
  the whole batch — what a training loop that draws index batches wants;
* ``dataset.__getitems__(list)`` → a list of ``(image, label)`` pairs, computed the same
  vectorised way, so ``torch.utils.data.DataLoader`` (and :class:`sfotorch.sampler.ResizableLoader`)
  with the default collate function fetch a batch in one call.

Conventions
-----------
* **Normalisation.** x = (u / 255 − mean_c) / std_c per channel c, with the per-data-set
  constants of :mod:`sfotorch.datasets` (computed on the training split).
* **Augmentation** (``augment=True`` only, meant for training batches): random crop with zero
  padding (default 4) and horizontal flip, :mod:`sfotorch.datasets.augment`, applied to the
  uint8 batch before normalisation. The crop/flip of sample i is a pure function of
  ``(seed, epoch, i)``: call :meth:`ImageDataset.set_epoch` at the start of each epoch (as with
  ``DistributedSampler``) or every epoch repeats the previous epoch's crops.
* **Un-augmented view.** :meth:`ImageDataset.without_augmentation` returns the same training
  images (shared storage, no copy) with augmentation off: use it for the full-gradient-norm
  measurement and for training-set evaluation, never the augmented view.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch

from sfotheory.validation import ParameterError, ParameterTypeError, check_integer, fail

from .augment import augmentation_params, crop_flip, random_params

__all__ = ["DatasetNotFoundError", "ImageDataset", "MalformedDatasetError"]


class DatasetNotFoundError(ParameterError, FileNotFoundError):
    """A data folder or file is absent (also a ``FileNotFoundError`` and a ``ValueError``)."""


class MalformedDatasetError(ParameterError):
    """A data file exists but does not have the expected format."""


class ImageDataset(torch.utils.data.Dataset):
    """Images (uint8, N×C×H×W) and labels (int64, N) in memory; float32 normalised on access.

    Parameters
    ----------
    images : uint8 tensor (N, C, H, W).
    labels : integer tensor (N,), values in {0, …, num_classes − 1}.
    num_classes : number of classes C.
    mean, std : per-channel normalisation constants (length C or 1).
    name : the data set's name (``"cifar10"``, …), for messages and logs.
    train : whether these are training images.
    augment : random crop (zero padding ``padding``) and horizontal flip on access.
    padding : crop padding in pixels (4 for CIFAR).
    seed : augmentation seed; sample i in epoch e gets the crop/flip of (seed, e, i).
    classes : class names, index = label.
    source : where the data came from (a path), for messages and logs.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                 mean: Sequence[float], std: Sequence[float], name: str = "images", train: bool = True,
                 augment: bool = False, padding: int = 4, seed: int = 0,
                 classes: Sequence[str] | None = None, source: str | None = None):
        where = "ImageDataset"
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            fail("images", where, "a uint8 tensor of shape (N, C, H, W)",
                 tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__)
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
            fail("labels", where, "a 1-D integer tensor", labels)
        if labels.shape[0] != images.shape[0]:
            fail("labels", where, f"of the same length as images ({images.shape[0]})", labels.shape[0])
        self.num_classes = check_integer(num_classes, "num_classes", where, minimum=1)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            fail("labels", where, f"in {{0, ..., {num_classes - 1}}}",
                 (int(labels.min()), int(labels.max())))
        c = images.shape[1]
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        for key, vec in (("mean", mean), ("std", std)):
            if vec.numel() not in (1, c):
                fail(key, where, f"of length 1 or C = {c}", vec.tolist())
        if bool((std <= 0).any()):
            fail("std", where, "> 0 in every channel", std.tolist())
        if not isinstance(augment, bool):
            fail("augment", where, "a bool", augment)
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.mean = mean.expand(c).clone()
        self.std = std.expand(c).clone()
        self.name = name
        self.train = bool(train)
        self.augment = augment
        self.padding = check_integer(padding, "padding", where, minimum=0)
        self.seed = check_integer(seed, "seed", where, minimum=0)
        self.epoch = 0
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.source = source
        # x = u * scale + shift  ==  (u / 255 - mean) / std
        self._scale = (1.0 / (255.0 * self.std)).view(1, c, 1, 1)
        self._shift = (-self.mean / self.std).view(1, c, 1, 1)

    # -- description --------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        """Channels C of one image."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of one image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(s) for s in self.images.shape[1:])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        aug = f", augment=True (padding={self.padding}, seed={self.seed}, epoch={self.epoch})" if self.augment else ""
        return (f"ImageDataset({self.name!r}, {split}, n={len(self)}, shape={self.image_shape}, "
                f"classes={self.num_classes}{aug})")

    # -- views ----------------------------------------------------------------------------------
    def _copy(self, **changes) -> ImageDataset:
        new = ImageDataset.__new__(ImageDataset)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def without_augmentation(self) -> ImageDataset:
        """The same images (shared storage) with augmentation off: for ‖∇f‖ measurement and evaluation."""
        return self._copy(augment=False)

    def with_augmentation(self, seed: int | None = None, padding: int | None = None) -> ImageDataset:
        """The same images (shared storage) with crop/flip augmentation on."""
        where = "ImageDataset.with_augmentation"
        seed = self.seed if seed is None else check_integer(seed, "seed", where, minimum=0)
        padding = self.padding if padding is None else check_integer(padding, "padding", where, minimum=0)
        return self._copy(augment=True, seed=seed, padding=padding)

    def subset(self, indices) -> ImageDataset:
        """A data set of the selected samples (copied, in the given order), same settings."""
        idx = self._as_index(indices, "ImageDataset.subset")
        return self._copy(images=self.images[idx].contiguous(), labels=self.labels[idx].clone())

    def to(self, device) -> ImageDataset:
        """The same data set with its uint8 images and labels on ``device`` (e.g. ``"cuda"``).

        Batches are then gathered, augmented and normalised on that device: 50 000 CIFAR images
        take 150 MB as uint8, so keeping them on the GPU removes the host-to-device copy per batch.
        """
        device = torch.device(device)
        return self._copy(images=self.images.to(device), labels=self.labels.to(device),
                          _scale=self._scale.to(device), _shift=self._shift.to(device))

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of epoch ``epoch`` (crops/flips are a function of (seed, epoch, i))."""
        self.epoch = check_integer(epoch, "epoch", "ImageDataset.set_epoch", minimum=0)

    # -- access ---------------------------------------------------------------------------------
    def _as_index(self, index, where: str) -> torch.Tensor:
        n = len(self)
        if isinstance(index, slice):
            return torch.arange(n)[index]
        if isinstance(index, torch.Tensor):
            idx = index
        elif isinstance(index, np.ndarray) or isinstance(index, (list, tuple, range)):
            idx = torch.as_tensor(np.asarray(index, dtype=np.int64) if len(index) else np.zeros(0, np.int64))
        else:
            fail("index", where, "an int, a slice, or a 1-D sequence/tensor of ints", index,
                 cls=ParameterTypeError)
        if idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
            fail("index", where, "a 1-D integer tensor", f"tensor(dtype={idx.dtype}, shape={tuple(idx.shape)})")
        idx = idx.to(dtype=torch.int64)
        # the range check where the index already is (the host, for the sampler's indices): one
        # min/max reduction (on a GPU, one device→host wait); negative indices wrap only if present
        if idx.numel():
            low, high = torch.aminmax(idx)
            low, high = int(low), int(high)
            if low < -n or high >= n:
                fail("index", where, f"in [-{n}, {n})", (low, high))
            if low < 0:
                idx = torch.where(idx < 0, idx + n, idx)
        # non_blocking only host → GPU (a GPU → host copy could be read before it lands)
        return idx.to(self.images.device, non_blocking=idx.device.type == "cpu")

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise a uint8 batch (B, C, H, W) on its device: (u / 255 − mean) / std, float32."""
        scale = self._scale.to(images.device)
        shift = self._shift.to(images.device)
        # two in-place passes: measured ~20× faster on CPU than a broadcasting addcmul
        return images.to(torch.float32).mul_(scale).add_(shift)

    def get_batch(self, indices, generator: torch.Generator | None = None):
        """``(images, labels)`` for ``indices``: float32 (B, C, H, W) and int64 (B,).

        With augmentation on, the crop/flip of sample i is that of (seed, epoch, i), unless a
        ``generator`` is given, in which case they are drawn from it instead.
        """
        idx = self._as_index(indices, "ImageDataset.get_batch")
        raw = self.images.index_select(0, idx)
        if self.augment:
            if generator is None:
                dy, dx, flip = augmentation_params(self.seed, self.epoch, idx, self.padding)
            else:
                dy, dx, flip = random_params(idx.numel(), self.padding, generator, device=raw.device)
            raw = crop_flip(raw, dy, dx, flip, self.padding)
        return self.to_float(raw), self.labels.index_select(0, idx)

    def __getitem__(self, index):
        if isinstance(index, numbers.Integral) and not isinstance(index, bool):
            images, labels = self.get_batch(torch.tensor([int(index)]))
            return images[0], int(labels[0])
        if isinstance(index, torch.Tensor) and index.dim() == 0:
            return self[int(index)]
        return self.get_batch(index)

    def __getitems__(self, indices) -> list:
        """DataLoader's batched fetch: a list of ``(image, label)`` pairs, computed as one batch."""
        images, labels = self.get_batch(indices)
        return list(zip(images.unbind(0), labels.tolist()))
