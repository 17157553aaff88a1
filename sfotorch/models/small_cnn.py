r"""A small CNN (about 94 k parameters) for CPU runs on Fashion-MNIST (1×28×28) or CIFAR (3×32×32).

Shape, for c input channels and C classes::

    conv3×3(c → 32) [BN] ReLU  max-pool 2×2
    conv3×3(32 → 64) [BN] ReLU  max-pool 2×2
    conv3×3(64 → 128) [BN] ReLU
    global average pool  →  linear(128 → C)

Padding 1 keeps the spatial size inside each convolution; global average pooling
(``AdaptiveAvgPool2d(1)``) makes the head independent of the input size, so the same model
takes 28×28 and 32×32 images (any size ≥ 4×4). With ``batch_norm=True`` every convolution is
followed by BatchNorm and has no bias (the BN shift replaces it); without it the convolutions
have biases.

Parameter counts (measured, and derived by formula in ``tests/torch/test_models.py``), 10 classes:

=========================  ===========  ============
input                      no BN        with BN
=========================  ===========  ============
1×28×28 (Fashion-MNIST)    93 962       94 186
3×32×32 (CIFAR)            94 538       94 762
=========================  ===========  ============

No dtype or memory format is fixed: ``torch.autocast`` and ``channels_last`` work unchanged.

>>> import torch
>>> model = SmallCNN(num_classes=10, in_channels=1)
>>> sum(p.numel() for p in model.parameters())
93962
>>> model(torch.zeros(4, 1, 28, 28)).shape
torch.Size([4, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from sfotheory.validation import check_integer, fail

__all__ = ["SmallCNN", "small_cnn"]


class SmallCNN(nn.Module):
    """Three 3×3 convolution layers (32, 64, 128 channels), global average pool, linear head.

    Parameters
    ----------
    num_classes : C, outputs of the linear head.
    in_channels : c, 1 for Fashion-MNIST, 3 for CIFAR.
    batch_norm : BatchNorm after each convolution (convolutions then have no bias).
    widths : channels of the three convolutions, default (32, 64, 128).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, batch_norm: bool = False,
                 widths=(32, 64, 128)):
        super().__init__()
        where = "SmallCNN"
        check_integer(num_classes, "num_classes", where, minimum=1)
        check_integer(in_channels, "in_channels", where, minimum=1)
        if not isinstance(batch_norm, bool):
            fail("batch_norm", where, "a bool", batch_norm)
        widths = tuple(widths)
        if len(widths) != 3:
            fail("widths", where, "a sequence of 3 channel counts", widths)
        for w in widths:
            check_integer(w, "widths", where, minimum=1)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.batch_norm = batch_norm
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(c, w, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU(inplace=True))
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.flatten(self.pool(self.features(x)), 1)
        return self.linear(out)


def small_cnn(num_classes: int = 10, in_channels: int = 3, batch_norm: bool = False,
              widths=(32, 64, 128)) -> SmallCNN:
    """The :class:`SmallCNN`: ~94 k parameters with its default widths (32, 64, 128)."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, batch_norm=batch_norm, widths=widths)
