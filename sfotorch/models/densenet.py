r"""The paper's CIFAR DenseNet: Bottleneck blocks [6, 12, 24, 16], growth rate k = 12, no compression.

Umeda & Iiduka (2025) train a DenseNet (Huang et al. 2017) on CIFAR-100 with

* a stem 3×3 convolution ``in_channels`` → 2k = 24 channels (stride 1, no pooling);
* four dense blocks of 6, 12, 24 and 16 :class:`Bottleneck` layers. A Bottleneck layer with c
  input channels is BN-ReLU-conv1×1 (c → 4k) then BN-ReLU-conv3×3 (4k → k), and its k new
  feature maps are concatenated to its input (c → c + k);
* a :class:`Transition` after each of the first three blocks: BN-ReLU-conv1×1 that KEEPS the
  channel count (reduction θ = 1.0, i.e. no compression), then 2×2 average pooling;
* BN-ReLU, global average pooling and a linear layer.

Channels: 24 → 96 → 240 → 528 → 720 features into the classifier; feature maps 32 → 16 → 8 → 4
for CIFAR input. This is the shape often called ``densenet_cifar`` but with reduction 1.0 instead
of 0.5. Convolutions have no bias; PyTorch's default initialisation.

Parameter count (measured, and derived by a closed-form sum over layers in
``tests/torch/test_models.py``): 1 724 266 for 10 classes and 1 789 156 for 100 classes
(3 input channels).

No dtype or memory format is fixed: ``torch.autocast`` (bf16) and ``channels_last`` work unchanged.

>>> import torch
>>> model = densenet_cifar(num_classes=100)
>>> model.num_features
720
>>> model(torch.zeros(2, 3, 8, 8)).shape   # any size >= 8×8; CIFAR is 32×32
torch.Size([2, 100])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sfotheory.validation import check_in_range, check_integer, fail

__all__ = ["Bottleneck", "DenseNet", "Transition", "densenet_cifar"]


class Bottleneck(nn.Module):
    """BN-ReLU-conv1×1 (c → 4k), BN-ReLU-conv3×3 (4k → k); output is ``cat([x, new], dim=1)``."""

    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1×1 (c → ⌊θc⌋), then 2×2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(torch.relu(self.bn(x))))


class DenseNet(nn.Module):
    """DenseNet with Bottleneck layers for small images (see the module docstring).

    Parameters
    ----------
    blocks : layers per dense block, default the paper's (6, 12, 24, 16).
    growth_rate : k, new feature maps per Bottleneck layer (default 12).
    reduction : θ ∈ (0, 1], transition output channels ⌊θc⌋ (default 1.0: no compression).
    num_classes, in_channels : classifier outputs and image channels.
    """

    def __init__(self, blocks=(6, 12, 24, 16), growth_rate: int = 12, reduction: float = 1.0,
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        where = "DenseNet"
        blocks = tuple(blocks)
        if not blocks:
            fail("blocks", where, "a non-empty sequence of layer counts", blocks)
        for n in blocks:
            check_integer(n, "blocks", where, minimum=1)
        check_integer(growth_rate, "growth_rate", where, minimum=1)
        check_in_range(reduction, 0.0, 1.0, "reduction", where, low_strict=True, high_strict=False)
        check_integer(num_classes, "num_classes", where, minimum=1)
        check_integer(in_channels, "in_channels", where, minimum=1)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.reduction = float(reduction)

        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        features = []
        for i, n in enumerate(blocks):
            layers = []
            for _ in range(n):
                layers.append(Bottleneck(planes, growth_rate))
                planes += growth_rate
            features.append(nn.Sequential(*layers))
            if i < len(blocks) - 1:
                out_planes = int(math.floor(planes * self.reduction))
                if out_planes < 1:
                    fail("reduction", where, f"large enough to keep >= 1 channel after block {i + 1}",
                         reduction)
                features.append(Transition(planes, out_planes))
                planes = out_planes
        self.features = nn.Sequential(*features)
        self.bn = nn.BatchNorm2d(planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = planes
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.conv1(x))
        out = torch.flatten(self.pool(torch.relu(self.bn(out))), 1)
        return self.linear(out)


def densenet_cifar(num_classes: int = 10, in_channels: int = 3) -> DenseNet:
    """The paper's DenseNet: blocks [6, 12, 24, 16], k = 12, reduction 1.0 (no compression)."""
    return DenseNet((6, 12, 24, 16), growth_rate=12, reduction=1.0,
                    num_classes=num_classes, in_channels=in_channels)
