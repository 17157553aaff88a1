r"""CIFAR ResNet-18: the 32×32 variant of He et al. (2016) used by Umeda & Iiduka (2025).

Shape
-----
* Stem: 3×3 convolution, stride 1, ``in_channels`` → 64, BatchNorm, ReLU. No max-pool
  (the ImageNet stem's 7×7/2 convolution and 3×3/2 max-pool would shrink a 32×32 image to 8×8).
* Four stages of two :class:`BasicBlock` each, widths 64, 128, 256, 512, strides 1, 2, 2, 2
  (32×32 → 4×4 feature maps for CIFAR input).
* A block is conv3×3-BN-ReLU-conv3×3-BN plus the shortcut, then ReLU. The shortcut is the
  identity, or a 1×1 convolution with stride and BatchNorm where the shape changes.
* Head: global average pooling (adaptive, so any input size ≥ 8×8 works) and a linear layer.
* Convolutions have no bias (each is followed by BatchNorm). PyTorch's default initialisation.

Parameter count (measured, checked against a closed-form sum in ``tests/torch/test_models.py``):
11 173 962 for 10 classes and 11 220 132 for 100 classes (3 input channels).

Nothing here fixes a dtype or a memory format: the model runs under ``torch.autocast``
(bf16 on GPU or CPU) and with ``channels_last`` tensors unchanged.

>>> import torch
>>> model = resnet18(num_classes=10)
>>> sum(p.numel() for p in model.parameters())
11173962
>>> model(torch.zeros(2, 3, 8, 8)).shape   # any size >= 8×8; CIFAR is 32×32
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from sfotheory.validation import check_integer, fail

__all__ = ["BasicBlock", "ResNet", "resnet18"]


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (He et al. 2016, Fig. 2 left)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet built from :class:`BasicBlock` stages (see the module docstring)."""

    widths = (64, 128, 256, 512)

    def __init__(self, blocks_per_stage=(2, 2, 2, 2), num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        where = "ResNet"
        check_integer(num_classes, "num_classes", where, minimum=1)
        check_integer(in_channels, "in_channels", where, minimum=1)
        blocks_per_stage = tuple(blocks_per_stage)
        if len(blocks_per_stage) != len(self.widths):
            fail("blocks_per_stage", where, "a sequence of 4 block counts (one per width 64, 128, 256, 512)",
                 blocks_per_stage)
        for n in blocks_per_stage:
            check_integer(n, "blocks_per_stage", where, minimum=1)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, self.widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.widths[0])
        in_planes = self.widths[0]
        stages = []
        for i, (n, planes) in enumerate(zip(blocks_per_stage, self.widths)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-18: :class:`BasicBlock` stages [2, 2, 2, 2], widths 64-512, 3×3 stem, no max-pool."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)
