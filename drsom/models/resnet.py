"""ResNet-18/34 for 32x32 inputs, the variant of the AdaBelief and DRSOM CIFAR experiments.

Unlike the ImageNet model, the stem is a single 3x3 stride-1 convolution with no max-pool, so the
four stages run at 32, 16, 8 and 4 pixels; a 4x4 average pool then feeds the linear classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # When the block changes resolution or width, the skip path needs a projection so the
        # two branches can be added; otherwise it is the identity and costs nothing.
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(
        self,
        blocks_per_stage: tuple[int, ...],
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages = []
        c_in = width
        for i, n_blocks in enumerate(blocks_per_stage):
            c_out = width * 2**i
            first_stride = 1 if i == 0 else 2
            blocks = [BasicBlock(c_in, c_out, first_stride)]
            blocks += [BasicBlock(c_out, c_out) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> CifarResNet:
    """ResNet-18 for small images; ``width``: channels of the first stage (doubled per stage)."""
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels, width)


def resnet34(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> CifarResNet:
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels, width)
