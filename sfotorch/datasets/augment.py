r"""Vectorised training augmentation on uint8 image batches: random crop with zero padding, flip.

The standard CIFAR recipe (He et al. 2016): pad each side by p = 4 pixels with zeros, crop a
random H×W window (offsets dy, dx ∈ {0, …, 2p}), and flip horizontally with probability 1/2.
One :func:`crop_flip` call does the crop and the flip for a whole batch with a single gather,
on uint8 tensors, on whatever device the batch lives on.

Where the randomness comes from
-------------------------------
* :func:`augmentation_params` makes (dy, dx, flip) of sample i a pure function of
  ``(seed, epoch, i)`` (a counter-based integer hash), so a sample's augmentation does not depend
  on which batch it lands in, on the batch size, on DataLoader workers or on how many batches
  were fetched before: a resumed run sees the same augmented images. This is what
  :class:`~sfotorch.datasets.images.ImageDataset` uses.
* :func:`random_params` draws the same quantities from an explicit ``torch.Generator``.

>>> import torch
>>> x = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).reshape(2, 1, 3, 3)
>>> p = 1
>>> same = crop_flip(x, torch.tensor([p, p]), torch.tensor([p, p]), torch.tensor([False, False]), p)
>>> bool(torch.equal(same, x))
True
>>> flipped = crop_flip(x, torch.tensor([p, p]), torch.tensor([p, p]), torch.tensor([True, True]), p)
>>> bool(torch.equal(flipped, x.flip(-1)))
True
>>> shifted = crop_flip(x[:1], torch.tensor([0]), torch.tensor([p]), torch.tensor([False]), p)
>>> shifted[0, 0].tolist()   # window moved up by one pixel: a zero row enters at the top
[[0, 0, 0], [0, 1, 2], [3, 4, 5]]
"""

from __future__ import annotations

import torch

from sfotheory.validation import check_integer, fail

__all__ = ["augmentation_params", "crop_flip", "random_params"]

_M32 = 0xFFFFFFFF


def _mix32(x):
    """A 32-bit integer hash with full avalanche (works on Python ints and int64 tensors).

    Every product stays below 2^63 (values < 2^32, multipliers < 2^31), so int64 never overflows.
    """
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x68E31DA5) & _M32
    return x ^ (x >> 16)


def _stream_key(seed: int, epoch: int) -> int:
    """A 32-bit key for (seed, epoch); seeds up to 2^64 are folded in whole."""
    h = _mix32((seed & _M32) ^ _mix32((seed >> 32) ^ 0x9E3779B9))
    return _mix32(h ^ _mix32((epoch & _M32) ^ 0x85EBCA6B))


def augmentation_params(seed: int, epoch: int, indices: torch.Tensor, padding: int):
    """(dy, dx, flip) for samples ``indices`` in epoch ``epoch``: a pure function of (seed, epoch, i).

    dy, dx are int64 in {0, …, 2·padding} (uniform up to a bias < 2^-29), flip is bool with
    probability 1/2. The result has the device of ``indices``.
    """
    where = "augmentation_params"
    seed = check_integer(seed, "seed", where, minimum=0)
    epoch = check_integer(epoch, "epoch", where, minimum=0)
    padding = check_integer(padding, "padding", where, minimum=0)
    if seed >= 2 ** 64:
        fail("seed", where, "< 2**64", seed)
    key = _stream_key(seed, epoch)
    h = _mix32(_mix32(indices.to(torch.int64)) ^ key)
    span = 2 * padding + 1
    dy = _mix32(h ^ 0x2545F491) % span
    dx = _mix32(h ^ 0x1B873593) % span
    flip = (_mix32(h ^ 0x0CC9E2D5) & 1).bool()
    return dy, dx, flip


def random_params(batch_size: int, padding: int, generator: torch.Generator | None = None,
                  device=None):
    """(dy, dx, flip) for ``batch_size`` samples drawn from ``generator`` (uniform offsets, fair flips)."""
    where = "random_params"
    batch_size = check_integer(batch_size, "batch_size", where, minimum=0)
    padding = check_integer(padding, "padding", where, minimum=0)
    gen_device = generator.device if generator is not None else "cpu"
    dy = torch.randint(0, 2 * padding + 1, (batch_size,), generator=generator, device=gen_device)
    dx = torch.randint(0, 2 * padding + 1, (batch_size,), generator=generator, device=gen_device)
    flip = torch.randint(0, 2, (batch_size,), generator=generator, device=gen_device).bool()
    if device is not None:
        dy, dx, flip = dy.to(device), dx.to(device), flip.to(device)
    return dy, dx, flip


def crop_flip(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int) -> torch.Tensor:
    """Crop each image of a (B, C, H, W) batch from its zero-padded copy, flipping where asked.

    Output pixel (r, c) of image b is padded[b, :, dy_b + r, dx_b + c'] with c' = W − 1 − c when
    ``flip[b]`` and c' = c otherwise, where ``padded`` has ``padding`` zero pixels on each side.
    dy = dx = padding with no flip is the identity. Any dtype and device; the result is
    contiguous, of the input's dtype.
    """
    where = "crop_flip"
    if images.dim() != 4:
        fail("images", where, "a (B, C, H, W) tensor", tuple(images.shape))
    padding = check_integer(padding, "padding", where, minimum=0)
    b, c, h, w = images.shape
    if padding == 0:
        return torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images).contiguous()
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = images.new_zeros((b, c, hp, wp))
    padded[:, :, padding:padding + h, padding:padding + w] = images
    device = images.device
    r = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    cols = torch.where(flip.to(device).view(b, 1), (w - 1) - cols, cols)            # (B, W)
    rows = dy.to(device).view(b, 1) + r                                                # (B, H)
    cols = dx.to(device).view(b, 1) + cols                                             # (B, W)
    flat = (rows.unsqueeze(2) * wp + cols.unsqueeze(1)).view(b, 1, h * w)              # (B, 1, H·W)
    out = torch.gather(padded.view(b, c, hp * wp), 2, flat.expand(b, c, h * w))
    return out.view(b, c, h, w)
